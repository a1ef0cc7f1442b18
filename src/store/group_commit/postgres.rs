//! PostgreSQL's writer of the groups.
//!
//! Each save was a transaction of its own: nine round trips, and the audit head's row lock
//! held from its update through the commit's WAL flush, so that every writer of every replica
//! waited for one save at a time (a rotation spent 2 ms waiting for that lock on each of its
//! saves; 235 rotations a second at 100,000 credentials). A group is one transaction of a
//! statement per kind of write, whatever its size: each binds the group's rows as arrays
//! (`sql::*_POSTGRES`), and the head is moved once, last, so its lock is held for two
//! statements and the commit.
//!
//! Each statement that joins the group's arrays to a table is sent unnamed (`persistent(false)`),
//! so PostgreSQL plans it for the rows it is given. A named statement's generic plan, which
//! PostgreSQL settles on from its sixth run, sees each `unnest` as 100 rows: chosen while the
//! tables were small (a first start, a catch-up), it joined them by scanning every row of
//! `run_steps`, and kept doing so until the next `ANALYZE` (0.31–0.36 ms a row ended, in seven
//! of ten runs of the scale bench; 0.025 ms looked up by key). Asking for a plan per run for the
//! whole connection (`plan_cache_mode`) also planned again each foreign-key check and each
//! trigger's statement (65,000–70,000 checks on `runs` in a bench run): a third of PostgreSQL's
//! planning. The statements that join no table stay named, for a parse is a round trip more:
//! the audit's, under the head's lock, and the fingerprints'.
//!
//! The writer has a connection of its own, opened on its thread's runtime (a pooled
//! connection's socket belongs to the runtime that opened it), and opened again after an error
//! that was not the database's answer to a statement.

use std::collections::HashMap;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Postgres, Transaction};

use super::{GroupError, Queued, Save, Write, Writer};
use crate::model::state::RunState;
use crate::store::integrity::IntegrityKey;
use crate::store::{Begun, CredentialUpdate, Pause, RunRow, StepEnd, audit, sql};

/// Writes groups into the PostgreSQL database `options` connects to.
pub(in crate::store) struct PostgresWriter {
    options: PgConnectOptions,
    key: IntegrityKey,
    db: Option<PgConnection>,
}

impl PostgresWriter {
    pub fn new(options: PgConnectOptions, key: IntegrityKey) -> Self {
        PostgresWriter {
            options,
            key,
            db: None,
        }
    }
}

impl Writer for PostgresWriter {
    async fn commit_together(
        &mut self,
        group: &[Queued],
    ) -> Result<Vec<Option<Begun>>, GroupError> {
        let db = match &mut self.db {
            Some(db) => db,
            None => self
                .db
                .insert(PgConnection::connect_with(&self.options).await?),
        };
        let outcome = match db.begin().await {
            Ok(tx) => commit_batch(tx, &self.key, group).await,
            Err(e) => Err(e.into()),
        };
        // A statement the database refused leaves the connection fit (the dropped transaction
        // rolls back before its next use); anything else (I/O, protocol) may not have.
        if let Err(GroupError::Sqlx(e)) = &outcome
            && !matches!(e, sqlx::Error::Database(_))
        {
            self.db = None;
        }
        outcome
    }
}

/// A step's start in the group: a `Begin` write, or the step a save begins after its own.
struct StepStart<'a> {
    run: &'a RunRow,
    step: &'a str,
    worker: &'a str,
    now: i64,
}

impl<'a> StepStart<'a> {
    /// The start of `step`, if any, recorded with `save`.
    fn after(save: &'a Save, step: Option<&'a str>) -> Option<Self> {
        Some(StepStart {
            run: &save.run,
            step: step?,
            worker: &save.worker,
            now: save.now,
        })
    }
}

/// Binds the step starts' columns onto `PASS_STEPS_POSTGRES` or `BEGIN_STEPS_POSTGRES`.
macro_rules! bind_step_starts {
    ($query:expr, $starts:expr) => {
        $query
            .bind(column($starts, |b| b.run.id.as_str()))
            .bind(column($starts, |b| b.step))
            .bind(column($starts, |b| b.run.attempts + 1))
            .bind(column($starts, |b| b.worker))
            .bind(column($starts, |b| b.now))
    };
}

