//! One file per step of the rollover. Each step takes the run and what this drive holds from
//! its earlier steps, performs its side effect idempotently for the run's token, and returns
//! what it came to (`Performed`); only the drive's `commit` writes that to the store.

mod apply;
mod mint;
mod promote;
mod retire;
mod rollback;
mod verify;

use rotor_rotators::{Credential, Rotator};

use crate::alert::Condition;
use crate::notify::{Event, EventKind, RetireAfter};
use crate::store::{CredentialUpdate, RunRow};
use crate::vault::{Previous, StoredVersion, Vault};

use super::error::{StepError, store_step_error};
use super::{Ctx, DRY_RUN, Engine, Target};
use crate::model::state::Step;

/// What a step's side effect came to.
pub(super) enum Performed {
    /// Done; the credential's row changes like this in the same commit as the run.
    Done(Option<CredentialUpdate>),
    /// Not finished: the same step runs again at this time (ms), from the durable timer.
    WaitUntil(i64),
}

/// What a step leaves for the drive to do before its commit: the outcome, and the events
/// consumers hear of (queued before the commit, keyed by run and kind, so a repeated step
/// queues nothing twice).
pub(super) struct Outcome {
    performed: Performed,
    events: Vec<Event>,
}

impl From<Performed> for Outcome {
    fn from(performed: Performed) -> Self {
        Outcome {
            performed,
            events: Vec::new(),
        }
    }
}

/// What a drive of a run holds from its own earlier steps: the candidate it stored, the
/// version that candidate replaces and, once promoted, the candidate's version. A provider's
/// apply, verify, promotion and retire in the same drive use them instead of asking the vault
/// again (nothing else writes the path while the run is live, and the vault's check-and-set
/// catches anyone who did); a drive resumed after a crash or a wait reads them back.
pub(super) struct Known {
    candidate: Credential,
    replaced: Option<StoredVersion>,
    promoted: Option<String>,
}

impl Engine {
    /// The side effect of one step, and what it tells consumers.
    pub(super) async fn perform(
        &self,
        ctx: &Ctx<'_>,
        step: Step,
        run: &mut RunRow,
        known: &mut Option<Known>,
    ) -> Result<Performed, StepError> {
        if let Some(disturbance) = &self.disturbance
            && let Some(failure) = disturbance.replaces(&Target::of(ctx, run), step)
        {
            return Err(failure);
        }
        if run.drill.as_deref() == Some(DRY_RUN)
            && matches!(step, Step::Apply | Step::Verify)
            && ctx.rotator.apply_disturbs_current()
        {
            tracing::info!(step = %step, "dry run: skipped, applying would change what consumers use");
            return Ok(Performed::Done(None));
        }
        let outcome = match step {
            Step::Mint => self.mint(ctx, run, known).await?.into(),
            Step::Apply => self.apply(ctx, run, known).await?.into(),
            Step::Verify => self.verify(ctx, run, known).await?.into(),
            Step::Promote => self.promote(ctx, run, known).await?,
            Step::Grace => Performed::Done(None).into(),
            Step::Retire => self.retire(ctx, run, known).await?,
            Step::Rollback => self.roll_back(ctx, run).await?.into(),
        };
        let now = self.now();
        for event in &outcome.events {
            ctx.runtime
                .notifier
                .queue(&self.store, &ctx.credential.notify, event, now)
                .await
                .map_err(store_step_error)?;
        }
        // A completed rotation puts every failure right; a rollback that finished only the
        // retrying it needed (its own failure stays raised).
        let resolves: Vec<Condition> = match step {
            // The users of an old credential retired while they still used it are not put
            // right by its retirement: that alert stays for people.
            Step::Retire if crate::engine::PreviousUsage::of(run).retired_in_use => {
                Condition::RESOLVED_BY_ROTATION
                    .iter()
                    .copied()
                    .filter(|c| *c != Condition::StillUsed)
                    .collect()
            }
            Step::Retire => Condition::RESOLVED_BY_ROTATION.to_vec(),
            Step::Rollback => vec![Condition::Retrying],
            _ => Vec::new(),
        };
        if !resolves.is_empty() && matches!(outcome.performed, Performed::Done(_)) {
            ctx.runtime
                .alerter
                .resolve(
                    &self.store,
                    &ctx.credential.id,
                    &resolves,
                    &ctx.credential.alerts,
                    now,
                )
                .await
                .map_err(store_step_error)?;
        }
        Ok(outcome.performed)
    }

    /// The event hooks hear of a run's promotion or retirement.
    fn event(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        kind: EventKind,
        version: Option<String>,
        now: i64,
    ) -> Event {
        let fingerprint = |f: &Option<String>| f.as_deref().map(crate::fingerprint::shown);
        Event {
            event: kind,
            credential_id: ctx.credential.id.clone(),
            provider: ctx.credential.provider().to_owned(),
            vault: ctx.credential.vault.clone(),
            vault_path: ctx.credential.vault_path.clone(),
            version,
            fingerprint: fingerprint(&run.pending_fingerprint),
            previous_version: run.replaced_version.clone(),
            previous_fingerprint: fingerprint(&run.replaced_fingerprint),
            run_id: run.id.clone(),
            occurred_at: crate::clock::rfc3339(now),
        }
    }

    /// The pending version this run stored, read back from the vault.
    async fn own_pending(&self, ctx: &Ctx<'_>, run: &RunRow) -> Result<Credential, StepError> {
        match ctx.vault.read_pending(&ctx.credential.vault_path).await? {
            Some(p) if p.token.as_deref() == Some(run.token.as_str()) => Ok(p.credential),
            _ => Err(StepError::permanent(format!(
                "the pending version of this run is gone from vault {} path {}; the run rolls back",
                ctx.vault.name(),
                ctx.credential.vault_path
            ))),
        }
    }

    /// What this drive holds of its candidate, read back from the vault when a resumed drive
    /// does not hold it yet.
    async fn known<'k>(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &'k mut Option<Known>,
    ) -> Result<&'k mut Known, StepError> {
        if known.is_none() {
            *known = Some(Known {
                candidate: self.own_pending(ctx, run).await?,
                replaced: ctx
                    .vault
                    .read_current(&ctx.credential.vault_path)
                    .await?
                    .map(|d| d.current),
                promoted: None,
            });
        }
        Ok(known.as_mut().expect("set above"))
    }
}

/// Whether the document this run promotes keeps the version it replaces as `previous`. It
/// does, unless the credential lives only in the vault and is retired as soon as it is
/// promoted (no grace, no hooks to wait for): then nobody reads it, and dropping it at
/// retirement would rewrite the document a moment after promotion wrote it. A provider's
/// credential keeps it even so: a retirement resumed after a crash reads the old credential
/// there to retire it at the provider.
fn previous_kept(ctx: &Ctx<'_>, run: &RunRow) -> Previous {
    if ctx.rotator.vault_only()
        && run.grace_ms == 0
        && ctx.credential.retire_after != RetireAfter::Notified
    {
        Previous::Omitted
    } else {
        Previous::Kept
    }
}
