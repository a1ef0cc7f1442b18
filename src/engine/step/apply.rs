//! Apply: install the candidate at the provider beside the credential it replaces (nothing to
//! do for a credential that lives only in the vault).

use rotor_rotators::Rotator;

use crate::engine::error::StepError;
use crate::engine::{Ctx, Engine};
use crate::store::RunRow;

use super::{Known, Performed};

impl Engine {
    pub(super) async fn apply(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &mut Option<Known>,
    ) -> Result<Performed, StepError> {
        if ctx.rotator.vault_only() {
            return Ok(Performed::Done(None));
        }
        let held = self.known(ctx, run, known).await?;
        let replaced = held.replaced.as_ref().map(|r| &r.credential);
        ctx.rotator.apply(&held.candidate, replaced).await?;
        Ok(Performed::Done(None))
    }
}
