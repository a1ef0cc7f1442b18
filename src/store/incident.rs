//! A person's word on a credential in an incident: the interruption of its live run (an
//! emergency rotation, a cancel) and its pause. Each is one statement, fenced like a step: it
//! names the state it changes, and the worker that was driving the run loses it (its lease is
//! renamed, so its next save, heartbeat and fence check fail) but keeps the time it was granted
//! to finish a side effect in flight; whoever claims the run after that lease ran out finishes
//! what the interruption asked.

use super::BeginWrite;
use super::sql;
use super::{AuditEntry, NewRun, Pool, RunRow, Store, StoreError, audit};

/// What a person asked of a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Both the current and the previous credential are presumed exposed: a run before
    /// promotion rolls back, a run after it retires the old credential now and at once (an IAM
    /// key is deleted, not kept deactivated), a stuck run resumes.
    Emergency,
    /// Stop a run that has not promoted yet: it rolls back. A promoted run is left alone.
    Cancel,
    /// Stop a run whatever its state: before promotion it rolls back, after it the grace ends
    /// now and the old credential is retired as usual.
    RetireNow,
    /// A stuck run a person repaired by hand, closed without any step (`close_by_hand`).
    ResolvedByHand,
}

impl Interrupt {
    pub fn as_str(self) -> &'static str {
        match self {
            Interrupt::Emergency => "emergency",
            Interrupt::Cancel => "cancel",
            Interrupt::RetireNow => "retire_now",
            Interrupt::ResolvedByHand => "resolved_by_hand",
        }
    }
}

impl Store {
    /// Interrupts the credential's live run as `interrupt` says, audited with who and why.
    /// Returns the run as interrupted, or `None` when it has no live run (or, for `Cancel`, a
    /// live run that is promoted already: see `live_run` for which).
    pub async fn interrupt_live_run(
        &self,
        credential_id: &str,
        interrupt: Interrupt,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<RunRow>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let run: Option<RunRow> = sqlx::query_as(sql::INTERRUPT_LIVE_RUN)
                .bind(credential_id)
                .bind(interrupt.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(run) = &run {
                append_audit!(&self.key, tx, now, &interrupted(run, interrupt, actor, reason));
            }
            tx.commit().await?;
            if run.is_some() {
                self.announce_work().await?;
            }
            Ok(run)
        })
    }

    /// Starts an emergency rotation in one write transaction: when the credential has a live
    /// run, interrupts it as `Interrupt::Emergency` and returns it (drive it to rest, then
    /// start again); otherwise plans `run`, audits who asked and why, and claims it for
    /// `worker` until `lease_until`. An incident drain starts thousands of these at once, and
    /// each transaction of its own waits its turn for SQLite's one writer beside the steps'
    /// group commits (four of them per credential took a 10,000-credential drain to 26 s).
    pub async fn start_emergency(
        &self,
        run: &NewRun,
        actor: &str,
        reason: &str,
        worker: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<EmergencyStart, StoreError> {
        let id = &run.credential_id;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let live: Option<RunRow> = sqlx::query_as(sql::INTERRUPT_LIVE_RUN)
                .bind(id)
                .bind(Interrupt::Emergency.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(live) = live {
                append_audit!(&self.key, tx, now, &interrupted(&live, Interrupt::Emergency, actor, reason));
                tx.commit().await?;
                self.announce_work().await?;
                return Ok(EmergencyStart::Interrupted(live));
            }
            let exists: Option<(String,)> = sqlx::query_as(sql::CREDENTIAL_EXISTS)
                .bind(id).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                return Err(StoreError::UnknownCredential(id.clone()));
            }
            let planned = sqlx::query(sql::REQUEST_RUN)
                .bind(&run.id).bind(id).bind(&run.token).bind(&run.reason)
                .bind(run.emergency as i64).bind(run.grace_ms).bind(now).bind(run.drill)
                .execute(&mut *tx).await?.rows_affected();
            if planned == 0 {
                return Err(StoreError::RunInFlight(id.clone()));
            }
            sqlx::query(sql::CLEAR_NEXT_DUE).bind(id).execute(&mut *tx).await?;
            append_audits!(&self.key, tx, now, &[super::requested(run, actor), asked(run, actor, reason)]);
            let claimed: RunRow = sqlx::query_as(sql::CLAIM_RUN)
                .bind(worker).bind(lease_until).bind(&run.id).bind(now)
                .fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(EmergencyStart::Planned(claimed))
        })
    }
}

