//! Promote: the verified candidate becomes the vault's current version, the credential's
//! next rotation counts from now, and consumers are told.

use rotor_rotators::Rotator;

use crate::engine::error::StepError;
use crate::engine::{Ctx, Engine};
use crate::notify::EventKind;
use crate::store::{CredentialUpdate, RunRow};
use crate::vault::{Held, Vault, Verified};

use super::{Known, Outcome, Performed, previous_kept};

impl Engine {
    pub(super) async fn promote(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        known: &mut Option<Known>,
    ) -> Result<Outcome, StepError> {
        // A first version replaced nothing of rotor's; what the provider held before rotor
        // adopted the credential is retired after the grace like a previous version, since
        // consumers may still use it. Asked before promotion: a promoted run must not fail on it.
        let adopts = run.replaced_version.is_none()
            && !ctx.rotator.vault_only()
            && ctx
                .rotator
                .unissued(&self.candidate(ctx, run, known).await?)
                .await?
                > 0;
        self.note_replaced_since(ctx, run)
            .await
            .map_err(crate::engine::error::store_step_error)?;
        let version = self.promote_in_vault(ctx, run, known).await?;
        let now = self.now();
        let event = self.event(ctx, run, EventKind::Promoted, Some(version.clone()), now);
        // Fixed when the run was planned: none for an emergency rotation. A first version that
        // retires nothing needs no grace: the run completes.
        let grace_ms = if run.replaced_version.is_some() || adopts {
            run.grace_ms
        } else {
            0
        };
        run.grace_until = Some(now + grace_ms);
        // The next rotation counts from this promotion; the scheduler does not start it while
        // this run is live, so it can never begin before retirement.
        let due = ctx.credential.schedule.next_due(
            &ctx.credential.id,
            Some(crate::clock::to_datetime(now)),
            crate::clock::to_datetime(now),
        );
        let update = CredentialUpdate {
            current_version: Some(version),
            current_fingerprint: run.pending_fingerprint.clone(),
            current_since: Some(now),
            next_due_at: Some(due.map(|d| d.at.timestamp_millis())),
            due_reason: Some(due.map_or("manual", |d| d.reason.as_str()).to_owned()),
            ..Default::default()
        };
        Ok(Outcome {
            performed: Performed::Done(Some(update)),
            events: vec![event],
        })
    }

    /// The candidate this run verified: held by the drive, or read back from the vault, where
    /// a drive that died after promoting it in the vault (before its save) left it current.
    async fn candidate(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &Option<Known>,
    ) -> Result<rotor_rotators::Credential, StepError> {
        if let Some(held) = known {
            return Ok(held.candidate.clone());
        }
        let path = &ctx.credential.vault_path;
        if let Some(current) = ctx.vault.read_current(path).await?
            && current.current.token.as_deref() == Some(run.token.as_str())
        {
            return Ok(current.current.credential);
        }
        self.own_pending(ctx, run).await
    }

    /// The drive that verified promotes the candidate it holds, which is the one it verified
    /// (a worker fenced off before this drive's claim finished its side effects inside its
    /// lease margin, so nothing it wrote follows). A resumed drive promotes the pending version
    /// only if it is still the one verified (a fenced-off worker could have written over it):
    /// the vault checks as it promotes.
    async fn promote_in_vault(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        known: &mut Option<Known>,
    ) -> Result<String, StepError> {
        let path = ctx.credential.vault_path.as_str();
        let Some(held) = known.as_mut() else {
            return Ok(ctx
                .vault
                .promote_run(
                    path,
                    &run.token,
                    Some(&run.id),
                    run.replaced_version.as_deref(),
                    run.pending_fingerprint
                        .as_deref()
                        .map(|keyed| Verified::Recorded {
                            keyed,
                            key: self.store.fingerprint_key(),
                        }),
                )
                .await?);
        };
        let version = ctx
            .vault
            .promote_held(
                path,
                &run.token,
                Some(&run.id),
                run.replaced_version.as_deref(),
                Held {
                    candidate: &held.candidate,
                    replaced: held.replaced.as_ref(),
                    previous: previous_kept(ctx, run),
                },
            )
            .await?;
        held.promoted = Some(version.clone());
        Ok(version)
    }
}
