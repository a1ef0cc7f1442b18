//! SQLite group commit: the saves, step starts and minted values' fingerprints that arrive
//! while one transaction is writing are written together by the next, in one transaction.
//!
//! SQLite has one writer. A thread of rotor's own writes the groups through a connection of
//! its own (rusqlite), running each statement in-thread: through sqlx every statement was a
//! hand-over to its connection's worker thread and back, and with a group's writes one after
//! another those hand-overs, two thread wake-ups each, bounded the whole daemon (the writer
//! was busy 96 % of the time at 370 rotations a second, sqlx's worker 43 %, the cores a
//! third idle). The writer takes sqlx's one pooled connection for the length of a group, so
//! that rotor's other writes (claims, heartbeats, alerts) queue for it in the pool's fair
//! order instead of in SQLite's busy handler's sleeps, and never find the database locked by
//! their own process.
//!
//! The audit rows of the group follow the chain's head, read once the transaction holds
//! the write lock (an in-thread read: no need to remember it between groups).
//! Each write keeps its own compare-and-swap: when one of a group is refused (its lease was
//! lost) or anything else fails, the group is rolled back and its writes are made one by one,
//! each in a transaction of its own by the same statements, so that each learns its own
//! outcome and none is lost. This is the only way a save reaches a SQLite store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ToSql};

use super::integrity::IntegrityKey;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{AuditEntry, CredentialUpdate, Durability, RunRow, StepEnd, StoreError, audit, sql};
use crate::model::state::RunState;

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
    done: oneshot::Sender<Result<Option<i64>, StoreError>>,
}

/// The queue of writes; the writer thread ends when the last store holding it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupCommit {
    /// Starts the writer thread for the database `file`, which `pool` is connected to.
    pub fn start(pool: SqlitePool, file: PathBuf, key: IntegrityKey) -> std::io::Result<Arc<Self>> {
        let (queue, receiver) = mpsc::unbounded_channel();
        // Its own runtime: the pool's connection is awaited there, and the thread outlives
        // whichever runtime connected the store.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("rotor-sqlite-writer".into())
            .spawn(move || runtime.block_on(write_groups(pool, file, key, receiver)))?;
        Ok(Arc::new(GroupCommit { queue }))
    }

    pub async fn write(&self, write: Write) -> Result<Option<i64>, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Why a group was not written together.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    #[error("a write's compare-and-swap changed nothing")]
    Refused,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Pool(#[from] sqlx::Error),
}

async fn write_groups(
    pool: SqlitePool,
    file: PathBuf,
    key: IntegrityKey,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let mut db: Option<Connection> = None;
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MOST_IN_A_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        match commit_together(&pool, &file, &key, &mut db, &group).await {
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
        for queued in group {
            let outcome = write_alone(&pool, &file, &key, &mut db, &queued).await;
            let _ = queued.done.send(outcome);
        }
    }
}

/// One write in a transaction of its own, by the same statements as a group: its own
/// outcome, a refused compare-and-swap as `LeaseLost`.
async fn write_alone(
    pool: &SqlitePool,
    file: &Path,
    key: &IntegrityKey,
    db: &mut Option<Connection>,
    queued: &Queued,
) -> Result<Option<i64>, StoreError> {
    match commit_together(pool, file, key, db, std::slice::from_ref(queued)).await {
        Ok(seqs) => Ok(seqs.into_iter().next().flatten()),
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
        Err(GroupError::Pool(e)) => Err(StoreError::Query(e)),
    }
}

