//! "Which credential is this?" (`rotor identify`): a value found in the wild (a paste, a public
//! repository, a log) is matched by fingerprint against every value rotor minted
//! (`store::seen`), and, for values minted before those were recorded, against the current and
//! previous versions in each credential's vault. The value itself is never stored, logged or
//! printed: only its fingerprint is compared.

use rotor_rotators::Fingerprint;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::engine::Runtime;
use crate::engine::state::RunState;
use crate::store::{RunRow, Store, StoreError};
use crate::vault::Vault;

/// What a matched value is to its credential now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// What consumers read now: it authenticates.
    Current,
    /// Replaced, but it authenticates until run `replaced_by` retires it.
    Previous { replaced_by: Option<String> },
    /// Retired by run `by_run` (at `at`, ms): it no longer authenticates.
    Retired { by_run: String, at: Option<i64> },
    /// A candidate that never became current: its run rolled back or has not promoted yet.
    Candidate { state: RunState },
}

/// One credential version a value belongs to.
#[derive(Debug, Clone)]
pub struct Identified {
    pub credential_id: String,
    pub field: String,
    pub version: Option<String>,
    /// The run that minted it, when rotor recorded it.
    pub run_id: Option<String>,
    pub minted_at: Option<i64>,
    pub role: Role,
    /// The credential's state now, as `rotor status` names it.
    pub state: &'static str,
}

impl Identified {
    /// Whether the value may still authenticate somewhere.
    pub fn may_authenticate(&self) -> bool {
        match &self.role {
            Role::Current | Role::Previous { .. } => true,
            Role::Retired { .. } => false,
            // Installed at the provider for a while, or still: a live run's candidate.
            Role::Candidate { state } => !state.is_terminal(),
        }
    }
}

/// What the search found, and the vaults it could not read (their credentials unchecked).
#[derive(Debug, Default)]
pub struct Search {
    pub found: Vec<Identified>,
    pub unreadable: Vec<String>,
}

/// Finds the credential versions `value` belongs to, at `now` (ms).
pub async fn identify(
    store: &Store,
    runtime: &Runtime,
    value: &SecretString,
    now: i64,
) -> Result<Search, StoreError> {
    let digest = Fingerprint::of_value(value.expose_secret().as_bytes());
    let mut search = Search::default();
    for minted in store.minted(&store.fingerprint_key().of(&digest)).await? {
        let Some(run) = store.run(&minted.run_id).await? else {
            continue;
        };
        let row = store.credential(&minted.credential_id).await?;
        let role = role_of(store, &run, row.as_ref()).await?;
        search.found.push(Identified {
            state: state_now(store, row.as_ref(), now).await?,
            credential_id: minted.credential_id,
            field: minted.field,
            version: run.pending_version.clone(),
            run_id: Some(run.id),
            minted_at: Some(minted.recorded_at),
            role,
        });
    }
    if search.found.is_empty() {
        in_vaults(store, &runtime.config, runtime, &digest, now, &mut search).await?;
    }
    Ok(search)
}

/// What the version run `run` minted is now.
async fn role_of(
    store: &Store,
    run: &RunRow,
    row: Option<&crate::store::CredentialRow>,
) -> Result<Role, StoreError> {
    let promoted = run.state().is_promoted() || run.stuck_from.is_some_and(RunState::is_promoted);
    if !promoted {
        return Ok(Role::Candidate { state: run.state() });
    }
    let version = run.pending_version.as_deref().unwrap_or_default();
    if row.and_then(|r| r.current_version.as_deref()) == Some(version) {
        return Ok(Role::Current);
    }
    Ok(
        match store.run_replacing(&run.credential_id, version).await? {
            Some(r) if r.state() == RunState::Completed => Role::Retired {
                by_run: r.id,
                at: r.finished_at,
            },
            Some(r) => Role::Previous {
                replaced_by: Some(r.id),
            },
            None => Role::Previous { replaced_by: None },
        },
    )
}

async fn state_now(
    store: &Store,
    row: Option<&crate::store::CredentialRow>,
    now: i64,
) -> Result<&'static str, StoreError> {
    let Some(row) = row else {
        return Ok("removed");
    };
    let live = store.live_run(&row.id).await?;
    Ok(super::status::state_name(row, live.as_ref(), now))
}

/// Values minted before their fingerprints were recorded: each credential's current and
/// previous versions, read from its vault and fingerprinted here.
async fn in_vaults(
    store: &Store,
    config: &Config,
    runtime: &Runtime,
    digest: &Fingerprint,
    now: i64,
    search: &mut Search,
) -> Result<(), StoreError> {
    for credential in &config.credentials {
        let Some(vault) = runtime.vaults.get(&credential.vault) else {
            continue;
        };
        let document = match vault.read_current(&credential.vault_path).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                search.unreadable.push(format!("{}: {e}", credential.id));
                continue;
            }
        };
        let versions = std::iter::once((&document.current, true))
            .chain(document.previous.as_ref().map(|p| (p, false)));
        for (stored, current) in versions {
            let Some((field, _)) = stored
                .credential
                .value_fingerprints()
                .into_iter()
                .find(|(_, f)| f == digest)
            else {
                continue;
            };
            let row = store.credential(&credential.id).await?;
            let live = store.live_run(&credential.id).await?;
            search.found.push(Identified {
                credential_id: credential.id.clone(),
                field: field.to_owned(),
                version: Some(stored.version.clone()),
                run_id: None,
                minted_at: None,
                role: if current {
                    Role::Current
                } else {
                    Role::Previous {
                        replaced_by: live.map(|r| r.id),
                    }
                },
                state: state_now(store, row.as_ref(), now).await?,
            });
        }
    }
    Ok(())
}
