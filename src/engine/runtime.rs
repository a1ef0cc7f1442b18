//! Everything built from one config: rotators, vaults, the alerter and the notifier.

use std::sync::Arc;

use rotor_rotators::AnyRotator;

use crate::alert::Alerter;
use crate::config::Config;
use crate::notify::Notifier;
use crate::store::{Store, StoreError};
use crate::vault::{VaultSecrets, Vaults};

use super::EngineError;

/// Everything built from one config: rotators and vaults. Replaced whole on reload.
pub struct Runtime {
    pub config: Config,
    pub vaults: Arc<Vaults>,
    /// Each credential's rotator, at its position in `config.credentials`.
    rotators: Vec<AnyRotator>,
    pub alerter: Alerter,
    pub notifier: Notifier,
}

impl Runtime {
    /// The rotator of configured credential `id`.
    ///
    /// # Panics
    /// If `id` is not in the config this runtime was built from: callers look it up there.
    pub fn rotator(&self, id: &str) -> &AnyRotator {
        let index = self.config.index_of(id).expect("a configured credential");
        &self.rotators[index]
    }

    /// Tells consumers what is due (of one credential with `only`); see `Notifier`.
    pub async fn notify_due(
        &self,
        store: &Store,
        now: impl Fn() -> i64 + Sync,
        only: Option<&str>,
    ) -> Result<crate::outbox::Pass, StoreError> {
        // A credential that tells no hook has nothing to deliver: not asking spares the store
        // a read per run of an incident drain. What an earlier config left for it is the
        // daemon's pass over every credential.
        if let Some(id) = only
            && self
                .config
                .credential(id)
                .is_some_and(|c| c.notify.is_empty())
        {
            return Ok(crate::outbox::Pass::default());
        }
        self.notifier
            .deliver_due(store, &self.config, &self.alerter, &now, only)
            .await
    }

    pub async fn build(config: Config) -> Result<Runtime, EngineError> {
        let vaults = Arc::new(
            Vaults::open(&config.vaults)
                .await
                .map_err(EngineError::OpenVaults)?,
        );
        let secrets: rotor_rotators::Secrets = Arc::new(VaultSecrets(vaults.clone()));
        let mut rotators = Vec::with_capacity(config.credentials.len());
        for c in &config.credentials {
            let r = AnyRotator::build(&c.rotator, secrets.clone()).map_err(|source| {
                EngineError::Rotator {
                    credential: c.id.clone(),
                    source,
                }
            })?;
            rotators.push(r);
        }
        let alerter = Alerter::new(config.alerts.clone(), vaults.clone());
        let notifier = Notifier::new(config.hooks.clone(), vaults.clone());
        Ok(Runtime {
            config,
            vaults,
            rotators,
            alerter,
            notifier,
        })
    }
}
