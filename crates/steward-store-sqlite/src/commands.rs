//! [`CommandQueue`]: enqueues are the writer thread's jobs of `writes.rs`; reads and cancellation
//! the generic ones of lib.rs.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::rows::command_from_row;
use crate::{SqliteStore, micros, writes};

#[async_trait]
impl CommandQueue for SqliteStore {
    async fn enqueue_commands(&self, commands: &[NewCommand]) -> StoreResult<()> {
        // A fleet-wide fan-out commits in batches, each its own job, so device sessions queued
        // behind it commit in between instead of waiting for all of it (1,000,000 rows held the
        // write lock 36 s as one transaction).
        let mut queued = 0;
        for batch in commands.chunks(writes::ENQUEUE_BATCH) {
            let batch = batch.to_vec();
            let n = batch.len();
            self.writer
                .run(move |conn| writes::enqueue_commands(conn, &batch))
                .await
                .map_err(|e| match e {
                    StoreError::Backend(m) if queued > 0 => {
                        StoreError::Backend(format!("{m} (the first {queued} commands were queued)"))
                    }
                    StoreError::Unavailable(m) if queued > 0 => {
                        StoreError::Unavailable(format!("{m} (the first {queued} commands were queued)"))
                    }
                    other => other,
                })?;
            queued += n;
        }
        Ok(())
    }

    async fn command(&self, id: CommandId) -> StoreResult<Option<Command>> {
        self.read_opt(
            "SELECT * FROM commands WHERE id = ?1",
            (id.to_string(),),
            command_from_row,
        )
        .await
    }

    async fn commands_for_enrollment(&self, id: EnrollmentId) -> StoreResult<Vec<Command>> {
        self.read_all(
            "SELECT * FROM commands WHERE enrollment_id = ?1 ORDER BY seq",
            (id.to_string(),),
            command_from_row,
        )
        .await
    }

    async fn deliverable_commands(&self, id: EnrollmentId, now: OffsetDateTime) -> StoreResult<Vec<Command>> {
        self.read_all(
            "SELECT * FROM commands WHERE enrollment_id = ?1 AND state IN ('pending', 'sent') \
             AND (expires_at IS NULL OR expires_at > ?2) ORDER BY priority DESC, seq",
            (id.to_string(), micros(now)),
            command_from_row,
        )
        .await
    }

    async fn cancel_command(&self, id: CommandId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE commands SET state = 'cancelled', completed_at = ?1 WHERE id = ?2 AND state IN ('pending', 'sent')",
                (micros(now), id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }
}
