//! A failed step: retried after a backoff while its class allows, else the run moves to its
//! failure state (rolling back, or stuck after promotion) and an alert is raised.

use rotor_rotators::ErrorClass;

use crate::alert::{Alert, Condition};
use crate::model::state::{RunState, Step};
use crate::store::{CredentialUpdate, RunRow, StepEnd, Then};

use super::drive::Commit;
use super::error::{EngineError, StepError};
use super::{Ctx, Driven, Engine};

impl Engine {
    /// Handles a failed step. Returns `Some` when the run must stop being driven now.
    pub(super) async fn fail(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        step: Step,
        seq: i64,
        error: StepError,
    ) -> Result<Option<Driven>, EngineError> {
        let attempt = run.attempts + 1;
        let message = format!("{step} failed (attempt {attempt}): {}", error.message);
        let retry = &ctx.credential.retry;
        let within_budget = retry.delay(attempt as u32);
        let retry_in = match error.class {
            ErrorClass::Transient => within_budget
                .or_else(|| keeps_retrying(run).then(|| retry.delay_past_budget()))
                // Never sooner than the provider asked (a rate limit's reset).
                .map(|d| d.max(error.retry_after.unwrap_or_default())),
            _ => None,
        };
        run.last_error = Some(message.clone());
        run.error_class = Some(error.class.as_str().to_owned());
        if let Some(delay) = retry_in {
            tracing::warn!(step = %step, attempt, retry_in_ms = delay.as_millis() as u64, error = %error.message, "step failed; will retry");
            if within_budget.is_none() {
                self.raise_retrying(ctx, run, step, attempt, delay, &message)
                    .await?;
            }
            return self
                .retry_later(run, step, seq, message, delay)
                .await
                .map(Some);
        }
        let from = run.state();
        let to = self
            .give_up(run, step, seq, &error, message.clone())
            .await?;
        let failed = Failed {
            from,
            to,
            step,
            attempt,
        };
        let alert = failure_alert(ctx, run, &failed, &error, message);
        ctx.runtime
            .alerter
            .raise(&self.store, &alert, &ctx.credential.alerts, self.now())
            .await?;
        let audit = self
            .audit(run, "alert")
            .detail(format!("{} at {step}", alert.condition.as_str()));
        self.store.audit(&audit, self.now()).await?;
        Ok((to == RunState::Stuck).then_some(Driven::Finished(RunState::Stuck)))
    }

    /// The alert of a run that keeps retrying past its budget (raised once; the run's
    /// completion resolves it).
    async fn raise_retrying(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        step: Step,
        attempt: i64,
        delay: std::time::Duration,
        cause: &str,
    ) -> Result<(), EngineError> {
        let id = &ctx.credential.id;
        let alert = Alert {
            credential_id: id.clone(),
            provider: ctx.credential.provider().to_owned(),
            condition: Condition::Retrying,
            step: step.as_str().to_owned(),
            attempt,
            run_id: run.id.clone(),
            cause: cause.to_owned(),
            action: format!(
                "nothing is needed for it to heal: rotor retries {step} about every {} until it \
                 succeeds, then resolves this alert (`rotor status {id}` shows the next attempt); \
                 fixing the cause sooner speeds it up",
                crate::config::Duration::from_secs(ctx.credential.retry.max.as_secs().max(1))
            ),
            raised_at: String::new(),
        };
        let detail = format!("{} at {step}", Condition::Retrying.as_str());
        if self.raise_once(ctx, run, &alert, detail).await? {
            tracing::error!(step = %step, attempt, retry_in_ms = delay.as_millis() as u64, "retries exhausted after promotion; retrying at the cap until it heals");
        }
        Ok(())
    }

    /// Raises `alert` on the credential's routes and, when it was not raised already, audits
    /// it with `detail`. Returns whether it was newly raised.
    pub(super) async fn raise_once(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        alert: &Alert,
        detail: String,
    ) -> Result<bool, EngineError> {
        let raised = ctx
            .runtime
            .alerter
            .raise(&self.store, alert, &ctx.credential.alerts, self.now())
            .await?;
        if raised {
            let audit = self.audit(run, "alert").detail(detail);
            self.store.audit(&audit, self.now()).await?;
        }
        Ok(raised)
    }