/// One column of a statement's rows: `value` of each write.
fn column<'a, W, T>(writes: &'a [W], value: impl FnMut(&'a W) -> T) -> Vec<T> {
    writes.iter().map(value).collect()
}

/// One transaction: each kind of write by one statement, the audit head moved past the
/// group's rows, the rows appended, commit. Returns each write's step start.
async fn commit_batch(
    mut tx: Transaction<'_, Postgres>,
    key: &IntegrityKey,
    group: &[Queued],
) -> Result<Vec<Option<Begun>>, GroupError> {
    let mut saves: Vec<&Save> = Vec::new();
    let mut touched: Vec<StepStart> = Vec::new();
    let mut minted: Vec<(&str, &str, &str, &str, i64)> = Vec::new();
    for Queued { write, .. } in group {
        match write {
            Write::Save(s) => saves.push(s),
            Write::Begin {
                run,
                step,
                worker,
                now,
                ..
            } => touched.push(StepStart {
                run,
                step,
                worker,
                now: *now,
            }),
            Write::Minted {
                credential_id,
                run_id,
                fields,
                now,
            } => minted.extend(fields.iter().map(|(field, print)| {
                (
                    run_id.as_str(),
                    field.as_str(),
                    credential_id.as_str(),
                    print.as_str(),
                    *now,
                )
            })),
        }
    }

    if !saves.is_empty() {
        let saved = sqlx::query(sql::SAVE_RUNS_POSTGRES)
            .persistent(false)
            .bind(column(&saves, |s| s.run.id.as_str()))
            .bind(column(&saves, |s| s.expected.as_str()))
            .bind(column(&saves, |s| s.worker.as_str()))
            .bind(column(&saves, |s| s.run.state.as_str()))
            .bind(column(&saves, |s| s.run.attempts))
            .bind(column(&saves, |s| s.run.not_before))
            .bind(column(&saves, |s| s.run.lease_owner.as_deref()))
            .bind(column(&saves, |s| s.run.lease_until))
            .bind(column(&saves, |s| s.run.pending_version.as_deref()))
            .bind(column(&saves, |s| s.run.pending_fingerprint.as_deref()))
            .bind(column(&saves, |s| s.run.replaced_version.as_deref()))
            .bind(column(&saves, |s| s.run.replaced_fingerprint.as_deref()))
            .bind(column(&saves, |s| s.run.grace_until))
            .bind(column(&saves, |s| s.run.last_error.as_deref()))
            .bind(column(&saves, |s| s.run.error_class.as_deref()))
            .bind(column(&saves, |s| s.run.stuck_from.map(RunState::as_str)))
            .bind(column(&saves, |s| s.run.finished_at))
            .bind(column(&saves, |s| s.now))
            .bind(column(&saves, |s| s.run.previous_usage.as_deref()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if saved != saves.len() as u64 {
            return Err(GroupError::Refused);
        }
    }
    if !touched.is_empty() {
        let held = sqlx::query(sql::TOUCH_LEASED_RUNS_POSTGRES)
            .persistent(false)
            .bind(column(&touched, |b| b.run.id.as_str()))
            .bind(column(&touched, |b| b.run.state.as_str()))
            .bind(column(&touched, |b| b.worker))
            .bind(column(&touched, |b| b.now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if held != touched.len() as u64 {
            return Err(GroupError::Refused);
        }
    }

    let ended: Vec<(&Save, &StepEnd)> = saves
        .iter()
        .filter_map(|s| Some((*s, s.step.as_ref()?)))
        .collect();
    if !ended.is_empty() {
        sqlx::query(sql::END_STEPS_POSTGRES)
            .persistent(false)
            .bind(column(&ended, |(s, _)| s.run.id.as_str()))
            .bind(column(&ended, |(_, step)| step.seq))
            .bind(column(&ended, |(s, _)| s.now))
            .bind(column(&ended, |(_, step)| step.outcome))
            .bind(column(&ended, |(_, step)| step.error.as_deref()))
            .execute(&mut *tx)
            .await?;
    }

    let updated: Vec<(&Save, &CredentialUpdate)> = saves
        .iter()
        .filter_map(|s| Some((*s, s.credential.as_ref()?)))
        .collect();
    if !updated.is_empty() {
        sqlx::query(sql::UPDATE_CREDENTIALS_POSTGRES)
            .persistent(false)
            .bind(column(&updated, |(s, _)| s.run.credential_id.as_str()))
            .bind(column(&updated, |(_, c)| c.current_version.as_deref()))
            .bind(column(&updated, |(_, c)| c.current_fingerprint.as_deref()))
            .bind(column(&updated, |(_, c)| c.current_since))
            .bind(column(&updated, |(_, c)| c.last_success_at))
            .bind(column(&updated, |(_, c)| c.last_error.is_some() as i64))
            .bind(column(&updated, |(_, c)| c.last_error.clone().flatten()))
            .bind(column(&updated, |(_, c)| c.failure.map(i64::from)))
            .bind(column(&updated, |(_, c)| c.next_due_at.is_some() as i64))
            .bind(column(&updated, |(_, c)| c.next_due_at.flatten()))
            .bind(column(&updated, |(_, c)| c.due_reason.as_deref()))
            .bind(column(&updated, |(s, _)| s.now))
            .execute(&mut *tx)
            .await?;
    }

    // A step that had nothing to do is recorded before the step begun after it.
    let passed: Vec<StepStart> = saves
        .iter()
        .filter_map(|s| StepStart::after(s, s.passed.as_deref()))
        .collect();
    if !passed.is_empty() {
        bind_step_starts!(
            sqlx::query(sql::PASS_STEPS_POSTGRES).persistent(false),
            &passed
        )
        .execute(&mut *tx)
        .await?;
    }
    let begun: Vec<StepStart> = saves
        .iter()
        .filter_map(|s| StepStart::after(s, s.begin_next.as_deref()))
        .chain(touched)
        .collect();
    let mut starts: HashMap<String, Begun> = HashMap::with_capacity(begun.len());
    if !begun.is_empty() {
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = bind_step_starts!(
            sqlx::query_as(sql::BEGIN_STEPS_POSTGRES).persistent(false),
            &begun
        )
        .fetch_all(&mut *tx)
        .await?;
        starts.extend(
            rows.into_iter()
                .map(|(run_id, seq, paused_at, paused_until)| {
                    let pause = Pause {
                        paused_at,
                        paused_until,
                    };
                    (run_id, Begun { seq, pause })
                }),
        );
    }

    if !minted.is_empty() {
        sqlx::query(sql::RECORD_MINTED_POSTGRES)
            .bind(column(&minted, |m| m.0))
            .bind(column(&minted, |m| m.1))
            .bind(column(&minted, |m| m.2))
            .bind(column(&minted, |m| m.3))
            .bind(column(&minted, |m| m.4))
            .execute(&mut *tx)
            .await?;
    }

    // Last: the audit head's row lock serialises every writer of every replica until this
    // commit, so it is held for two statements and the commit, no more.
    if !saves.is_empty() {
        let (last, mut prev): (i64, String) = sqlx::query_as(sql::ADVANCE_AUDIT_HEAD_BY)
            .bind(saves.len() as i64)
            .fetch_one(&mut *tx)
            .await?;
        let first = last - saves.len() as i64 + 1;
        let (mut seq_of, mut hashes, mut prevs) = (Vec::new(), Vec::new(), Vec::new());
        for (seq, s) in (first..).zip(&saves) {
            let hash = audit::row_hash(key, &prev, seq, s.now, &s.audit);
            seq_of.push(seq);
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
        }
        sqlx::query(sql::INSERT_AUDITS_POSTGRES)
            .bind(seq_of)
            .bind(column(&saves, |s| s.now))
            .bind(column(&saves, |s| s.audit.actor.as_str()))
            .bind(column(&saves, |s| s.audit.action.as_str()))
            .bind(column(&saves, |s| s.audit.credential_id.as_deref()))
            .bind(column(&saves, |s| s.audit.run_id.as_deref()))
            .bind(column(&saves, |s| s.audit.detail.as_str()))
            .bind(prevs)
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    Ok(group
        .iter()
        .map(|Queued { write, .. }| match write {
            Write::Save(s) if s.begin_next.is_some() => starts.get(&s.run.id).copied(),
            Write::Begin { run, .. } => starts.get(&run.id).copied(),
            Write::Save(_) | Write::Minted { .. } => None,
        })
        .collect())
}
