//! SQLite's writer of the groups.
//!
//! SQLite has one writer. The writer thread writes the groups through a connection of its
//! own (rusqlite), running each statement in-thread: through sqlx every statement was a
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

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ToSql};
use sqlx::SqlitePool;

use super::{GroupError, Queued, Write, Writer};
use crate::model::state::RunState;
use crate::store::integrity::IntegrityKey;
use crate::store::{Begun, Durability, Pause, RunRow, audit, sql};

/// Writes groups into the SQLite database `file`, which `pool` is connected to.
pub(in crate::store) struct SqliteWriter {
    pool: SqlitePool,
    file: PathBuf,
    key: IntegrityKey,
    /// Opened at the first group, and again after a failure that may have left it unusable.
    db: Option<Connection>,
}

impl SqliteWriter {
    pub fn new(pool: SqlitePool, file: PathBuf, key: IntegrityKey) -> Self {
        SqliteWriter {
            pool,
            file,
            key,
            db: None,
        }
    }
}

impl Writer for SqliteWriter {
    async fn commit_together(
        &mut self,
        group: &[Queued],
    ) -> Result<Vec<Option<Begun>>, GroupError> {
        let _turn = self.pool.acquire().await?;
        let conn = match &mut self.db {
            Some(conn) => conn,
            None => self.db.insert(open(&self.file)?),
        };
        // The connection commits NORMAL (on disk at the next checkpoint); a group holding a
        // write that precedes a provider change commits FULL, its WAL synced before COMMIT
        // returns, and with it every commit before it.
        let synced = group
            .iter()
            .any(|q| q.write.durability() == Durability::Synced);
        if synced {
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        let outcome = commit_batch(conn, &self.key, group);
        if outcome.is_err() && conn.execute_batch("ROLLBACK").is_err() && !conn.is_autocommit() {
            // A connection stuck in a transaction would hold the database's lock.
            self.db = None;
            return outcome;
        }
        // Outside the transaction: SQLite refuses to change the level inside one.
        if synced && let Err(e) = conn.pragma_update(None, "synchronous", "NORMAL") {
            // Left at FULL it would only be slower; a fresh connection starts NORMAL.
            tracing::debug!(error = %e, "could not set synchronous back to NORMAL");
            self.db = None;
        }
        outcome
    }
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
/// write by its statements (each prepared once), `COMMIT`. Returns each write's step start.
fn commit_batch(
    db: &Connection,
    key: &IntegrityKey,
    group: &[Queued],
) -> Result<Vec<Option<Begun>>, GroupError> {
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
                        Some(begin_step(db, &s.run, step)?)
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
                Some(begin_step(db, run, step)?)
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

/// Records the start of one of `run`'s steps (`BEGIN_STEP`'s `step`), and reads its
/// credential's pause in the same transaction.
fn begin_step(db: &Connection, run: &RunRow, step: Params<'_>) -> Result<Begun, rusqlite::Error> {
    let seq = prepare(db, sql::BEGIN_STEP, &step)?
        .raw_query()
        .next()?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)?
        .get(0)?;
    let pause = prepare(
        db,
        sql::CREDENTIAL_PAUSE,
        &Params::new().bind(&run.credential_id),
    )?
    .raw_query()
    .next()?
    .map(|row| {
        Ok::<_, rusqlite::Error>(Pause {
            paused_at: row.get(0)?,
            paused_until: row.get(1)?,
        })
    })
    .transpose()?
    .unwrap_or_default();
    Ok(Begun { seq, pause })
}
