//! Retire: consumers have switched over (grace is past), so the credential the candidate
//! replaced is removed at the provider and dropped from the vault's document.

use rotor_rotators::{Credential, Retired, Rotator};

use crate::engine::error::{StepError, store_step_error};
use crate::engine::{Ctx, Engine};
use crate::notify::EventKind;
use crate::store::{CredentialUpdate, RunRow};
use crate::vault::Vault;

use super::{Known, Outcome, Performed};

impl Engine {
    pub(super) async fn retire(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &mut Option<Known>,
    ) -> Result<Outcome, StepError> {
        let held = known.take();
        let promoted = held.as_ref().and_then(|h| h.promoted.clone());
        let pair = self.current_and_previous(ctx, held).await?;
        if let Some((current, _)) = &pair {
            ctx.rotator.switch_over(current).await?;
        }
        let retired = match &pair {
            Some((current, Some(previous))) => {
                self.retire_previous(ctx, run, previous, current).await?
            }
            // Adopted: what the provider held before rotor's first version.
            Some((current, None)) if run.replaced_version.is_none() => {
                ctx.rotator
                    .retire_unissued(current, run.emergency != 0)
                    .await?
            }
            _ => Retired::Done,
        };
        if let Retired::Again(after) = retired {
            // A second stage is due later (an IAM key is deleted after `delete_after`): the
            // previous version stays until it is done.
            return Ok(Performed::WaitUntil(self.now() + after.as_millis() as i64).into());
        }
        // A versioned vault writes a new version without `previous`: record it, or the next
        // rotation would take it for an out-of-band change.
        let path = ctx.credential.vault_path.as_str();
        let current_version = match (&promoted, &pair) {
            (Some(promoted), Some((current, _))) => {
                ctx.vault
                    .drop_previous_held(path, &run.token, promoted, current)
                    .await?
            }
            _ if pair.is_some() || ctx.rotator.vault_only() => {
                ctx.vault.drop_previous(path, &run.token).await?
            }
            _ => None,
        };
        let now = self.now();
        // A first version replaced nothing: there is no retirement to tell of.
        let mut events = Vec::new();
        if run.replaced_version.is_some() && !ctx.credential.notify.is_empty() {
            let version = match &current_version {
                Some(v) => Some(v.clone()),
                None => self
                    .store
                    .credential(&ctx.credential.id)
                    .await
                    .map_err(store_step_error)?
                    .and_then(|c| c.current_version),
            };
            events.push(self.event(ctx, run, EventKind::Retired, version, now));
        }
        let update = CredentialUpdate {
            current_version,
            last_success_at: Some(now),
            last_error: Some(None),
            failure: Some(false),
            ..Default::default()
        };
        Ok(Outcome {
            performed: Performed::Done(Some(update)),
            events,
        })
    }

    /// An emergency presumes the previous credential exposed: nothing of it is kept for later.
    async fn retire_previous(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        previous: &Credential,
        current: &Credential,
    ) -> Result<Retired, StepError> {
        Ok(if run.emergency != 0 {
            ctx.rotator.retire_at_once(previous, Some(current)).await?
        } else {
            ctx.rotator.retire(previous, Some(current)).await?
        })
    }

    /// The current credential and the one it replaced, as the provider must see them. Nothing
    /// at a provider to switch or retire needs no read of the vault; in the drive that
    /// promoted, the current credential is the candidate and the previous one the credential
    /// it replaced.
    async fn current_and_previous(
        &self,
        ctx: &Ctx<'_>,
        held: Option<Known>,
    ) -> Result<Option<(Credential, Option<Credential>)>, StepError> {
        if ctx.rotator.vault_only() {
            return Ok(None);
        }
        Ok(match held {
            Some(held) => Some((held.candidate, held.replaced.map(|r| r.credential))),
            None => ctx
                .vault
                .read_current(&ctx.credential.vault_path)
                .await?
                .map(|d| (d.current.credential, d.previous.map(|p| p.credential))),
        })
    }
}
