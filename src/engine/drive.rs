//! The drive: the run's steps one after the other, each begun in the store before it runs
//! and committed after, until the run finishes, waits for a timer, or the worker stops.

use std::sync::atomic::Ordering;

use tracing::Instrument;

use crate::model::state::{self, RunState, Step};
use crate::notify::{EventKind, RetireAfter};
use crate::store::{
    AuditEntry, Begun, CredentialUpdate, Durability, Pause, RunRow, StepEnd, StoreError, Then,
};

use super::error::{EngineError, StepError};
use super::step::{Known, Performed};
use super::{Ctx, DRY_RUN, Driven, Engine};
use rotor_rotators::Rotator;

/// A run paused until `rotor resume` looks at its pause again this often: `resume` wakes it
/// at once, this is only the bound should that wake-up be lost.
const PAUSED_LOOK_AGAIN_MS: i64 = 3_600_000;

/// What one commit saves beside the run: the end of its step, the credential's change, the
/// audit entry, and the steps passed and begun with it.
pub(super) struct Commit<'a> {
    pub(super) from: RunState,
    pub(super) end: Option<StepEnd>,
    pub(super) update: Option<&'a CredentialUpdate>,
    pub(super) audit: AuditEntry,
    pub(super) then: Then<'a>,
}

impl Engine {
    pub(super) async fn drive_steps(
        &self,
        ctx: &Ctx<'_>,
        mut run: RunRow,
    ) -> Result<Driven, EngineError> {
        // A step whose start was already recorded by the previous step's save.
        let mut begun: Option<(Step, Begun)> = None;
        let mut known: Option<Known> = None;
        loop {
            let state = run.state();
            let Some(transition) = next_transition(&run, state) else {
                // The save that ended the run gave its lease up already.
                if run.lease_owner.is_some() {
                    self.store.release(&run.id, &self.worker).await?;
                }
                return Ok(Driven::Finished(state));
            };
            if self.stopping.load(Ordering::SeqCst) {
                self.store.release(&run.id, &self.worker).await?;
                return Ok(Driven::Stopped);
            }
            if transition.step == Step::Grace
                && let Some(driven) = self.wait_out_grace(ctx, &mut run).await?
            {
                return Ok(driven);
            }
            let step = transition.step;
            let Begun { seq, pause } = match begun.take() {
                Some((begun_step, begun)) if begun_step == step => begun,
                _ => {
                    let now = self.now();
                    self.store
                        .begin_step(
                            &run,
                            step.as_str(),
                            &self.worker,
                            now,
                            ctx.durability_before(step),
                        )
                        .await?
                }
            };
            if let Some(until) = self.paused_until(&run, pause) {
                return self.wait_while_paused(&mut run, seq, until).await;
            }
            self.point(ctx, &run, step, "before").await?;
            // An emergency does not queue behind the provider's rate limit (its hard limits,
            // such as IAM's two keys per user, still hold).
            if run.emergency == 0 {
                self.rate_limit(ctx, step).await?;
            }
            // A worker that was paused past its lease must not act on a run another took over
            // (its save would be refused, but a side effect would not).
            if !self.holds_lease(ctx, &run).await? {
                return Err(EngineError::Store(StoreError::LeaseLost {
                    run_id: run.id.clone(),
                    expected: state.as_str(),
                }));
            }
            tracing::debug!(step = %step, attempt = run.attempts + 1, "step starts");
            let span = tracing::info_span!(
                "step",
                step = %step,
                attempt = run.attempts + 1,
                credential = %ctx.credential.id,
                run = %run.id,
                provider = ctx.credential.provider(),
            );
            let result = self
                .perform(ctx, step, &mut run, &mut known)
                .instrument(span)
                .await;
            self.point(ctx, &run, step, "effect").await?;
            let mut passed = None;
            match result {
                Ok(Performed::WaitUntil(until)) => {
                    return self.commit_wait(&mut run, step, seq, until).await;
                }
                Ok(Performed::Done(update)) => {
                    let (next, passed_step) = self
                        .commit_done(ctx, &mut run, transition, seq, update)
                        .await?;
                    begun = next;
                    passed = passed_step;
                }
                Err(StepError {
                    abandon: Some(e), ..
                }) => {
                    tracing::warn!(step = %step, error = %e, "run abandoned mid-step; it resumes from this step when claimed again");
                    return Err(EngineError::Store(*e));
                }
                Err(error) => {
                    if let Some(driven) = self.fail(ctx, &mut run, step, seq, error).await? {
                        return Ok(driven);
                    }
                }
            }
            self.point(ctx, &run, step, "after").await?;
            // Crash points stay where a step runs, though a passed step's record was saved
            // with the step before it: a crash at any of them is one right after that save.
            if let Some(step) = passed {
                for when in ["before", "effect", "after"] {
                    self.point(ctx, &run, step, when).await?;
                }
            }
        }
    }

