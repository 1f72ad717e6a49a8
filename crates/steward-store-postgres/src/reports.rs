//! [`ReportStore`]: device lists with keyset pagination and the aggregates of the admin surfaces,
//! computed in the database. Text compares in byte order (the schema's `COLLATE "C"`), as in SQLite
//! and in steward-core's sort keys.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::rows::{Col, enrollment_from_row};
use crate::{PgStore, from_micros, micros, parse_id};

/// The SQL expression a [`DeviceSort`] orders by; must agree with [`DeviceSort::key_of`].
fn sort_expr(sort: DeviceSort) -> &'static str {
    match sort {
        DeviceSort::Name => "COALESCE(device_name, '')",
        DeviceSort::LastSeen => "COALESCE(last_seen_at, -1)",
        DeviceSort::EnrolledAt => "enrolled_at",
    }
}

fn push_key(b: &mut QueryBuilder<Postgres>, key: &SortKey) {
    match key {
        SortKey::Text(s) => b.push_bind(s.clone()),
        SortKey::Micros(v) => b.push_bind(*v),
    };
}

/// A count column as u64.
fn count(r: &sqlx::postgres::PgRow, name: &str) -> StoreResult<u64> {
    Ok(r.col::<i64>(name)?.max(0) as u64)
}

#[async_trait]
impl ReportStore for PgStore {
    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>> {
        let mut b = QueryBuilder::<Postgres>::new("SELECT * FROM enrollments WHERE TRUE");
        if let Some(n) = &q.name_contains {
            // strpos() rather than LIKE: no wildcard escaping to get wrong. lower() under "C" folds
            // ASCII only, as SQLite's does.
            b.push(" AND strpos(lower(COALESCE(device_name, '')), lower(")
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
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(enrollment_from_row)
            .collect()
    }

    async fn group_device_counts(&self) -> StoreResult<Vec<(GroupId, u64)>> {
        sqlx::query(
            "SELECT group_id, COUNT(*) AS n FROM enrollments \
             WHERE group_id IS NOT NULL AND state = 'active' GROUP BY group_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| Ok((parse_id(r.col("group_id")?)?, count(r, "n")?)))
        .collect()
    }

    async fn admin_counts(&self) -> StoreResult<AdminCounts> {
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
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(AdminCounts {
            active_devices: count(&r, "active_devices")?,
            enrollments: count(&r, "enrollments")?,
            open_commands: count(&r, "open_commands")?,
            enrollment_tokens: count(&r, "enrollment_tokens")?,
            users: count(&r, "users")?,
            groups: count(&r, "groups_")?,
            api_tokens: count(&r, "api_tokens")?,
            audit_events: count(&r, "audit_events")?,
        })
    }

    async fn device_stats(&self, now: OffsetDateTime) -> StoreResult<DeviceStats> {
        let by_state = sqlx::query("SELECT state, COUNT(*) AS n FROM enrollments GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| Ok((r.col::<String>("state")?, count(r, "n")?)))
            .collect::<StoreResult<_>>()?;
        let hour = micros(now - time::Duration::hours(1));
        let day = micros(now - time::Duration::days(1));
        let f = sqlx::query(
            "SELECT \
             COUNT(*) FILTER (WHERE last_seen_at >= $1) AS h, \
             COUNT(*) FILTER (WHERE last_seen_at < $1 AND last_seen_at >= $2) AS d, \
             COUNT(*) FILTER (WHERE last_seen_at < $2) AS o, \
             COUNT(*) FILTER (WHERE last_seen_at IS NULL) AS never, \
             (SELECT COUNT(*) FROM commands WHERE state IN ('pending', 'sent')) AS open_commands \
             FROM enrollments WHERE state = 'active'",
        )
        .bind(hour)
        .bind(day)
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let os_versions = sqlx::query(
            "SELECT COALESCE(os_version, 'unknown') AS v, COUNT(*) AS n FROM enrollments \
             WHERE state = 'active' GROUP BY 1 ORDER BY n DESC, v LIMIT 20",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| Ok((r.col::<String>("v")?, count(r, "n")?)))
        .collect::<StoreResult<_>>()?;
        Ok(DeviceStats {
            by_state,
            seen_last_hour: count(&f, "h")?,
            seen_last_day: count(&f, "d")?,
            seen_older: count(&f, "o")?,
            never_seen: count(&f, "never")?,
            os_versions,
            open_commands: count(&f, "open_commands")?,
        })
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
        let rows = sqlx::query(
            "SELECT at / $1 AS day, kind, COUNT(*) AS n, \
             COUNT(*) FILTER (WHERE kind = 'enrolled' AND (data::jsonb -> 'replaced') IN ('true'::jsonb, '1'::jsonb)) \
             AS replaced \
             FROM device_events WHERE at >= $2 AND at < $3 \
             AND kind IN ('enrolled', 'unenrolled', 'wiped', 'command_acknowledged', 'command_failed') \
             GROUP BY 1, 2 ORDER BY 1",
        )
        .bind(DAY_MICROS)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let mut out: Vec<DailyActivity> = Vec::new();
        for r in &rows {
            let day = from_micros(r.col::<i64>("day")? * DAY_MICROS)?;
            if out.last().is_none_or(|d| d.day != day) {
                out.push(DailyActivity {
                    day,
                    ..Default::default()
                });
            }
            let Some(d) = out.last_mut() else { continue };
            let n = count(r, "n")?;
            match r.col::<&str>("kind")? {
                "enrolled" => {
                    let replaced = count(r, "replaced")?;
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
