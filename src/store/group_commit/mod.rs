//! Group commit: the saves, step starts and minted values' fingerprints that arrive while one
//! transaction is writing are written together by the next, in one transaction. This is the
//! only way a save reaches the store, on either backend.
//!
//! A thread of rotor's own writes the groups (`sqlite`, `postgres`: each backend's
//! statements), so that a rotation's write is a hand-over to it and back, whatever runtime the
//! caller runs on. Each write keeps its own compare-and-swap: when one of a group is refused
//! (its lease was lost) or anything else fails, the group is rolled back and its writes are
//! made one by one, each in a transaction of its own by the same statements, so that each
//! learns its own outcome and none is lost.
//!
//! A group appends its saves' audit rows after the chain's head, moved once by all of them:
//! the head's row lock, which serialises every writer of every process, is taken once a group
//! instead of once a save.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{AuditEntry, Begun, CredentialUpdate, Durability, RunRow, StepEnd, StoreError};
use crate::model::state::RunState;

mod postgres;
mod sqlite;

pub(super) use postgres::PostgresWriter;
pub(super) use sqlite::SqliteWriter;

/// A bound on one transaction's writes: how long the writer holds the store's locks, and how
/// many writes go back to one-by-one when one of them is refused.
const MOST_IN_A_GROUP: usize = 128;

/// One write, owned so that the writer can hold it past the caller's borrow.
// A queue holds one per run in flight, each moved once: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub(super) enum Write {
    /// `Store::save_run`: returns the next step's start if one was begun.
    Save(Save),
    /// `Store::begin_step`: returns the step's start.
    Begin {
        run: RunRow,
        step: String,
        worker: String,
        now: i64,
        durability: Durability,
    },
    /// `Store::record_minted`: returns nothing.
    Minted {
        credential_id: String,
        run_id: String,
        fields: Vec<(String, String)>,
        now: i64,
    },
}

impl Write {
    fn durability(&self) -> Durability {
        match self {
            Write::Save(s) => s.durability,
            Write::Begin { durability, .. } => *durability,
            // What `rotor identify` finds is as durable as the mint step's save after it.
            Write::Minted { .. } => Durability::Deferred,
        }
    }
}

/// `Store::save_run`'s arguments.
pub(super) struct Save {
    pub run: RunRow,
    pub expected: RunState,
    pub worker: String,
    pub step: Option<StepEnd>,
    pub credential: Option<CredentialUpdate>,
    pub audit: AuditEntry,
    pub now: i64,
    pub passed: Option<String>,
    pub begin_next: Option<String>,
    pub durability: Durability,
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Option<Begun>, StoreError>>,
}

/// Why a group was not written together.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    #[error("a write's compare-and-swap changed nothing")]
    Refused,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// A backend's way of writing a group in one transaction.
trait Writer: Send + 'static {
    /// Writes every write of `group` in one transaction, or none. Returns each one's step
    /// start, if it began one.
    fn commit_together(
        &mut self,
        group: &[Queued],
    ) -> impl Future<Output = Result<Vec<Option<Begun>>, GroupError>>;
}

/// The queue of writes; the writer thread ends when the last store holding it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupCommit {
    /// Starts the thread that writes the groups with `writer`.
    #[allow(private_bounds)] // each backend's writer is built in its module and passed here
    pub fn start(writer: impl Writer, name: &str) -> std::io::Result<Arc<Self>> {
        let (queue, receiver) = mpsc::unbounded_channel();
        // Its own runtime: the writer's connections are awaited there, and the thread outlives
        // whichever runtime connected the store.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || runtime.block_on(write_groups(writer, receiver)))?;
        Ok(Arc::new(GroupCommit { queue }))
    }

    pub async fn write(&self, write: Write) -> Result<Option<Begun>, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn write_groups(mut writer: impl Writer, mut queue: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MOST_IN_A_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        match writer.commit_together(&group).await {
            Ok(begun) => {
                for (queued, begun) in group.into_iter().zip(begun) {
                    let _ = queued.done.send(Ok(begun));
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, writes = group.len(), "group commit refused; writing one by one");
            }
        }
        for queued in group {
            let outcome = write_alone(&mut writer, &queued).await;
            let _ = queued.done.send(outcome);
        }
    }
}

/// One write in a transaction of its own, by the same statements as a group: its own
/// outcome, a refused compare-and-swap as `LeaseLost`.
async fn write_alone(
    writer: &mut impl Writer,
    queued: &Queued,
) -> Result<Option<Begun>, StoreError> {
    match writer.commit_together(std::slice::from_ref(queued)).await {
        Ok(begun) => Ok(begun.into_iter().next().flatten()),
        Err(GroupError::Refused) => {
            let (run, expected) = match &queued.write {
                Write::Save(s) => (&s.run, s.expected),
                Write::Begin { run, .. } => (run, run.state),
                Write::Minted { .. } => {
                    unreachable!("only a run's compare-and-swap is refused")
                }
            };
            Err(StoreError::LeaseLost {
                run_id: run.id.clone(),
                expected: expected.as_str(),
            })
        }
        Err(GroupError::Sqlite(e)) => Err(StoreError::Write(e)),
        Err(GroupError::Sqlx(e)) => Err(StoreError::Query(e)),
    }
}
