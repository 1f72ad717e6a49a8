//! SQLite implementation of the admin part of the store: device search with keyset pagination,
//! named API tokens, and the hash-chained audit log.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use steward_core::*;
use time::OffsetDateTime;

use crate::{SqliteStore, backend, enrollment_from_row, from_micros, micros, opt_micros, parse_id};

fn api_token_from_row(r: &SqliteRow) -> StoreResult<ApiToken> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in api_tokens"));
    Ok(ApiToken {
        id: parse_id(&r.get::<String, _>("id"))?,
        name: r.get("name"),
        token_hash: TokenHash::from_hex(&r.get::<String, _>("token_hash")).ok_or_else(|| bad("token_hash"))?,
        role: Role::parse(&r.get::<String, _>("role")).ok_or_else(|| bad("role"))?,
        group_id: r
            .get::<Option<String>, _>("group_id")
            .map(|s| parse_id(&s))
            .transpose()?,
        created_at: from_micros(r.get("created_at"))?,
        expires_at: opt_micros(r.get("expires_at"))?,
        last_used_at: opt_micros(r.get("last_used_at"))?,
        revoked_at: opt_micros(r.get("revoked_at"))?,
        created_by: r.get("created_by"),
    })
}

fn audit_from_row(r: &SqliteRow) -> StoreResult<AuditEvent> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in audit_events"));
    Ok(AuditEvent {
        seq: r.get("seq"),
        at: from_micros(r.get("at"))?,
        actor: r.get("actor"),
        actor_id: r.get("actor_id"),
        actor_role: r
            .get::<Option<String>, _>("actor_role")
            .map(|s| Role::parse(&s).ok_or_else(|| bad("actor_role")))
            .transpose()?,
        action: r.get("action"),
        target: r.get("target"),
        source_ip: r.get("source_ip"),
        outcome: AuditOutcome::parse(&r.get::<String, _>("outcome")).ok_or_else(|| bad("outcome"))?,
        status: r.get::<Option<i64>, _>("status").map(|s| s as u16),
        details: r.get("details"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
}

fn group_from_row(r: &SqliteRow) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(&r.get::<String, _>("id"))?,
        name: r.get("name"),
        created_at: from_micros(r.get("created_at"))?,
    })
}

/// The SQL expression a [`DeviceSort`] orders by; must agree with [`DeviceSort::key_of`].
fn sort_expr(sort: DeviceSort) -> &'static str {
    match sort {
        DeviceSort::Name => "COALESCE(device_name, '')",
        DeviceSort::LastSeen => "COALESCE(last_seen_at, -1)",
        DeviceSort::EnrolledAt => "enrolled_at",
    }
}

fn push_key(b: &mut QueryBuilder<Sqlite>, key: &SortKey) {
    match key {
        SortKey::Text(s) => b.push_bind(s.clone()),
        SortKey::Micros(v) => b.push_bind(*v),
    };
}