    /// When the credential's pause ends (`rotor pause`), if it is paused as the start of the
    /// run's next step found it: its run finished the step in flight and goes no further. An
    /// emergency, and a drill a person is running, go on through a pause: they are the newer
    /// word.
    fn paused_until(&self, run: &RunRow, pause: Pause) -> Option<i64> {
        if run.emergency != 0 || run.drill.is_some() {
            return None;
        }
        let now = self.now();
        pause
            .is_paused(now)
            .then(|| pause.paused_until.unwrap_or(now + PAUSED_LOOK_AGAIN_MS))
    }

    /// A paused run waits, unleased, until the pause ends (or `rotor resume` wakes it); the
    /// step begun (`seq`) ends without running.
    async fn wait_while_paused(
        &self,
        run: &mut RunRow,
        seq: i64,
        until: i64,
    ) -> Result<Driven, EngineError> {
        let from = run.state();
        run.wait_until(until);
        let step = next_step(run).map_or("", Step::as_str);
        let audit = self.audit(run, "paused").detail(format!(
            "{from}: waits before {step} until {}",
            crate::clock::rfc3339(until)
        ));
        let end = StepEnd {
            seq,
            outcome: "waiting",
            error: None,
        };
        self.commit(run, Commit::plain(from, Some(end), audit))
            .await?;
        tracing::info!(state = %from, until = %crate::clock::rfc3339(until), "credential paused: the run waits");
        Ok(Driven::Waiting(until))
    }

    /// Grace that has not ended (its timer, or the hooks a `retire_after = "notified"` run
    /// waits for) gives the run back to the durable timer: the wake-up time is in the store,
    /// not in this process.
    async fn wait_out_grace(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
    ) -> Result<Option<Driven>, EngineError> {
        if run.drill.is_some() {
            // A drill's report says who used the previous credential during its grace.
            self.observe_usage(ctx, run).await;
        }
        let now = self.now();
        let notified = || async {
            Ok::<_, StoreError>(
                ctx.credential.retire_after == RetireAfter::Notified
                    && self
                        .store
                        .notifications_settled(&run.id, EventKind::Promoted.as_str())
                        .await?,
            )
        };
        if let (Some(gate), Some(until)) = (self.usage_gate(ctx, run), run.grace_until) {
            return self.wait_for_disuse(ctx, run, gate, until).await;
        }
        let Some(until) = run.grace_until.filter(|&until| until > now) else {
            return Ok(None);
        };
        if notified().await? {
            return Ok(None);
        }
        let from = run.state();
        // Field by field: `notified` still borrows the run's id.
        run.not_before = until;
        run.lease_owner = None;
        run.lease_until = None;
        let audit = self
            .audit(run, "grace_wait")
            .detail(format!("grace until {}", crate::clock::rfc3339(until)));
        self.commit(run, Commit::plain(from, None, audit)).await?;
        // The last hook may have succeeded between the check and the save, and its wake-up
        // found the run still leased: look once more, now that it is saved.
        if notified().await? && self.store.wake_promoted_run(&run.id, now).await? {
            return Ok(Some(Driven::Waiting(now)));
        }
        Ok(Some(Driven::Waiting(until)))
    }

    /// A step that is not finished yet: the run waits for its timer, unleased.
    async fn commit_wait(
        &self,
        run: &mut RunRow,
        step: Step,
        seq: i64,
        until: i64,
    ) -> Result<Driven, EngineError> {
        let from = run.state();
        run.wait_until(until);
        let audit = self
            .audit(run, step.as_str())
            .detail(format!("{from}: again at {}", crate::clock::rfc3339(until)));
        let end = StepEnd {
            seq,
            outcome: "waiting",
            error: None,
        };
        self.commit(run, Commit::plain(from, Some(end), audit))
            .await?;
        tracing::info!(step = %step, until = %crate::clock::rfc3339(until), "step waits");
        Ok(Driven::Waiting(until))
    }