    /// The same step again after `delay`, from the durable timer.
    async fn retry_later(
        &self,
        run: &mut RunRow,
        step: Step,
        seq: i64,
        message: String,
        delay: std::time::Duration,
    ) -> Result<Driven, EngineError> {
        let from = run.state();
        run.attempts += 1;
        run.wait_until(self.now() + delay.as_millis() as i64);
        let audit = self
            .audit(run, step.as_str())
            .detail(format!("retry: {message}"));
        let end = StepEnd {
            seq,
            outcome: "retry",
            error: Some(message),
        };
        self.commit(run, Commit::plain(from, Some(end), audit))
            .await?;
        Ok(Driven::Waiting(run.not_before))
    }

    /// The run leaves for its failure state; returns that state.
    async fn give_up(
        &self,
        run: &mut RunRow,
        step: Step,
        seq: i64,
        error: &StepError,
        message: String,
    ) -> Result<RunState, EngineError> {
        let from = run.state();
        let to = from.on_failure();
        let exhausted = error.class == ErrorClass::Transient;
        // A drill's failure is the drill's, not the credential's.
        let mut update = CredentialUpdate {
            last_error: run.drill.is_none().then(|| Some(message.clone())),
            ..Default::default()
        };
        run.set_state(to);
        run.attempts = 0;
        if to == RunState::Stuck {
            run.stuck_from = Some(from);
            run.lease_owner = None;
            run.lease_until = None;
            update.failure = Some(true);
        }
        tracing::error!(step = %step, state = %to, error = %error.message, exhausted, "step failed");
        let commit = Commit {
            from,
            audit: self
                .audit(run, step.as_str())
                .detail(format!("{from} -> {to}: {message}")),
            end: Some(StepEnd {
                seq,
                outcome: "failed",
                error: Some(message),
            }),
            update: Some(&update),
            then: Then::default(),
        };
        self.commit(run, commit).await?;
        Ok(to)
    }
}

/// Whether a transient failure past the retry budget keeps the run retrying rather than
/// giving up. Giving up after promotion (or in a rollback) leaves the run stuck for a person,
/// so there a cause that heals by itself is waited out; before promotion giving up rolls back,
/// which loses nothing. A drill's run gives up: the person drilling is watching it.
fn keeps_retrying(run: &RunRow) -> bool {
    run.drill.is_none() && run.state().on_failure() == RunState::Stuck
}

/// Where a run failed: the step and its attempt, the state it left and the one it entered.
struct Failed {
    from: RunState,
    to: RunState,
    step: Step,
    attempt: i64,
}

/// The alert of a failed run, with what the operator does next.
fn failure_alert(
    ctx: &Ctx<'_>,
    run: &RunRow,
    failed: &Failed,
    error: &StepError,
    cause: String,
) -> Alert {
    let Failed {
        from,
        to,
        step,
        attempt,
    } = *failed;
    let condition = match (error.class, to) {
        (ErrorClass::Conflict, _) => Condition::Conflict,
        (_, RunState::Stuck) => Condition::Stuck,
        (ErrorClass::Transient, _) => Condition::RetriesExhausted,
        _ => Condition::RolledBack,
    };
    let id = &ctx.credential.id;
    let action = match to {
        RunState::Stuck if from == RunState::RollingBack => format!(
            "the rollback could not finish: consumers still read the current credential, but the \
             candidate may still be installed at the provider; fix the cause, then `rotor rotate {id}` \
             resumes the rollback"
        ),
        RunState::Stuck => format!(
            "the new credential is live; fix the cause, then `rotor rotate {id}` resumes the run from {from}"
        ),
        _ => "the current credential is untouched and the candidate is being removed; fix the cause, \
              the next scheduled attempt (or `rotor rotate`) tries again"
            .to_owned(),
    };
    Alert {
        credential_id: id.clone(),
        provider: ctx.credential.provider().to_owned(),
        condition,
        step: step.as_str().to_owned(),
        attempt,
        run_id: run.id.clone(),
        cause,
        action,
        raised_at: String::new(),
    }
}