impl SqliteStore {
    pub(crate) async fn list_devices_impl(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT * FROM enrollments WHERE 1 = 1");
        if let Some(n) = &q.name_contains {
            // instr() rather than LIKE: no wildcard escaping to get wrong.
            b.push(" AND instr(lower(COALESCE(device_name, '')), lower(")
                .push_bind(n.clone())
                .push(")) > 0");
        }
        if let Some(u) = &q.user {
            b.push(" AND lower(user_email) = lower(").push_bind(u.clone()).push(")");
        }
        if let Some(v) = &q.os_version {
            b.push(" AND substr(COALESCE(os_version, ''), 1, length(")
                .push_bind(v.clone())
                .push(")) = ")
                .push_bind(v.clone());
        }
        if let Some(s) = q.state {
            b.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(g) = q.group_id {
            b.push(" AND group_id = ").push_bind(g.to_string());
        }
        if let Some(t) = q.last_seen_before {
            b.push(" AND last_seen_at < ").push_bind(micros(t));
        }
        if let Some(t) = q.last_seen_after {
            b.push(" AND last_seen_at > ").push_bind(micros(t));
        }
        let key = sort_expr(q.sort);
        let (cmp, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            b.push(format!(" AND ({key} {cmp} "));
            push_key(&mut b, &c.key);
            b.push(format!(" OR ({key} = "));
            push_key(&mut b, &c.key);
            b.push(format!(" AND id {cmp} ")).push_bind(c.id.to_string()).push("))");
        }
        b.push(format!(" ORDER BY {key} {dir}, id {dir} LIMIT "))
            .push_bind(i64::from(q.limit));
        b.build()
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(enrollment_from_row)
            .collect()
    }

    pub(crate) async fn latest_enrollment_by_device_id_impl(&self, d: &DeviceId) -> StoreResult<Option<Enrollment>> {
        sqlx::query(
            "SELECT * FROM enrollments WHERE device_id = ? ORDER BY state = 'active' DESC, enrolled_at DESC LIMIT 1",
        )
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?
        .as_ref()
        .map(enrollment_from_row)
        .transpose()
    }

    pub(crate) async fn revoke_enrollment_token_impl(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE enrollment_tokens SET revoked = 1 WHERE id = ? AND revoked = 0",
                |q| q.bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn list_users_impl(&self) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(crate::user_from_row)
            .collect()
    }

    pub(crate) async fn list_groups_impl(&self) -> StoreResult<Vec<Group>> {
        sqlx::query("SELECT id, name, created_at FROM groups ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(group_from_row)
            .collect()
    }

    pub(crate) async fn create_group_impl(&self, g: &Group) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query("INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)")
            .bind(g.id.to_string())
            .bind(&g.name)
            .bind(micros(g.created_at))
            .execute(&mut *tx)
            .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("group {}", g.name)));
            }
            other => {
                other.map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)
    }

    pub(crate) async fn delete_group_impl(&self, id: GroupId) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let in_use: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM enrollments WHERE group_id = ?1 AND state = 'active') \
             + (SELECT COUNT(*) FROM enrollment_tokens WHERE group_id = ?1 AND revoked = 0) \
             + (SELECT COUNT(*) FROM api_tokens WHERE group_id = ?1 AND revoked_at IS NULL) \
             + (SELECT COUNT(*) FROM users WHERE console_group_id = ?1)",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if in_use > 0 {
            return Err(StoreError::Conflict(format!(
                "group {id} still has active devices, enrollment tokens, API tokens or console users"
            )));
        }
        // History rows (ended enrollments, revoked tokens) keep pointing at nothing rather than
        // blocking the delete: the group name is gone, the records stay.
        let n = Self::each_for_id(
            &mut tx,
            &[
                "UPDATE enrollments SET group_id = NULL WHERE group_id = ?",
                "UPDATE enrollment_tokens SET group_id = NULL WHERE group_id = ?",
                "UPDATE api_tokens SET group_id = NULL WHERE group_id = ?",
                "DELETE FROM groups WHERE id = ?",
            ],
            &id.to_string(),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(n > 0)
    }

    pub(crate) async fn set_enrollment_group_impl(
        &self,
        id: EnrollmentId,
        group: Option<GroupId>,
    ) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE enrollments SET group_id = ? WHERE id = ?", |q| {
                q.bind(group.map(|g| g.to_string())).bind(id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn group_device_counts_impl(&self) -> StoreResult<Vec<(GroupId, u64)>> {
        sqlx::query(
            // `+state`: keeps the planner on (group_id, state) — a covering range over the grouped
            // devices only — instead of the state index, which would read every active enrollment.
            "SELECT group_id, COUNT(*) AS n FROM enrollments \
             WHERE group_id IS NOT NULL AND +state = 'active' GROUP BY group_id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| Ok((parse_id(&r.get::<String, _>("group_id"))?, r.get::<i64, _>("n") as u64)))
        .collect()
    }

    pub(crate) async fn create_api_token_impl(&self, t: &NewApiToken) -> StoreResult<ApiToken> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, role, group_id, created_at, expires_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(t.token_hash.to_hex())
        .bind(t.role.as_str())
        .bind(t.group_id.map(|g| g.to_string()))
        .bind(micros(t.created_at))
        .bind(t.expires_at.map(micros))
        .bind(&t.created_by)
        .execute(&mut *tx)
        .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict("api token".into()));
            }
            other => {
                other.map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(ApiToken {
            id: t.id,
            name: t.name.clone(),
            token_hash: t.token_hash,
            role: t.role,
            group_id: t.group_id,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: None,
            revoked_at: None,
            created_by: t.created_by.clone(),
        })
    }

    pub(crate) async fn api_token_by_hash_impl(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = ?")
            .bind(hash.to_hex())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(api_token_from_row)
            .transpose()
    }

    pub(crate) async fn list_api_tokens_impl(&self) -> StoreResult<Vec<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(api_token_from_row)
            .collect()
    }

    pub(crate) async fn revoke_api_token_impl(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                |q| q.bind(micros(now)).bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn touch_api_token_impl(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", |q| {
            q.bind(micros(now)).bind(id.to_string())
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn admin_counts_impl(&self) -> StoreResult<AdminCounts> {
        let r = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM enrollments WHERE state = 'active') AS active_devices, \
             (SELECT COUNT(*) FROM enrollments) AS enrollments, \
             (SELECT COUNT(*) FROM commands WHERE state IN ('pending', 'sent')) AS open_commands, \
             (SELECT COUNT(*) FROM enrollment_tokens) AS enrollment_tokens, \
             (SELECT COUNT(*) FROM users) AS users, \
             (SELECT COUNT(*) FROM groups) AS groups_, \
             (SELECT COUNT(*) FROM api_tokens) AS api_tokens, \
             (SELECT COUNT(*) FROM audit_events) AS audit_events",
        )
        .fetch_one(&self.read)
        .await
        .map_err(backend)?;
        let n = |c: &str| r.get::<i64, _>(c) as u64;
        Ok(AdminCounts {
            active_devices: n("active_devices"),
            enrollments: n("enrollments"),
            open_commands: n("open_commands"),
            enrollment_tokens: n("enrollment_tokens"),
            users: n("users"),
            groups: n("groups_"),
            api_tokens: n("api_tokens"),
            audit_events: n("audit_events"),
        })
    }

    pub(crate) async fn append_audit_event_impl(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        // The write lock (BEGIN IMMEDIATE) serialises appenders, so reading the head and inserting
        // after it cannot race with another process (the CLI) appending at the same time.
        let mut tx = self.begin_write().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let (seq, prev) = match head {
            Some(r) => (r.get::<i64, _>("seq") + 1, r.get::<String, _>("hash")),
            None => (1, AUDIT_GENESIS_HASH.to_owned()),
        };
        let ev = e.chained(seq, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
             status, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(ev.seq)
        .bind(micros(ev.at))
        .bind(&ev.actor)
        .bind(&ev.actor_id)
        .bind(ev.actor_role.map(Role::as_str))
        .bind(&ev.action)
        .bind(&ev.target)
        .bind(&ev.source_ip)
        .bind(ev.outcome.as_str())
        .bind(ev.status.map(i64::from))
        .bind(&ev.details)
        .bind(&ev.prev_hash)
        .bind(&ev.hash)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(ev)
    }

    pub(crate) async fn audit_events_impl(
        &self,
        f: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(a) = &f.actor {
            b.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(a) = &f.action {
            b.push(" AND action = ").push_bind(a.clone());
        }
        if let Some(t) = &f.target {
            b.push(" AND target = ").push_bind(t.clone());
        }
        let (cmp, dir) = if f.newest_first { ("<", "DESC") } else { (">", "ASC") };
        if let Some(s) = after_seq {
            b.push(format!(" AND seq {cmp} ")).push_bind(s);
        }
        b.push(format!(" ORDER BY seq {dir} LIMIT "))
            .push_bind(i64::from(limit));
        b.build()
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(audit_from_row)
            .collect()
    }
}
