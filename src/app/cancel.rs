//! `rotor cancel ID`: stop a live run without ever losing a working credential. Before
//! promotion the run rolls back (its candidate removed everywhere, the current credential
//! untouched). After promotion consumers read the new credential already: the run is completed
//! early only when asked (`--retire-now`), else nothing changes and the choices are named. A
//! stuck run a person repaired by hand is closed after rotor looked at the provider and the
//! vault and reported what it found.

use rotor_rotators::{LiveCredential, Rotator};

use crate::alert::Condition;
use crate::config::Config;
use crate::engine::state::RunState;
use crate::engine::{Engine, Runtime};
use crate::scheduler::daemon;
use crate::store::incident::{FoundCurrent, Interrupt};
use crate::store::{RunRow, Store, StoreError};
use crate::vault::{StoredVersion, Vault};

use super::emergency::Asking;
use super::rotate::RotateError;
use super::settle::settle;

/// What the person asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Roll back a run that has not promoted; leave a promoted one alone.
    BeforePromotion,
    /// Also end a promoted run's grace now and retire the old credential.
    RetireNow,
    /// Close a stuck run repaired by hand.
    ResolvedByHand,
}

#[derive(Debug)]
pub enum Cancelled {
    NoLiveRun,
    /// Rolled back: the current credential is the one before the run.
    RolledBack {
        run_id: String,
    },
    /// Grace ended now; the old credential is retired.
    Completed {
        run_id: String,
    },
    /// Promoted (or stuck after promotion), and not asked to retire now: nothing changed.
    Promoted(Box<RunRow>),
    /// Not stuck, so not closed by hand.
    NotStuck(Box<RunRow>),
    /// The run ended elsewhere than asked (stuck again); its error says why.
    Ended(Box<RunRow>),
    /// Ctrl-C: the run is left resumable.
    Stopped {
        run_id: String,
    },
    /// Closed by hand, with what rotor found before closing it.
    Closed {
        run: Box<RunRow>,
        found: Box<Found>,
    },
}

/// What the provider and the vault hold for a credential, as a person repairing it by hand
/// needs to see it: identifiers, versions and fingerprints, never a value.
#[derive(Debug)]
pub struct Found {
    /// The provider's live credentials, or why they could not be listed.
    pub at_provider: Result<Vec<LiveCredential>, String>,
    pub current: Option<Seen>,
    pub previous: Option<Seen>,
    pub pending: Option<Seen>,
    /// Why the vault could not be read, if it could not.
    pub vault_error: Option<String>,
}

/// A version in the vault, and the provider's id of the credential in it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: String,
    /// Keyed, as the store holds it.
    pub fingerprint: String,
    pub provider_id: Option<String>,
}

pub async fn cancel(
    store: &Store,
    config: Config,
    id: &str,
    how: Cancel,
    asking: &Asking<'_>,
) -> Result<Cancelled, RotateError> {
    if config.credential(id).is_none() {
        return Err(StoreError::UnknownCredential(id.to_owned()).into());
    }
    daemon::reconcile(store, &config, asking.clock.as_ref()).await?;
    let Some(live) = store.live_run(id).await? else {
        return Ok(Cancelled::NoLiveRun);
    };
    let runtime = Runtime::build(config).await?;
    if how == Cancel::ResolvedByHand {
        return close_by_hand(store, &runtime, live, asking).await;
    }
    let interrupt = match how {
        Cancel::RetireNow => Interrupt::RetireNow,
        _ => Interrupt::Cancel,
    };
    let now = asking.clock.now_ms();
    let Some(run) = store
        .interrupt_live_run(id, interrupt, asking.actor, asking.reason, now)
        .await?
    else {
        // A cancel leaves a promoted run alone; or the run finished in between.
        return Ok(match store.live_run(id).await? {
            Some(live) => Cancelled::Promoted(Box::new(live)),
            None => Cancelled::NoLiveRun,
        });
    };
    let mut engine = Engine::new(store.clone(), asking.clock.clone(), daemon::worker_id());
    engine.stopping = asking.stopping.clone();
    let end = settle(store, &runtime, &engine, &run.id, &asking.stopping).await?;
    Ok(match end.state() {
        RunState::RolledBack => Cancelled::RolledBack { run_id: end.id },
        RunState::Completed => Cancelled::Completed { run_id: end.id },
        _ if asking.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
            Cancelled::Stopped { run_id: end.id }
        }
        _ => Cancelled::Ended(Box::new(end)),
    })
}

/// Looks at the provider and the vault, then closes the stuck (or retrying) run and resolves
/// its alert.
async fn close_by_hand(
    store: &Store,
    runtime: &Runtime,
    live: RunRow,
    asking: &Asking<'_>,
) -> Result<Cancelled, RotateError> {
    if live.state() != RunState::Stuck && !super::status::is_retrying(&live) {
        return Ok(Cancelled::NotStuck(Box::new(live)));
    }
    let credential = runtime
        .config
        .credential(&live.credential_id)
        .expect("checked by the caller");
    let found = inspect(runtime, credential, store.fingerprint_key()).await;
    let current = found.current.as_ref().map(|c| FoundCurrent {
        version: c.version.clone(),
        fingerprint: c.fingerprint.clone(),
    });
    let now = asking.clock.now_ms();
    let Some(run) = store
        .close_by_hand(&live.id, current.as_ref(), asking.actor, asking.reason, now)
        .await?
    else {
        let live = store.run(&live.id).await?.unwrap_or(live);
        return Ok(Cancelled::NotStuck(Box::new(live)));
    };
    runtime
        .alerter
        .resolve(
            store,
            &credential.id,
            &[Condition::Stuck, Condition::Retrying],
            &credential.alerts,
            now,
        )
        .await?;
    Ok(Cancelled::Closed {
        run: Box::new(run),
        found: Box::new(found),
    })
}

/// What the provider lists and the vault holds for `credential`, each version named by its
/// keyed fingerprint under `key`.
pub async fn inspect(
    runtime: &Runtime,
    credential: &crate::config::Credential,
    key: &crate::fingerprint::FingerprintKey,
) -> Found {
    let rotator = runtime.rotator(&credential.id);
    let vault = runtime
        .vaults
        .get(&credential.vault)
        .expect("config validation: the vault exists");
    let seen = |v: &StoredVersion| Seen {
        version: v.version.clone(),
        fingerprint: key.of(&v.credential.fingerprint()),
        provider_id: rotator.provider_id(&v.credential),
    };
    let at_provider = rotator.list_live().await.map_err(|e| e.to_string());
    let mut found = Found {
        at_provider,
        current: None,
        previous: None,
        pending: None,
        vault_error: None,
    };
    match vault.read_current(&credential.vault_path).await {
        Ok(doc) => {
            found.current = doc.as_ref().map(|d| seen(&d.current));
            found.previous = doc.as_ref().and_then(|d| d.previous.as_ref()).map(seen);
        }
        Err(e) => found.vault_error = Some(e.to_string()),
    }
    match vault.read_pending(&credential.vault_path).await {
        Ok(pending) => found.pending = pending.as_ref().map(seen),
        Err(e) => found.vault_error = Some(e.to_string()),
    }
    found
}
