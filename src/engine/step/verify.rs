//! Verify: the candidate really authenticates, and it is the one this run stored.

use rotor_rotators::Rotator;

use crate::engine::error::StepError;
use crate::engine::{Ctx, Engine};
use crate::store::RunRow;
use crate::vault::Vault;

use super::{Known, Performed};

impl Engine {
    pub(super) async fn verify(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &mut Option<Known>,
    ) -> Result<Performed, StepError> {
        // A vault-only credential's check is of what the vault gives back; a provider's is a
        // login with what this drive stored, or with what a resumed one reads.
        let read_back;
        let candidate = match known.as_ref() {
            Some(held) => &held.candidate,
            None => {
                read_back = self.own_pending(ctx, run).await?;
                &read_back
            }
        };
        let fingerprint = self.store.fingerprint_key().of(&candidate.fingerprint());
        if Some(&fingerprint) != run.pending_fingerprint.as_ref() {
            return Err(StepError::permanent(format!(
                "the pending version read back from vault {} path {} is not the one rotor stored \
                 (fingerprint differs)",
                ctx.vault.name(),
                ctx.credential.vault_path
            )));
        }
        if !self
            .disturbance
            .as_ref()
            .is_some_and(|d| d.skips_verification())
        {
            ctx.rotator.verify(candidate).await?;
        }
        Ok(Performed::Done(None))
    }
}
