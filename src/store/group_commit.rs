//! SQLite group commit: the saves and step starts that arrive while one transaction is
//! writing are written together by the next, in one transaction.
//!
//! SQLite has one writer and rotor one connection to it, and a transaction holds that
//! connection across every hand-over to sqlx's worker thread: a save alone took four. A group
//! takes one per write and two more (`BEGIN IMMEDIATE` with the audit head's check, `COMMIT`),
//! each write by the prepared statements of its kind. (One batch text for the whole group took
//! one hand-over, but SQLite parsed every statement of it again each time: parsing cost more
//! than the hand-overs it saved, 5.6 ms of CPU a rotation against 3.5.) The audit rows of the
//! group follow the head this writer last wrote (checked as it begins: another writer may have
//! moved it, then the head is read and the group written again). Each write keeps its own
//! compare-and-swap: when one of a group is refused (its lease was lost) or anything else
//! fails, the group is rolled back and its writes are made one by one, so that each learns
//! its own outcome and none is lost.

use std::sync::{Arc, Mutex};

use sqlx::SqlitePool;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::{AuditEntry, CredentialUpdate, RunRow, StepEnd, StoreError, audit, sql};
use crate::engine::state::RunState;

/// A bound on one transaction's writes: how long the writer holds SQLite's lock, and how many
/// writes go back to one-by-one when one of them is refused.
const MOST_IN_A_GROUP: usize = 128;

/// One write, owned so that the writer can hold it past the caller's borrow.
// A queue holds one per run in flight, each moved once: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub(super) enum Write {
    /// `Store::save_run`: returns the next step's `seq` if one was begun.
    Save(Save),
    /// `Store::begin_step`: returns the step's `seq`.
    Begin {
        run: RunRow,
        step: String,
        worker: String,
        now: i64,
    },
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
    pub begin_next: Option<String>,
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Option<i64>, StoreError>>,
}

/// The queue of writes and the task that writes them, started on the first write (on the
/// runtime of its caller) and again if that runtime has gone.
pub(super) struct GroupCommit {
    pool: SqlitePool,
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
}

impl GroupCommit {
    pub fn new(pool: SqlitePool) -> Arc<Self> {
        Arc::new(GroupCommit {
            pool,
            queue: Mutex::new(None),
        })
    }

    pub async fn write(&self, write: Write) -> Result<Option<i64>, StoreError> {
        let (done, outcome) = oneshot::channel();
        let mut queued = Queued { write, done };
        for _ in 0..2 {
            let sender = {
                let mut queue = self.queue.lock().expect("group commit queue lock");
                match &*queue {
                    Some(sender) if !sender.is_closed() => sender.clone(),
                    _ => {
                        let (sender, receiver) = mpsc::unbounded_channel();
                        tokio::spawn(write_groups(self.pool.clone(), receiver));
                        *queue = Some(sender.clone());
                        sender
                    }
                }
            };
            match sender.send(queued) {
                Ok(()) => return outcome.await.map_err(|_| StoreError::WriterGone)?,
                Err(mpsc::error::SendError(back)) => queued = back,
            }
        }
        Err(StoreError::WriterGone)
    }
}

/// The audit chain's head as this writer last left it: `(seq, hash)`.
type Head = Option<(i64, String)>;

async fn write_groups(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut head: Head = None;
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MOST_IN_A_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if group.len() > 1 {
            match commit_together(&pool, &mut head, &group).await {
                Ok(seqs) => {
                    for (queued, seq) in group.into_iter().zip(seqs) {
                        let _ = queued.done.send(Ok(seq));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, writes = group.len(), "group commit refused; writing one by one");
                }
            }
        }
        // Written alone, these move the head past what this writer knows.
        head = None;
        for queued in group {
            let outcome = write_alone(&pool, &queued.write).await;
            let _ = queued.done.send(outcome);
        }
    }
}

