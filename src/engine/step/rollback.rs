//! Roll back: the candidate this run stored is removed at the provider and from the vault,
//! the credential it would have replaced stays current, and the next attempt is scheduled.

use rotor_rotators::Rotator;

use crate::engine::error::{StepError, store_step_error};
use crate::engine::{Ctx, Engine};
use crate::store::{CredentialUpdate, RunRow};
use crate::vault::Vault;

use super::Performed;

impl Engine {
    pub(super) async fn roll_back(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
    ) -> Result<Performed, StepError> {
        let path = ctx.credential.vault_path.as_str();
        if let Some(pending) = ctx.vault.read_pending(path).await?
            && pending.token.as_deref() == Some(run.token.as_str())
        {
            let current = ctx.vault.read_current(path).await?;
            ctx.rotator
                .rollback(
                    &pending.credential,
                    current.as_ref().map(|d| &d.current.credential),
                )
                .await?;
            ctx.vault.discard_pending(path, &run.token).await?;
        }
        let now = self.now();
        let recorded = self
            .store
            .credential(&ctx.credential.id)
            .await
            .map_err(store_step_error)?;
        if run.drill.is_some() || run.interrupt.is_some() {
            // A drill's run, or one a person stopped, is not the credential's failure: its
            // schedule stands.
            let since = recorded.and_then(|c| c.current_since);
            let due = ctx.credential.schedule.next_due(
                &ctx.credential.id,
                since.map(crate::clock::to_datetime),
                crate::clock::to_datetime(now),
            );
            return Ok(Performed::Done(Some(CredentialUpdate {
                next_due_at: Some(due.map(|d| d.at.timestamp_millis())),
                due_reason: Some(due.map_or("manual", |d| d.reason.as_str()).to_owned()),
                ..Default::default()
            })));
        }
        let failures = recorded.map_or(0, |c| c.consecutive_failures) + 1;
        let retry_at = ctx.credential.schedule.retry_after_failure(
            failures,
            ctx.credential.retry.max,
            crate::clock::to_datetime(now),
        );
        Ok(Performed::Done(Some(CredentialUpdate {
            failure: Some(true),
            next_due_at: Some(Some(retry_at.timestamp_millis())),
            due_reason: Some("schedule".into()),
            ..Default::default()
        })))
    }
}
