//! Group commit: many callers' writes of one kind share a transaction.
//!
//! Callers put a job on a channel and wait for its answer; writer tasks drain the channel.
//! A writer waits for one job, takes whatever else is waiting (within the kind's bounds),
//! and writes the group in one transaction. While one writer waits for its COMMIT, another
//! gathers the next group: under load one commit covers many callers, and an idle gateway
//! still commits each write at once.
//!
//! A group the database refuses is written again job by job, so one bad job fails alone; a
//! lost connection fails the whole group, as every job would fail the same way. The last
//! writer to stop (the store closed, the channels drained) closes the pool.

use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

/// A kind of write that can be grouped.
pub(super) trait GroupWrite: Send + Sync + 'static {
    type Input: Send + Sync + 'static;
    type Output: Send + 'static;
    /// For the logs.
    const KIND: &'static str;
    /// A writer stops gathering once its group holds this many items...
    const MAX_ITEMS: usize;
    /// ...or this many bytes; a job is never split, so one larger job goes alone.
    const MAX_BYTES: usize;

    /// Items and bytes one job adds to a group.
    fn size(input: &Self::Input) -> (usize, usize);

    /// Write the jobs in one transaction; one output per job, in order. `origin` names the
    /// store in the wake-ups the transaction sends (see `cluster`).
    fn write(
        pool: &Pool,
        origin: &str,
        inputs: &[&Self::Input],
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
}

struct Job<W: GroupWrite> {
    input: W::Input,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

/// The entry to one kind's writers.
pub(super) struct Group<W: GroupWrite> {
    /// `None` once closed.
    sender: Mutex<Option<mpsc::UnboundedSender<Job<W>>>>,
}

impl<W: GroupWrite> Group<W> {
    /// Start `writers` tasks. `running` counts live writers of every kind, so that the last
    /// one closes the pool they share.
    pub(super) fn start(
        pool: &Pool,
        origin: &Arc<str>,
        writers: usize,
        running: &Arc<AtomicUsize>,
    ) -> Group<W> {
        let (sender, receiver) = mpsc::unbounded_channel::<Job<W>>();
        let receiver = Arc::new(AsyncMutex::new(receiver));
        for _ in 0..writers {
            let (pool, receiver, running) = (pool.clone(), receiver.clone(), running.clone());
            let origin = origin.clone();
            tokio::spawn(async move {
                while let Some(group) = next_group(&receiver).await {
                    write_group::<W>(&pool, &origin, group).await;
                }
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    tracing::debug!("postgres: writers stopped; closing the pool");
                    pool.close();
                }
            });
        }
        Group {
            sender: Mutex::new(Some(sender)),
        }
    }

    /// Write `input` in the next group; resolves once that group committed.
    pub(super) async fn submit(&self, input: W::Input) -> Result<W::Output, StoreError> {
        let (reply_to, reply) = oneshot::channel();
        {
            let sender = self.sender.lock().map_err(|_| StoreError::Closed)?;
            let sender = sender.as_ref().ok_or(StoreError::Closed)?;
            sender
                .send(Job {
                    input,
                    reply: reply_to,
                })
                .map_err(|_| StoreError::Closed)?;
        }
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Take no more jobs; the writers finish what is queued, then stop.
    pub(super) fn close(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }
}

/// Wait for a job, then take whatever else is waiting, up to the bounds. The lock is held
/// while waiting so that one writer gathers at a time.
async fn next_group<W: GroupWrite>(
    jobs: &AsyncMutex<mpsc::UnboundedReceiver<Job<W>>>,
) -> Option<Vec<Job<W>>> {
    let mut jobs = jobs.lock().await;
    let first = jobs.recv().await?;
    let (mut items, mut bytes) = W::size(&first.input);
    let mut group = vec![first];
    while items < W::MAX_ITEMS && bytes < W::MAX_BYTES {
        let Ok(job) = jobs.try_recv() else { break };
        let (job_items, job_bytes) = W::size(&job.input);
        items += job_items;
        bytes += job_bytes;
        group.push(job);
    }
    Some(group)
}

async fn write_group<W: GroupWrite>(pool: &Pool, origin: &str, group: Vec<Job<W>>) {
    let inputs: Vec<&W::Input> = group.iter().map(|job| &job.input).collect();
    let started = std::time::Instant::now();
    let result = W::write(pool, origin, &inputs).await;
    drop(inputs);
    match result {
        Ok(outputs) => {
            tracing::trace!(kind = W::KIND, jobs = group.len(), elapsed = ?started.elapsed(), "postgres: group commit");
            for (job, output) in group.into_iter().zip(outputs) {
                let _ = job.reply.send(Ok(output));
            }
        }
        Err(error) if group.len() == 1 => {
            if let Some(job) = group.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(error) if refused_by_database(&error) => {
            tracing::warn!(kind = W::KIND, %error, jobs = group.len(), "postgres: a group commit was refused; writing its jobs one by one");
            for job in group {
                let result = W::write(pool, origin, &[&job.input])
                    .await
                    .and_then(|outputs| {
                        outputs
                            .into_iter()
                            .next()
                            .ok_or_else(|| StoreError::Corrupt("a write answered nothing".into()))
                    });
                let _ = job.reply.send(result);
            }
        }
        Err(error) => {
            tracing::error!(kind = W::KIND, %error, jobs = group.len(), "postgres: a group commit failed");
            let message = error.to_string();
            for job in group {
                let _ = job
                    .reply
                    .send(Err(StoreError::GroupFailed(message.clone())));
            }
        }
    }
}

/// An error the server answered (bad data, a constraint, a deadlock), as opposed to a lost
/// connection or an exhausted pool.
fn refused_by_database(error: &StoreError) -> bool {
    matches!(error, StoreError::Postgres(error) if error.as_db_error().is_some())
}