async fn write_alone(pool: &SqlitePool, write: &Write) -> Result<Option<i64>, StoreError> {
    match write {
        Write::Save(s) => {
            super::save_run_sqlite(
                pool,
                &s.run,
                s.expected,
                &s.worker,
                s.step.as_ref(),
                s.credential.as_ref(),
                &s.audit,
                s.now,
                s.begin_next.as_deref(),
            )
            .await
        }
        Write::Begin {
            run,
            step,
            worker,
            now,
        } => super::begin_step_sqlite(pool, run, step, worker, *now)
            .await
            .map(Some),
    }
}

/// Writes every write of `group` in one transaction, or none. Returns each one's `seq`.
async fn commit_together(
    pool: &SqlitePool,
    head: &mut Head,
    group: &[Queued],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    loop {
        let (seq, hash) = match head.take() {
            Some(known) => known,
            None => read_head(&mut conn).await?,
        };
        match commit_batch(&mut conn, (seq, &hash), group).await {
            Ok((seqs, moved)) => {
                *head = Some(moved);
                return Ok(seqs);
            }
            Err(e) => {
                rollback(&mut conn).await;
                // Another writer (a claim, `rotor rotate`, another process) moved the head:
                // write the group again after it.
                if super::fence_refused(&e) && read_head(&mut conn).await? != (seq, hash) {
                    continue;
                }
                return Err(e);
            }
        }
    }
}

async fn read_head(conn: &mut PoolConnection<sqlx::Sqlite>) -> Result<(i64, String), sqlx::Error> {
    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut **conn)
        .await
}

/// A batch that failed part-way left its transaction open (sqlx does not know of it).
async fn rollback(conn: &mut PoolConnection<sqlx::Sqlite>) {
    if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await
        && !e.to_string().contains("no transaction is active")
    {
        tracing::warn!(error = %e, "could not roll back a failed group commit; closing its connection");
        conn.close_on_drop();
    }
}

/// One transaction: `BEGIN IMMEDIATE` with a check that the audit head is still `head`, each
/// write of the group by its own prepared statements (one text per kind of write, parsed once
/// per connection), `COMMIT`. Returns each write's `seq` and the head it leaves.
async fn commit_batch(
    conn: &mut PoolConnection<sqlx::Sqlite>,
    head: (i64, &str),
    group: &[Queued],
) -> Result<(Vec<Option<i64>>, (i64, String)), sqlx::Error> {
    let saves = group
        .iter()
        .filter(|q| matches!(q.write, Write::Save(_)))
        .count() as i64;
    sqlx::query(sql::begin_group_sqlite())
        .bind(head.0 + saves)
        .bind(head.0)
        .bind(head.1)
        .execute(&mut **conn)
        .await?;
    let (mut seq, mut prev) = (head.0, head.1.to_owned());
    let mut seqs = Vec::with_capacity(group.len());
    for Queued { write, .. } in group {
        let begun = match write {
            Write::Save(s) => {
                seq += 1;
                let hash = audit::row_hash(&prev, seq, s.now, &s.audit);
                let follows = std::mem::replace(&mut prev, hash.clone());
                let query = sqlx::query_as::<_, (i64,)>(sql::save_grouped_sqlite(
                    s.step.is_some(),
                    s.credential.is_some(),
                    s.begin_next.is_some(),
                ));
                let query = bind_save_run!(query, s.run, s.expected, &s.worker, s.now);
                let query = bind_save_rest!(
                    query,
                    &s.run,
                    &s.step,
                    &s.credential,
                    &s.audit,
                    seq,
                    &follows,
                    &hash,
                    s.begin_next.as_deref(),
                    &s.worker,
                    s.now
                );
                query.fetch_all(&mut **conn).await?.pop()
            }
            Write::Begin {
                run,
                step,
                worker,
                now,
            } => {
                let query = sqlx::query_as::<_, (i64,)>(sql::begin_step_fenced_sqlite());
                bind_begin_step!(query, run, step.as_str(), worker, *now)
                    .bind(&run.state)
                    .fetch_all(&mut **conn)
                    .await?
                    .pop()
            }
        };
        seqs.push(begun.map(|r| r.0));
    }
    // The trigger on `audit` moved the head's hash along with each row.
    sqlx::query("COMMIT").execute(&mut **conn).await?;
    Ok((seqs, (seq, prev)))
}
