//! Mint: make the candidate (at the provider, or in rotor) and store it as the vault's
//! pending version, tagged with the run's token.

use rotor_rotators::{MintContext, Origin, Rotator};

use crate::engine::error::{StepError, abandoned_at_mint, store_step_error};
use crate::engine::lease::RunFence;
use crate::engine::{Ctx, Engine};
use crate::failpoint;
use crate::store::RunRow;
use crate::vault::{Document, StoredVersion, Vault};

use super::{Known, Performed, previous_kept};

impl Engine {
    pub(super) async fn mint(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        known: &mut Option<Known>,
    ) -> Result<Performed, StepError> {
        let path = ctx.credential.vault_path.as_str();
        let current = ctx.vault.read_current(path).await?;
        self.refuse_outside_change(ctx, current.as_ref()).await?;
        // A credential the provider makes must not be made twice: a run resumed after a crash
        // takes the one it stored. One rotor makes is made again at no cost, and
        // `write_pending` keeps the version this run stored before, so the vault is not asked
        // twice.
        let stored_before = if ctx.rotator.origin() == Origin::Provider {
            ctx.vault.read_pending(path).await?
        } else {
            None
        };
        let pending = match stored_before {
            Some(p) if p.token.as_deref() == Some(run.token.as_str()) => p,
            _ => self.mint_new(ctx, run, current.as_ref()).await?,
        };
        // What `rotor identify` matches a value found in the wild against, kept beyond the
        // vault's memory of it.
        let key = self.store.fingerprint_key();
        let fields: Vec<(&str, String)> = pending
            .credential
            .value_fingerprints()
            .into_iter()
            .map(|(field, fingerprint)| (field, key.of(&fingerprint)))
            .collect();
        self.store
            .record_minted(&ctx.credential.id, &run.id, &fields, self.now())
            .await
            .map_err(store_step_error)?;
        if !ctx.rotator.vault_only() {
            *known = Some(Known {
                candidate: pending.credential.clone(),
                replaced: current.as_ref().map(|d| d.current.clone()),
                promoted: None,
            });
        }
        run.pending_version = Some(pending.version);
        // Vaults keep a version's digest beside its value; the store and everything it shows
        // hold the keyed fingerprint only.
        run.pending_fingerprint = key.of_hex(&pending.fingerprint);
        run.replaced_version = current.as_ref().map(|d| d.current.version.clone());
        run.replaced_fingerprint = current.and_then(|d| key.of_hex(&d.current.fingerprint));
        Ok(Performed::Done(None))
    }

    /// The vault's current version must be the one rotor last promoted, holding the value
    /// rotor promoted: anything else was written outside rotor, and is not overwritten. The
    /// value is compared too, because an edit that copies rotor's version label along would
    /// otherwise pass.
    async fn refuse_outside_change(
        &self,
        ctx: &Ctx<'_>,
        current: Option<&Document>,
    ) -> Result<(), StepError> {
        let recorded = self
            .store
            .current_recorded(&ctx.credential.id)
            .await
            .map_err(store_step_error)?;
        let found = current.map(|d| d.current.version.clone());
        let outside = if found != recorded.version {
            format!(
                "holds version {} but rotor last promoted {}",
                found.as_deref().unwrap_or("(none)"),
                recorded.version.as_deref().unwrap_or("(none)"),
            )
        } else if let (Some(document), Some(fingerprint)) = (current, &recorded.fingerprint)
            && self
                .store
                .fingerprint_key()
                .of_hex(&document.current.fingerprint)
                .as_ref()
                != Some(fingerprint)
        {
            format!(
                "holds version {} with another value than the one rotor promoted",
                document.current.version
            )
        } else {
            return Ok(());
        };
        Err(StepError::conflict(format!(
            "vault {} path {} {outside}: it was changed outside rotor. Nothing is overwritten; \
             reconcile by hand, then `rotor rotate {}`",
            ctx.vault.name(),
            ctx.credential.vault_path,
            ctx.credential.id
        )))
    }

    /// Makes a new candidate and stores it as pending, while the run is still this worker's.
    async fn mint_new(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        current: Option<&Document>,
    ) -> Result<StoredVersion, StepError> {
        let current = current.map(|d| &d.current.credential);
        let fence = RunFence::new(self, ctx, run);
        let context = MintContext {
            token: &run.token,
            current,
            fence: Some(&fence),
        };
        let candidate = match ctx.rotator.mint(context).await {
            Ok(candidate) => candidate,
            // The rotator stopped at the fence: the lease lapsed, or the store could not say (a
            // database restart). Neither is the credential's failure, so nothing is saved and
            // nothing rolled back: the run resumes at mint under whoever claims it next.
            Err(e) if fence.refused() => return Err(abandoned_at_mint(run, e.into())),
            Err(e) => return Err(e.into()),
        };
        // A provider-made secret exists only in this process until stored.
        failpoint::pause_if_armed("mint:minted").await;
        // A worker paused past its lease (a stopped process, a long GC, a partition) must not
        // write over the pending version of the worker that took the run over.
        if !self.holds_lease(ctx, run).await.map_err(store_step_error)? {
            // What this worker just made is its own (the vault never saw it): it undoes it
            // rather than leave it orphaned at the provider.
            if ctx.rotator.origin() == Origin::Provider
                && let Err(e) = ctx.rotator.rollback(&candidate, current).await
            {
                tracing::warn!(error = %e, "could not remove the credential minted after the run was taken over");
            }
            // Nothing is saved: the run resumes at mint under its next owner (perhaps this
            // worker again), never rolled back for this.
            return Err(abandoned_at_mint(
                run,
                StepError::conflict(format!(
                    "the lease on run {} lapsed while this worker minted",
                    run.id
                )),
            ));
        }
        Ok(ctx
            .vault
            .write_pending(
                &ctx.credential.vault_path,
                &run.token,
                &candidate,
                previous_kept(ctx, run),
            )
            .await?)
    }
}
