//! [`ReportStore`]: device lists with keyset pagination and the aggregates of the admin surfaces,
//! computed in the database.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::rows::{Sql, all, enrollment_from_row, one};
use crate::{SqliteStore, from_micros, micros, parse_id};

/// The SQL expression a [`DeviceSort`] orders by; must agree with [`DeviceSort::key_of`].
fn sort_expr(sort: DeviceSort) -> &'static str {
    match sort {
        DeviceSort::Name => "COALESCE(device_name, '')",
        DeviceSort::LastSeen => "COALESCE(last_seen_at, -1)",
        DeviceSort::EnrolledAt => "enrolled_at",
    }
}

fn push_key(b: &mut Sql, key: &SortKey) {
    match key {
        SortKey::Text(s) => b.bind(s.clone()),
        SortKey::Micros(v) => b.bind(*v),
    };
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>> {
        let mut b = Sql::new("SELECT * FROM enrollments WHERE 1 = 1");
        if let Some(n) = &q.name_contains {
            // instr() rather than LIKE: no wildcard escaping to get wrong.
            b.push(" AND instr(lower(COALESCE(device_name, '')), lower(")
                .bind(n.clone())
                .push(")) > 0");
        }
        if let Some(u) = &q.user {
            b.push(" AND lower(user_email) = lower(").bind(u.clone()).push(")");
        }
        if let Some(v) = &q.os_version {
            b.push(" AND substr(COALESCE(os_version, ''), 1, length(")
                .bind(v.clone())
                .push(")) = ")
                .bind(v.clone());
        }
        if let Some(s) = q.state {
            b.push(" AND state = ").bind(s.as_str().to_owned());
        }
        if let Some(g) = q.group_id {
            b.push(" AND group_id = ").bind(g.to_string());
        }
        if let Some(t) = q.last_seen_before {
            b.push(" AND last_seen_at < ").bind(micros(t));
        }
        if let Some(t) = q.last_seen_after {
            b.push(" AND last_seen_at > ").bind(micros(t));
        }
        let key = sort_expr(q.sort);
        let (cmp, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            b.push(&format!(" AND ({key} {cmp} "));
            push_key(&mut b, &c.key);
            b.push(&format!(" OR ({key} = "));
            push_key(&mut b, &c.key);
            b.push(&format!(" AND id {cmp} ")).bind(c.id.to_string()).push("))");
        }
        b.push(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT "))
            .bind(i64::from(q.limit));
        self.read(move |conn| b.all(conn, enrollment_from_row)).await
    }

    async fn group_device_counts(&self) -> StoreResult<Vec<(GroupId, u64)>> {
        self.read_all(
            // `+state`: keeps the planner on (group_id, state) — a covering range over the grouped
            // devices only — instead of the state index, which would read every active enrollment.
            "SELECT group_id, COUNT(*) AS n FROM enrollments \
             WHERE group_id IS NOT NULL AND +state = 'active' GROUP BY group_id",
            (),
            |r| Ok((parse_id(&r.text("group_id")?)?, r.int("n")? as u64)),
        )
        .await
    }

    async fn admin_counts(&self) -> StoreResult<AdminCounts> {
        self.read_all(
            "SELECT \
             (SELECT COUNT(*) FROM enrollments WHERE state = 'active') AS active_devices, \
             (SELECT COUNT(*) FROM enrollments) AS enrollments, \
             (SELECT COUNT(*) FROM commands WHERE state IN ('pending', 'sent')) AS open_commands, \
             (SELECT COUNT(*) FROM enrollment_tokens) AS enrollment_tokens, \
             (SELECT COUNT(*) FROM users) AS users, \
             (SELECT COUNT(*) FROM groups) AS groups_, \
             (SELECT COUNT(*) FROM api_tokens) AS api_tokens, \
             (SELECT COUNT(*) FROM audit_events) AS audit_events",
            (),
            |r| {
                let n = |c: &str| r.int(c).map(|v| v as u64);
                Ok(AdminCounts {
                    active_devices: n("active_devices")?,
                    enrollments: n("enrollments")?,
                    open_commands: n("open_commands")?,
                    enrollment_tokens: n("enrollment_tokens")?,
                    users: n("users")?,
                    groups: n("groups_")?,
                    api_tokens: n("api_tokens")?,
                    audit_events: n("audit_events")?,
                })
            },
        )
        .await?
        .pop()
        .ok_or_else(|| StoreError::Backend("no row from the admin counts".into()))
    }

    async fn device_stats(&self, now: OffsetDateTime) -> StoreResult<DeviceStats> {
        let hour = micros(now - time::Duration::hours(1));
        let day = micros(now - time::Duration::days(1));
        // One read connection, so the three statements see one snapshot.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(crate::error::from_rusqlite)?;
            let by_state = all(
                &tx,
                "SELECT state, COUNT(*) AS n FROM enrollments GROUP BY state ORDER BY state",
                (),
                |r| Ok((r.text("state")?, r.int("n")? as u64)),
            )?;
            let stats = one(
                &tx,
                "SELECT \
                 COALESCE(SUM(last_seen_at >= ?1), 0) AS h, \
                 COALESCE(SUM(last_seen_at < ?1 AND last_seen_at >= ?2), 0) AS d, \
                 COALESCE(SUM(last_seen_at < ?2), 0) AS o, \
                 COALESCE(SUM(last_seen_at IS NULL), 0) AS never, \
                 (SELECT COUNT(*) FROM commands WHERE state IN ('pending', 'sent')) AS open_commands \
                 FROM enrollments WHERE state = 'active'",
                (hour, day),
                |f| {
                    let n = |c: &str| f.int(c).map(|v| v as u64);
                    Ok(DeviceStats {
                        by_state,
                        seen_last_hour: n("h")?,
                        seen_last_day: n("d")?,
                        seen_older: n("o")?,
                        never_seen: n("never")?,
                        os_versions: Vec::new(),
                        open_commands: n("open_commands")?,
                    })
                },
            )?;
            let os_versions = all(
                &tx,
                "SELECT COALESCE(os_version, 'unknown') AS v, COUNT(*) AS n FROM enrollments \
                 WHERE state = 'active' GROUP BY v ORDER BY n DESC, v LIMIT 20",
                (),
                |r| Ok((r.text("v")?, r.int("n")? as u64)),
            )?;
            Ok(DeviceStats { os_versions, ..stats })
        })
        .await
    }

    async fn daily_activity(
        &self,
        since: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<DailyActivity>> {
        const DAY_MICROS: i64 = 86_400_000_000;
        let since = micros(utc_midnight(since));
        let until = until.map_or(i64::MAX, |u| micros(utc_midnight(u)));
        // Integer division of microseconds since the epoch gives the UTC day (no time zones in SQL).
        let rows = self
            .read_all(
                "SELECT at / ?1 AS day, kind, COUNT(*) AS n, \
             COALESCE(SUM(kind = 'enrolled' AND json_extract(data, '$.replaced') = 1), 0) AS replaced \
             FROM device_events WHERE at >= ?2 AND at < ?3 \
             AND kind IN ('enrolled', 'unenrolled', 'wiped', 'command_acknowledged', 'command_failed') \
             GROUP BY day, kind ORDER BY day",
                (DAY_MICROS, since, until),
                |r| {
                    Ok((
                        r.int("day")?,
                        r.text("kind")?,
                        r.int("n")? as u64,
                        r.int("replaced")? as u64,
                    ))
                },
            )
            .await?;
        let mut out: Vec<DailyActivity> = Vec::new();
        for (day, kind, n, replaced) in rows {
            let day = from_micros(day * DAY_MICROS)?;
            if out.last().is_none_or(|d| d.day != day) {
                out.push(DailyActivity {
                    day,
                    ..Default::default()
                });
            }
            let Some(d) = out.last_mut() else { continue };
            match kind.as_str() {
                "enrolled" => {
                    d.reenrolled += replaced;
                    d.enrolled += n - replaced.min(n);
                }
                "unenrolled" | "wiped" => d.removed += n,
                "command_acknowledged" => d.commands_acknowledged += n,
                "command_failed" => d.commands_failed += n,
                _ => {}
            }
        }
        Ok(out)
    }
}
