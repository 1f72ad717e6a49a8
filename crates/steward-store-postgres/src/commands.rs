//! [`CommandQueue`]: enqueues (in batches, `writes.rs`), reads and cancellation.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::rows::command_from_row;
use crate::{PgStore, micros, writes};

#[async_trait]
impl CommandQueue for PgStore {
    async fn enqueue_commands(&self, commands: &[NewCommand]) -> StoreResult<()> {
        // A fleet-wide fan-out commits in batches, as in the SQLite store: each transaction stays
        // short, and a failure says how much was queued before it.
        let mut queued = 0;
        for batch in commands.chunks(writes::ENQUEUE_BATCH) {
            self.write_commands(batch).await.map_err(|e| match e {
                StoreError::Backend(m) if queued > 0 => {
                    StoreError::Backend(format!("{m} (the first {queued} commands were queued)"))
                }
                StoreError::Unavailable(m) if queued > 0 => {
                    StoreError::Unavailable(format!("{m} (the first {queued} commands were queued)"))
                }
                other => other,
            })?;
            queued += batch.len();
        }
        Ok(())
    }

    async fn command(&self, id: CommandId) -> StoreResult<Option<Command>> {
        sqlx::query("SELECT * FROM commands WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(command_from_row)
            .transpose()
    }

    async fn commands_for_enrollment(&self, id: EnrollmentId) -> StoreResult<Vec<Command>> {
        sqlx::query("SELECT * FROM commands WHERE enrollment_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(command_from_row)
            .collect()
    }

    async fn deliverable_commands(&self, id: EnrollmentId, now: OffsetDateTime) -> StoreResult<Vec<Command>> {
        sqlx::query(
            "SELECT * FROM commands WHERE enrollment_id = $1 AND state IN ('pending', 'sent') \
             AND (expires_at IS NULL OR expires_at > $2) ORDER BY priority DESC, seq",
        )
        .bind(id.to_string())
        .bind(micros(now))
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(command_from_row)
        .collect()
    }

    async fn cancel_command(&self, id: CommandId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE commands SET state = 'cancelled', completed_at = $1 WHERE id = $2 AND state IN ('pending', 'sent')",
                |q| q.bind(micros(now)).bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }
}
