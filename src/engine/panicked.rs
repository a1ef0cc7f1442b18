//! A step that panicked (a bug in rotor, or in a provider's library) fails its run as a
//! permanent error would: rolled back before promotion, stuck after, with an alert naming the
//! credential. The other runs of the process never notice.

use std::any::Any;

use super::drive::next_transition;
use super::{Ctx, Driven, Engine, EngineError, StepError};
use crate::store::RunRow;

/// What the drive does once the panic is recorded.
pub(super) enum Then {
    /// Go on from the failure state the run is in now (its rollback).
    Drive(Box<RunRow>),
    /// Stop driving: the run is stuck, waiting for a person.
    Stop(Driven),
}

/// The panic's message, as `panic!` formatted it.
pub(super) fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Engine {
    /// Records the panic of the run's step in hand as that step's permanent failure. The run
    /// is read back from the store: what the panicking drive held in memory is gone.
    pub(super) async fn after_panic(
        &self,
        ctx: &Ctx<'_>,
        run_id: &str,
        message: String,
    ) -> Result<Then, EngineError> {
        tracing::error!(panic = %message, "a step panicked; its run fails as on a permanent error");
        let left = || EngineError::Panicked {
            credential: ctx.credential.id.clone(),
            run_id: run_id.to_owned(),
            message: message.clone(),
        };
        let Some(mut run) = self.store.run(run_id).await? else {
            return Err(left());
        };
        let state = run.state();
        // A run this worker no longer holds is someone else's to fail or resume.
        let held = run.lease_owner.as_deref() == Some(self.worker.as_str());
        let Some(transition) = next_transition(&run, state).filter(|_| held) else {
            return Err(left());
        };
        let now = self.now();
        let open = self
            .store
            .steps(run_id)
            .await?
            .into_iter()
            .filter(|s| s.finished_at.is_none() && s.step == transition.step.as_str())
            .map(|s| s.seq)
            .max();
        let seq = match open {
            Some(seq) => seq,
            None => {
                self.store
                    .begin_step(
                        &run,
                        transition.step.as_str(),
                        &self.worker,
                        now,
                        ctx.durability_before(transition.step),
                    )
                    .await?
                    .seq
            }
        };
        let error = StepError::permanent(format!(
            "rotor panicked ({message}): a bug in rotor or in the provider's library; report it \
             with this run's log"
        ));
        let failed = self
            .fail(ctx, &mut run, transition.step, seq, error)
            .await?;
        Ok(match failed {
            Some(driven) => Then::Stop(driven),
            None => Then::Drive(Box::new(run)),
        })
    }
}