impl Store {
    /// Starts the emergencies of many credentials in one write transaction (`rotor rotate
    /// --emergency` over many): each of `runs` whose credential is configured and has no live
    /// run is planned, its due time cleared, claimed for `worker` until `lease_until` and
    /// audited as `start_emergency` audits it. Returns each one's claimed run, in `runs`'
    /// order; `None` where the credential has a live run (or is not in the store):
    /// `start_emergency` interrupts that run, or says what is wrong. One transaction for many
    /// moves the audit head once, where each start of its own took the head's lock and waited
    /// for everyone else's commit.
    pub async fn start_emergencies(
        &self,
        runs: &[NewRun],
        actor: &str,
        reason: &str,
        worker: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<Vec<Option<RunRow>>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut started = Vec::with_capacity(runs.len());
            let mut audits = Vec::with_capacity(2 * runs.len());
            for run in runs {
                let planned = sqlx::query(sql::REQUEST_RUN_IF_CONFIGURED)
                    .bind(&run.id).bind(&run.credential_id).bind(&run.token).bind(&run.reason)
                    .bind(run.emergency as i64).bind(run.grace_ms).bind(now).bind(run.drill)
                    .execute(&mut *tx).await?.rows_affected();
                if planned == 0 {
                    started.push(None);
                    continue;
                }
                sqlx::query(sql::CLEAR_NEXT_DUE).bind(&run.credential_id).execute(&mut *tx).await?;
                let claimed: RunRow = sqlx::query_as(sql::CLAIM_RUN)
                    .bind(worker).bind(lease_until).bind(&run.id).bind(now)
                    .fetch_one(&mut *tx).await?;
                audits.push(super::requested(run, actor));
                audits.push(asked(run, actor, reason));
                started.push(Some(claimed));
            }
            // Last: the audit head's lock is held for its two statements and the commit.
            append_audits!(&self.key, tx, now, &audits);
            tx.commit().await?;
            Ok(started)
        })
    }
}

/// The audit entry of who asked for an emergency, and why.
fn asked(run: &NewRun, actor: &str, reason: &str) -> AuditEntry {
    AuditEntry::new(actor, "emergency")
        .credential(&run.credential_id)
        .run(&run.id)
        .detail(reason.to_owned())
}

/// How the start of an emergency rotation went.
#[derive(Debug)]
pub enum EmergencyStart {
    /// The credential's live run, interrupted: it is to be driven to rest first.
    Interrupted(RunRow),
    /// The emergency's own run, planned and claimed by the worker that asked.
    Planned(RunRow),
}

/// The audit entry of an interruption.
fn interrupted(run: &RunRow, interrupt: Interrupt, actor: &str, reason: &str) -> AuditEntry {
    let detail = format!(
        "{}: {} (now {}); {reason}",
        interrupt.as_str(),
        run.id,
        run.state
    );
    AuditEntry::new(actor, "interrupt")
        .credential(&run.credential_id)
        .run(&run.id)
        .detail(detail)
}

/// What a person found in the vault when closing a stuck run by hand: the version consumers
/// read, which the store records as the credential's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCurrent {
    pub version: String,
    pub fingerprint: String,
}

impl Store {
    /// Closes a stuck run a person repaired by hand: over (`completed` when it had promoted,
    /// `rolled_back` when its rollback was stuck) without any step, the credential's record set
    /// to what the vault holds now, audited with who and why. `None` when the run is not stuck.
    pub async fn close_by_hand(
        &self,
        run_id: &str,
        current: Option<&FoundCurrent>,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<RunRow>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let run: Option<RunRow> = sqlx::query_as(sql::CLOSE_BY_HAND)
                .bind(run_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(run) = &run {
                sqlx::query(sql::RECORD_REPAIRED_CREDENTIAL)
                    .bind(&run.credential_id)
                    .bind(current.map(|c| c.version.as_str()))
                    .bind(current.map(|c| c.fingerprint.as_str()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let detail = format!("{}: closed {} by hand; {reason}", Interrupt::ResolvedByHand.as_str(), run.state);
                append_audit!(&self.key, tx, now, &AuditEntry::new(actor, "interrupt").credential(&run.credential_id).run(&run.id).detail(detail));
            }
            tx.commit().await?;
            Ok(run)
        })
    }

    /// Pauses credential `id` until `until` (`None`: until `resume`), audited with who and
    /// why. Returns whether it is in the store (not removed).
    pub async fn pause(
        &self,
        id: &str,
        until: Option<i64>,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let paused = sqlx::query(sql::PAUSE_CREDENTIAL)
                .bind(id).bind(now).bind(until).bind(actor).bind(reason)
                .execute(&mut *tx).await?.rows_affected() > 0;
            if paused {
                let until = until.map_or("`rotor resume`".to_owned(), crate::clock::rfc3339);
                let detail = format!("paused until {until}; {reason}");
                append_audit!(&self.key, tx, now, &AuditEntry::new(actor, "pause").credential(id).detail(detail));
            }
            tx.commit().await?;
            Ok(paused)
        })
    }

    /// Ends the pause of credential `id`; its live run, if any, is ready at once. Returns
    /// whether it was paused.
    pub async fn resume(&self, id: &str, actor: &str, now: i64) -> Result<bool, StoreError> {
        let resumed = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let resumed = sqlx::query(sql::RESUME_CREDENTIAL)
                .bind(id).bind(now).execute(&mut *tx).await?.rows_affected() > 0;
            if resumed {
                sqlx::query(sql::WAKE_RESUMED_RUN).bind(id).bind(now).execute(&mut *tx).await?;
                append_audit!(&self.key, tx, now, &AuditEntry::new(actor, "resume").credential(id).detail("resumed"));
            }
            tx.commit().await?;
            resumed
        });
        if resumed {
            self.announce_work().await?;
        }
        Ok(resumed)
    }
}