/// Writes every write of `group` in one transaction, or none, while holding the pool's
/// connection. Returns each one's `seq`.
async fn commit_together(
    pool: &SqlitePool,
    file: &Path,
    key: &IntegrityKey,
    db: &mut Option<Connection>,
    group: &[Queued],
) -> Result<Vec<Option<i64>>, GroupError> {
    let _turn = pool.acquire().await?;
    let conn = match db {
        Some(conn) => conn,
        None => db.insert(open(file)?),
    };
    // The connection commits NORMAL (on disk at the next checkpoint); a group holding a write
    // that precedes a provider change commits FULL, its WAL synced before COMMIT returns, and
    // with it every commit before it.
    let synced = group
        .iter()
        .any(|q| q.write.durability() == Durability::Synced);
    if synced {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let outcome = commit_batch(conn, key, group);
    if outcome.is_err() && conn.execute_batch("ROLLBACK").is_err() && !conn.is_autocommit() {
        // A connection stuck in a transaction would hold the database's lock.
        *db = None;
        return outcome;
    }
    // Outside the transaction: SQLite refuses to change the level inside one.
    if synced && let Err(e) = conn.pragma_update(None, "synchronous", "NORMAL") {
        // Left at FULL it would only be slower; a fresh connection starts NORMAL.
        tracing::debug!(error = %e, "could not set synchronous back to NORMAL");
        *db = None;
    }
    outcome
}

/// The writer's connection, set as sqlx sets its own.
fn open(file: &Path) -> Result<Connection, rusqlite::Error> {
    let db = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(Duration::from_secs(30))?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.pragma_update(None, "foreign_keys", true)?;
    Ok(db)
}

/// One transaction: `BEGIN IMMEDIATE`, the audit head moved past the group's rows, each
/// write by its statements (each prepared once), `COMMIT`. Returns each write's `seq`.
fn commit_batch(
    db: &Connection,
    key: &IntegrityKey,
    group: &[Queued],
) -> Result<Vec<Option<i64>>, GroupError> {
    let saves = group
        .iter()
        .filter(|q| matches!(q.write, Write::Save(_)))
        .count() as i64;
    execute(db, "BEGIN IMMEDIATE", Params::new())?;
    let (mut seq, mut prev): (i64, String) =
        prepare(db, sql::ADVANCE_AUDIT_HEAD_BY, &Params::new().bind(saves))?
            .raw_query()
            .next()?
            .map(|row| Ok::<_, rusqlite::Error>((row.get(0)?, row.get(1)?)))
            .transpose()?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    // The head now names the group's last row; its first follows the hash it held.
    seq -= saves;
    let mut seqs = Vec::with_capacity(group.len());
    for Queued { write, .. } in group {
        let begun = match write {
            Write::Save(s) => {
                let saved = bind_save_run!(Params::new(), s.run, s.expected, &s.worker, s.now);
                if execute(db, sql::SAVE_RUN, saved)? == 0 {
                    return Err(GroupError::Refused);
                }
                if let Some(step) = &s.step {
                    execute(
                        db,
                        sql::END_STEP,
                        bind_end_step!(Params::new(), s.run, step, s.now),
                    )?;
                }
                if let Some(c) = &s.credential {
                    let update = bind_credential_update!(Params::new(), s.run, c, s.now);
                    execute(db, sql::UPDATE_CREDENTIAL, update)?;
                }
                seq += 1;
                let hash = audit::row_hash(key, &prev, seq, s.now, &s.audit);
                let follows = std::mem::replace(&mut prev, hash.clone());
                let row = bind_audit_row!(Params::new(), seq, s.now, &s.audit, &follows, &hash);
                execute(db, sql::INSERT_AUDIT, row)?;
                if let Some(passed) = &s.passed {
                    let step =
                        bind_begin_step!(Params::new(), s.run, passed.as_str(), &s.worker, s.now);
                    execute(db, sql::PASS_STEP, step)?;
                }
                match &s.begin_next {
                    Some(next) => {
                        let step =
                            bind_begin_step!(Params::new(), s.run, next.as_str(), &s.worker, s.now);
                        Some(returning(db, sql::BEGIN_STEP, step)?)
                    }
                    None => None,
                }
            }
            Write::Begin {
                run,
                step,
                worker,
                now,
                ..
            } => {
                let touched = Params::new()
                    .bind(&run.id)
                    .bind(run.state.as_str())
                    .bind(worker)
                    .bind(*now);
                if execute(db, sql::TOUCH_LEASED_RUN, touched)? == 0 {
                    return Err(GroupError::Refused);
                }
                let step = bind_begin_step!(Params::new(), run, step.as_str(), worker, *now);
                Some(returning(db, sql::BEGIN_STEP, step)?)
            }
            Write::Minted {
                credential_id,
                run_id,
                fields,
                now,
            } => {
                for (field, fingerprint) in fields {
                    let minted = Params::new()
                        .bind(run_id)
                        .bind(field)
                        .bind(credential_id)
                        .bind(fingerprint)
                        .bind(*now);
                    execute(db, sql::RECORD_MINTED, minted)?;
                }
                None
            }
        };
        seqs.push(begun);
    }
    // The trigger on `audit` moved the head's hash along with each row.
    execute(db, "COMMIT", Params::new())?;
    Ok(seqs)
}

/// The parameters of one statement, bound by the same `bind_*!` macros as sqlx's queries:
/// the `N`th bound is the statement's `$N`.
struct Params<'a>(Vec<Box<dyn ToSql + 'a>>);

impl<'a> Params<'a> {
    fn new() -> Self {
        Params(Vec::with_capacity(18))
    }

    fn bind(mut self, value: impl ToSql + 'a) -> Self {
        self.0.push(Box::new(value));
        self
    }
}

/// Prepares `text` once per connection and binds `params` by their `$N` names (SQLite
/// numbers named parameters in the order they first appear, not by `N`).
fn prepare<'c>(
    db: &'c Connection,
    text: &str,
    params: &Params<'_>,
) -> Result<rusqlite::CachedStatement<'c>, rusqlite::Error> {
    let mut statement = db.prepare_cached(text)?;
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or_default();
        let value = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| params.0.get(n.checked_sub(1)?))
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
        statement.raw_bind_parameter(index, value)?;
    }
    Ok(statement)
}

/// Runs a statement; returns how many rows it changed.
fn execute(db: &Connection, text: &str, params: Params<'_>) -> Result<usize, rusqlite::Error> {
    prepare(db, text, &params)?.raw_execute()
}

/// Runs a statement that returns one integer (`RETURNING seq`).
fn returning(db: &Connection, text: &str, params: Params<'_>) -> Result<i64, rusqlite::Error> {
    let mut statement = prepare(db, text, &params)?;
    let mut rows = statement.raw_query();
    match rows.next()? {
        Some(row) => row.get(0),
        None => Err(rusqlite::Error::QueryReturnedNoRows),
    }
}