    /// A step that is done: the run moves on, passing a next step with nothing to do and
    /// beginning the one that runs right away in the same commit. Returns the step begun (with
    /// its start's record) and the step passed.
    async fn commit_done(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        transition: state::Transition,
        seq: i64,
        update: Option<CredentialUpdate>,
    ) -> Result<(Option<(Step, Begun)>, Option<Step>), EngineError> {
        let now = self.now();
        let from = run.state();
        run.set_state(transition.to);
        run.attempts = 0;
        run.last_error = None;
        run.error_class = None;
        // Begin the next step in the same commit when it runs right away: not a grace that
        // waits for its timer or for hooks, not when the worker stops.
        let grace_over = run.grace_until.is_some_and(|until| until <= now)
            && ctx.credential.retire_after != RetireAfter::Notified
            && self.usage_gate(ctx, run).is_none();
        let runs_now = |t: &state::Transition| {
            (t.step != Step::Grace || grace_over) && !self.stopping.load(Ordering::SeqCst)
        };
        let mut next = next_transition(run, transition.to).filter(runs_now);
        // A next step with nothing to do passes in this commit too, and the one after it
        // begins there.
        let passed = next.filter(|t| nothing_to_do(ctx, run, t.step));
        let mut detail = format!("{from} -> {}", transition.to);
        // The audit names every credential value retired, by fingerprint.
        if transition.step == Step::Retire
            && let Some(retired) = &run.replaced_fingerprint
        {
            detail.push_str(&format!(", retired {}", crate::fingerprint::shown(retired)));
        }
        if let Some(p) = passed {
            run.set_state(p.to);
            next = next_transition(run, p.to).filter(runs_now);
            detail.push_str(&format!(", {} (nothing to do) -> {}", p.step, p.to));
        }
        if run.state().is_terminal() {
            run.finished_at = Some(now);
            run.lease_owner = None;
            run.lease_until = None;
        }
        let commit = Commit {
            from,
            end: Some(StepEnd {
                seq,
                outcome: "ok",
                error: None,
            }),
            update: update.as_ref(),
            audit: self.audit(run, transition.step.as_str()).detail(detail),
            then: Then {
                passed: passed.map(|p| p.step.as_str()),
                begin: next.map(|t| t.step.as_str()),
                durability: next.map_or(Durability::Deferred, |t| ctx.durability_before(t.step)),
            },
        };
        let next_begun = self.commit(run, commit).await?;
        tracing::info!(step = %transition.step, state = %transition.to, "step done");
        if let Some(p) = passed {
            tracing::info!(step = %p.step, state = %p.to, "step done: nothing to do");
        }
        Ok((
            next.zip(next_begun).map(|(t, begun)| (t.step, begun)),
            passed.map(|p| p.step),
        ))
    }

    /// The one way a step's outcome reaches the store: the run, compare-and-swapped on the
    /// state it left and this worker's lease, with everything in `commit` in one transaction.
    /// Returns the start of the step begun with it, if any.
    pub(super) async fn commit(
        &self,
        run: &RunRow,
        commit: Commit<'_>,
    ) -> Result<Option<Begun>, StoreError> {
        self.store
            .save_run(
                run,
                commit.from,
                &self.worker,
                commit.end.as_ref(),
                commit.update,
                &commit.audit,
                self.now(),
                commit.then,
            )
            .await
    }
}

impl Commit<'_> {
    /// A commit that changes nothing beside the run and begins no step.
    pub(super) fn plain(from: RunState, end: Option<StepEnd>, audit: AuditEntry) -> Self {
        Commit {
            from,
            end,
            update: None,
            audit,
            then: Then::default(),
        }
    }
}

/// Whether `step` would do nothing at all in this run, so that it passes in the save of the
/// step before it (`Then::passed`): a vault-only credential's apply (nothing at a provider) and
/// a grace already over (its timer elapsed, nothing to wait for). A drill's run performs each
/// step, so that a fault it injects hits the step it names.
fn nothing_to_do(ctx: &Ctx<'_>, run: &RunRow, step: Step) -> bool {
    run.drill.is_none()
        && match step {
            Step::Apply => ctx.rotator.vault_only(),
            Step::Grace => true,
            _ => false,
        }
}

/// The step this run takes next, if any.
pub fn next_step(run: &RunRow) -> Option<Step> {
    next_transition(run, run.state()).map(|t| t.step)
}

/// The step that leaves `state` for this run: the state machine's, except that a dry-run
/// drill discards the verified candidate instead of promoting it.
pub(super) fn next_transition(run: &RunRow, state: RunState) -> Option<state::Transition> {
    match state.next() {
        Some(t) if t.step == Step::Promote && run.drill.as_deref() == Some(DRY_RUN) => {
            Some(state::Transition {
                from: state,
                step: Step::Rollback,
                to: RunState::RolledBack,
            })
        }
        other => other,
    }
}
