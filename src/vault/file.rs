//! The `file` vault, the embedded default: one age-encrypted JSON document per credential.
//!
//! `DIR/PATH.age` is what consumers read: the credential's fields, `previous` (the same fields
//! of the previous version) during grace, and `_rotor` (version ids, run token, fingerprints;
//! `previous_*` name the version a document replaced, and stay when it is promoted without its
//! fields: [`Previous::Omitted`]).
//! `DIR/PATH.age.pending` holds a version being rotated in. Each write goes to a temporary file
//! that is made durable and renamed over the target, and the rename is made durable (both by
//! flushes shared with the other writes in flight: [`SyncBatch`]), so a crash leaves either the
//! old or the new document, never a torn one. The files are ordinary age files:
//! `age -d -i IDENTITY DIR/PATH.age` prints the document.
//!
//! Each step of a rotation reads back what the step before wrote. Decrypting is an X25519
//! Diffie-Hellman, so the vault remembers, for the files of the runs in flight, the bytes it
//! wrote or read and what they decrypt to: a file whose bytes are still those is not decrypted
//! again. What a file holds is still read from disk each time; only the arithmetic is saved.
//! The plaintexts are zeroized when forgotten: at the end of each run (retire or rollback) and
//! past [`MOST_REMEMBERED`] files.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rotor_rotators::{Credential, ErrorClass};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::wire::{META_KEY, WireDocument, describe_json_error, to_zeroized_json};
use super::{Document, Previous, StoredVersion, Vault, VaultError};
use rotor_rotators::SecretRef;
use rotor_rotators::kinds::Settings;

use super::{PolicyScope, VaultSettings};

/// The `file` vault: `DIR/PATH.age` holds a credential's current (and, during grace, previous)
/// version, `DIR/PATH.age.pending` a version being rotated in. Readable with the stock `age`
/// tool.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileVaultConfig {
    /// Folder of the encrypted files (created if missing).
    pub dir: PathBuf,
    /// The age identity (X25519 secret key) that encrypts and decrypts the files. A `file`
    /// reference that does not exist is created (mode 0600) while the folder holds no files.
    pub identity: SecretRef,
}

impl Settings for FileVaultConfig {
    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.identity]
    }
}

impl VaultSettings for FileVaultConfig {
    fn least_privilege(&self, scope: &PolicyScope<'_>) -> String {
        let PolicyScope {
            credential,
            vault,
            path,
        } = *scope;
        format!(
            "# rotor: least privilege for credential \"{credential}\" in vault \"{vault}\" (file vault).\n\
             # rotor's user needs read and write on the folder and its files, and read on the identity:\n\
             #   {dir}/{path}.age           what consumers read (grant them read on this file only)\n\
             #   {dir}/{path}{PENDING_SUFFIX}   a version being rotated in (no one else needs it)\n\
             # Suggested: chown -R rotor {dir}; chmod 0700 {dir}; the identity file mode 0600.\n",
            dir = self.dir.display(),
        )
    }
}

const CURRENT_SUFFIX: &str = ".age";
const PENDING_SUFFIX: &str = ".age.pending";

/// A bound on the remembered plaintexts, past the runs a daemon keeps in flight.
const MOST_REMEMBERED: usize = 1024;

pub struct FileVault {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    dir: PathBuf,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    durable: SyncBatch,
    /// By file: the bytes last written or read there and what they decrypt to.
    remembered: std::sync::Mutex<HashMap<PathBuf, Remembered>>,
}

struct Remembered {
    encrypted: Vec<u8>,
    plain: Arc<Zeroizing<Vec<u8>>>,
}

/// rotor's bookkeeping inside a document. Not secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_fingerprint: Option<String>,
}

/// A decrypted document: fields, optional previous fields, metadata.
struct FileDocument {
    fields: Credential,
    previous: Option<Credential>,
    meta: Meta,
}

impl FileVault {
    /// Opens the vault folder and its identity. A `file` identity that does not exist yet is
    /// generated, but only while the folder holds no encrypted files: with files present a
    /// missing key is an operator mistake, and a new key would make them unreadable.
    pub async fn open(name: &str, config: &FileVaultConfig) -> Result<FileVault, VaultError> {
        let fail = |message: String| VaultError::new(ErrorClass::Permanent, name, "", message);
        create_private_dirs(&config.dir).map_err(|e| {
            fail(format!(
                "cannot create vault folder {}: {e}",
                config.dir.display()
            ))
        })?;
        refuse_shared(&config.dir, 0o022, "writable by group or others", "0700").map_err(fail)?;
        let identity_text: SecretString = match &config.identity {
            SecretRef::File { file } if !file.exists() => {
                if holds_vault_files(&config.dir) {
                    return Err(fail(format!(
                        "identity file {} does not exist but {} holds encrypted files; restore the identity \
                         (a new one could not read them)",
                        file.display(),
                        config.dir.display()
                    )));
                }
                let identity = age::x25519::Identity::generate();
                let text = identity.to_string();
                let created = create_exclusively(file, text.expose_secret().as_bytes(), 0o600)
                    .map_err(|e| {
                        fail(format!(
                            "cannot create identity file {}: {e}",
                            file.display()
                        ))
                    })?;
                if created {
                    tracing::info!(vault = name, identity = %file.display(), "created a new age identity for the file vault");
                    SecretString::from(text.expose_secret())
                } else {
                    // Another process starting on the same empty folder created it first: its
                    // identity is the vault's, this one is dropped.
                    read_identity(file).map_err(fail)?
                }
            }
            SecretRef::File { file } => read_identity(file).map_err(fail)?,
            SecretRef::Env { env } => SecretString::from(
                std::env::var(env)
                    .map_err(|_| fail(format!("environment variable {env} is not set")))?,
            ),
            SecretRef::Vault { .. } => {
                return Err(fail(
                    "the file vault's identity cannot come from a vault: use { file } or { env }"
                        .into(),
                ));
            }
        };
        let line = identity_text
            .expose_secret()
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| {
                fail(
                    "the identity holds no AGE-SECRET-KEY line (expected the output of age-keygen)"
                        .into(),
                )
            })?;
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|_| fail("the identity is not a valid age X25519 secret key".into()))?;
        if let Some(foreign) = first_foreign_file(&config.dir, &identity) {
            return Err(fail(format!(
                "{} was encrypted to another identity than {}: the folder's files and this identity \
                 do not belong together, and writing more would leave credentials nobody can read. \
                 Nothing was written: restore the identity the files were written with",
                foreign.display(),
                match &config.identity {
                    SecretRef::File { file } => file.display().to_string(),
                    SecretRef::Env { env } => format!("${env}"),
                    SecretRef::Vault { .. } => String::new(),
                }
            )));
        }
        let recipient = identity.to_public();
        let durable = SyncBatch::open(&config.dir).map_err(|e| {
            fail(format!(
                "cannot open vault folder {}: {e}",
                config.dir.display()
            ))
        })?;
        Ok(FileVault {
            inner: Arc::new(Inner {
                name: name.into(),
                dir: config.dir.clone(),
                identity,
                recipient,
                durable,
                remembered: Default::default(),
            }),
        })
    }
}

fn holds_vault_files(dir: &Path) -> bool {
    first_vault_file(dir).is_some()
}

/// The first current-version file under `dir`, in no particular order.
fn first_vault_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let p = e.path();
            if p.is_dir() {
                first_vault_file(&p)
            } else {
                p.to_string_lossy().ends_with(CURRENT_SUFFIX).then_some(p)
            }
        })
}

/// A vault file `identity` is not a recipient of, if the first one found is such: the folder
/// was written with another identity (a lost key replaced by a new one, two processes that each
/// made their own). A file that is merely corrupt is left to the read that meets it.
fn first_foreign_file(dir: &Path, identity: &age::x25519::Identity) -> Option<PathBuf> {
    let file = first_vault_file(dir)?;
    let bytes = std::fs::read(&file).ok()?;
    match age::decrypt(identity, &bytes) {
        Err(age::DecryptError::NoMatchingKeys) => Some(file),
        _ => None,
    }
}

/// The identity file's text; refused when others may read it.
fn read_identity(file: &Path) -> Result<SecretString, String> {
    refuse_shared(file, 0o077, "readable by group or others", "0600")?;
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read identity file {}: {e}", file.display()))?,
    );
    Ok(SecretString::from(text.as_str()))
}

/// Refuses `path` when its mode grants any of `bits`: a vault folder others may write to (they
/// could swap a credential's file) or an identity others may read (they could decrypt them all).
fn refuse_shared(path: &Path, bits: u32, what: &str, wanted: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & bits != 0 {
        return Err(format!(
            "{} is {what} (mode {mode:04o}): rotor refuses to use it; `chmod {wanted} {}` if only rotor's user should have it",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Folders the vault makes are its user's alone (0700, whatever the umask).
fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Inner {
    fn file(&self, path: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{path}{suffix}"))
    }

    fn err(&self, class: ErrorClass, path: &str, message: impl Into<String>) -> VaultError {
        VaultError::new(class, &self.name, path, message)
    }

    fn io_err(&self, path: &str, action: &str, file: &Path, e: std::io::Error) -> VaultError {
        // A full disk or a permission problem will not fix itself by retrying within seconds,
        // but an interrupted call may: retry, and let the attempt limit decide.
        self.err(
            ErrorClass::Transient,
            path,
            format!("cannot {action} {}: {e}", file.display()),
        )
    }

    fn load(&self, path: &str, suffix: &str) -> Result<Option<FileDocument>, VaultError> {
        let file = self.file(path, suffix);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err(path, "read", &file, e)),
        };
        let recalled = self.recall(&file, &bytes);
        let decrypted = recalled.is_none();
        let plain = match recalled {
            Some(plain) => plain,
            None => Arc::new(Zeroizing::new(age::decrypt(&self.identity, &bytes).map_err(|e| {
                self.err(
                    ErrorClass::Permanent,
                    path,
                    format!(
                        "cannot decrypt {}: {e}; the file is corrupt or was encrypted to another identity. \
                         Nothing was changed: restore the file or the identity",
                        file.display()
                    ),
                )
            })?)),
        };
        let not_ours = |why: String| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "{} decrypts but is not a rotor document ({why}); nothing was changed",
                    file.display()
                ),
            )
        };
        let wire: WireDocument<Meta> =
            serde_json::from_slice(&plain).map_err(|e| not_ours(describe_json_error(&e)))?;
        let mut meta: Meta = wire
            .meta
            .ok_or_else(|| not_ours(format!("no `{META_KEY}` object")))?;
        // The fingerprints in `_rotor` are what rotor wrote; the fields are what the file holds
        // now. A hand edit that keeps `_rotor` must not pass for rotor's value, so each
        // fingerprint is taken from the fields it describes wherever they are in the file.
        meta.fingerprint = wire.fields.fingerprint().to_hex();
        if let Some(previous) = &wire.previous {
            meta.previous_fingerprint = Some(previous.fingerprint().to_hex());
        }
        if decrypted {
            self.remember(file, bytes, plain);
        }
        Ok(Some(FileDocument {
            fields: wire.fields,
            previous: wire.previous,
            meta,
        }))
    }

    async fn store(&self, path: &str, suffix: &str, doc: &FileDocument) -> Result<(), VaultError> {
        let file = self.file(path, suffix);
        let wire = WireDocument {
            fields: doc.fields.clone(),
            previous: doc.previous.clone(),
            meta: Some(doc.meta.clone()),
        };
        let plain = Arc::new(to_zeroized_json(&wire, wire.json_capacity()));
        let encrypted = age::encrypt(&self.recipient, &plain)
            .map_err(|e| self.err(ErrorClass::Permanent, path, format!("cannot encrypt: {e}")))?;
        if let Some(parent) = file.parent() {
            create_private_dirs(parent)
                .map_err(|e| self.io_err(path, "create folder", parent, e))?;
        }
        match self.durable.replace(&file, &encrypted).await {
            Ok(()) => {
                self.remember(file, encrypted, plain);
                Ok(())
            }
            Err(e) => {
                self.forget(&file);
                Err(self.io_err(path, "write", &file, e))
            }
        }
    }

    /// What `encrypted`, read from `file`, decrypts to, if the vault wrote or read those very
    /// bytes there last.
    fn recall(&self, file: &Path, encrypted: &[u8]) -> Option<Arc<Zeroizing<Vec<u8>>>> {
        let remembered = self.remembered.lock().expect("vault memory lock");
        remembered
            .get(file)
            .filter(|r| r.encrypted == encrypted)
            .map(|r| r.plain.clone())
    }

    fn remember(&self, file: PathBuf, encrypted: Vec<u8>, plain: Arc<Zeroizing<Vec<u8>>>) {
        let mut remembered = self.remembered.lock().expect("vault memory lock");
        if remembered.len() >= MOST_REMEMBERED
            && !remembered.contains_key(&file)
            && let Some(any) = remembered.keys().next().cloned()
        {
            remembered.remove(&any);
        }
        remembered.insert(file, Remembered { encrypted, plain });
    }

    fn forget(&self, file: &Path) {
        self.remembered
            .lock()
            .expect("vault memory lock")
            .remove(file);
    }

    /// The end of a run: neither of the path's files is read again before the next.
    fn forget_path(&self, path: &str) {
        self.forget(&self.file(path, CURRENT_SUFFIX));
        self.forget(&self.file(path, PENDING_SUFFIX));
    }

    /// Renames the path's `from` file over its `to` file (in one step: readers see either),
    /// and returns once that is durable. A promotion: the failpoint is the promotion's.
    async fn rename(&self, path: &str, from: &str, to: &str) -> Result<(), VaultError> {
        let (source, target) = (self.file(path, from), self.file(path, to));
        rename_over(&source, &target).map_err(|e| self.io_err(path, "rename", &source, e))?;
        crate::failpoint::pause_if_armed("vault:promote:written").await;
        {
            let mut remembered = self.remembered.lock().expect("vault memory lock");
            match remembered.remove(&source) {
                Some(moved) => remembered.insert(target.clone(), moved),
                None => remembered.remove(&target),
            };
        }
        self.durable
            .flushed()
            .await
            .map_err(|e| self.io_err(path, "flush the rename of", &target, e))
    }

    async fn remove(&self, path: &str, suffix: &str) -> Result<(), VaultError> {
        let file = self.file(path, suffix);
        self.forget(&file);
        match remove_elsewhere(&file) {
            Ok(()) => self
                .durable
                .flushed()
                .await
                .map_err(|e| self.io_err(path, "flush the removal of", &file, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(path, "remove", &file, e)),
        }
    }
}

fn stored(credential: Credential, meta: &Meta) -> StoredVersion {
    StoredVersion {
        version: meta.version.clone(),
        token: meta.token.clone(),
        fingerprint: meta.fingerprint.clone(),
        credential,
    }
}

impl Vault for FileVault {
    fn name(&self) -> &str {
        &self.inner.name
    }

    // The files are small and in the page cache, so each step reads and writes them on the
    // task's own thread (a hand-over to a blocking thread and back cost more than the I/O);
    // only the flushes, shared with the other writes in flight, wait on the flusher's thread.
    async fn read_current(&self, path: &str) -> Result<Option<Document>, VaultError> {
        Ok(self.inner.load(path, CURRENT_SUFFIX)?.map(|doc| {
            let previous = doc.previous.map(|p| StoredVersion {
                version: doc.meta.previous_version.clone().unwrap_or_default(),
                token: doc.meta.previous_token.clone(),
                fingerprint: doc.meta.previous_fingerprint.clone().unwrap_or_default(),
                credential: p,
            });
            Document {
                current: stored(doc.fields, &doc.meta),
                previous,
            }
        }))
    }

    async fn read_pending(&self, path: &str) -> Result<Option<StoredVersion>, VaultError> {
        Ok(self
            .inner
            .load(path, PENDING_SUFFIX)?
            .map(|doc| stored(doc.fields, &doc.meta)))
    }

    async fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        previous: Previous,
    ) -> Result<StoredVersion, VaultError> {
        let v = &*self.inner;
        if let Some(existing) = v.load(path, PENDING_SUFFIX)?
            && existing.meta.token.as_deref() == Some(token)
        {
            return Ok(stored(existing.fields, &existing.meta));
        }
        let current = v.load(path, CURRENT_SUFFIX)?;
        let next = current
            .as_ref()
            .and_then(|c| c.meta.version.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let mut meta = Meta {
            version: next.to_string(),
            token: Some(token.to_owned()),
            fingerprint: credential.fingerprint().to_hex(),
            ..Meta::default()
        };
        // The pending file is the current one to be: with the current fields as `previous`,
        // promotion renames it into place (no new file, no encryption, one flush). Promotion
        // checks the version and fingerprint it names against the current file, so they are
        // there even when the fields are omitted.
        let replaced = current.map(|c| {
            meta.previous_version = Some(c.meta.version);
            meta.previous_token = c.meta.token;
            meta.previous_fingerprint = Some(c.meta.fingerprint);
            c.fields
        });
        let doc = FileDocument {
            fields: credential.clone(),
            previous: previous.of(replaced),
            meta,
        };
        v.store(path, PENDING_SUFFIX, &doc).await?;
        Ok(stored(doc.fields, &doc.meta))
    }

    async fn promote_run(
        &self,
        path: &str,
        token: &str,
        _run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<super::Verified<'_>>,
    ) -> Result<String, VaultError> {
        let v = &*self.inner;
        let current = v.load(path, CURRENT_SUFFIX)?;
        if let Some(c) = &current
            && c.meta.token.as_deref() == Some(token)
        {
            // Promoted before a crash or a failed flush: the pending file may be left to
            // clean up, and the promotion may not be on disk yet.
            if v.load(path, PENDING_SUFFIX)?
                .is_some_and(|p| p.meta.token.as_deref() == Some(token))
            {
                v.remove(path, PENDING_SUFFIX).await?;
            } else {
                v.durable.flushed().await.map_err(|e| {
                    v.io_err(
                        path,
                        "flush the promotion of",
                        &v.file(path, CURRENT_SUFFIX),
                        e,
                    )
                })?;
            }
            return Ok(c.meta.version.clone());
        }
        let found = current.as_ref().map(|c| c.meta.version.as_str());
        if found != expected_current {
            return Err(v.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "the current version is {} but rotor last saw {}: it was changed outside rotor. \
                     rotor will not overwrite it; check who changed it, then run `rotor rotate` again",
                    found.unwrap_or("(none)"),
                    expected_current.unwrap_or("(none)")
                ),
            ));
        }
        let pending = v
            .load(path, PENDING_SUFFIX)?
            .filter(|p| p.meta.token.as_deref() == Some(token))
            .ok_or_else(|| {
                v.err(
                    ErrorClass::Permanent,
                    path,
                    "this run has no pending version to promote; it will be rolled back",
                )
            })?;
        if verified.is_some_and(|v| !v.is(&pending.meta.fingerprint)) {
            return Err(super::not_verified(&v.name, path));
        }
        let replaced = current
            .as_ref()
            .map(|c| (&c.meta.version, &c.meta.fingerprint));
        if replaced
            == pending
                .meta
                .previous_version
                .as_ref()
                .zip(pending.meta.previous_fingerprint.as_ref())
        {
            v.rename(path, PENDING_SUFFIX, CURRENT_SUFFIX).await?;
            return Ok(pending.meta.version);
        }
        // A pending file written before pending files carried the current fields (by an
        // older rotor), or a current file changed under the same version: the current
        // document is written anew, with the fields it replaces as `previous`.
        let mut meta = pending.meta.clone();
        let previous = current.map(|c| {
            meta.previous_version = Some(c.meta.version.clone());
            meta.previous_token = c.meta.token.clone();
            meta.previous_fingerprint = Some(c.meta.fingerprint.clone());
            c.fields
        });
        let doc = FileDocument {
            fields: pending.fields,
            previous,
            meta,
        };
        v.store(path, CURRENT_SUFFIX, &doc).await?;
        crate::failpoint::pause_if_armed("vault:promote:written").await;
        v.remove(path, PENDING_SUFFIX).await?;
        Ok(doc.meta.version)
    }

    async fn discard_pending(&self, path: &str, token: &str) -> Result<(), VaultError> {
        let v = &*self.inner;
        let outcome = match v.load(path, PENDING_SUFFIX) {
            Ok(Some(p)) if p.meta.token.as_deref() == Some(token) => {
                v.remove(path, PENDING_SUFFIX).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        v.forget_path(path);
        outcome
    }

    async fn drop_previous(&self, path: &str, token: &str) -> Result<Option<String>, VaultError> {
        let v = &*self.inner;
        let Some(mut doc) = v.load(path, CURRENT_SUFFIX)? else {
            return Ok(None);
        };
        if doc.meta.token.as_deref() != Some(token) {
            return Err(super::changed_since_promoted(&v.name, path));
        }
        if doc.previous.is_some() {
            doc.previous = None;
            doc.meta.previous_version = None;
            doc.meta.previous_token = None;
            doc.meta.previous_fingerprint = None;
            v.store(path, CURRENT_SUFFIX, &doc).await?;
        }
        v.forget_path(path);
        Ok(Some(doc.meta.version))
    }
}

/// Makes the vault's writes durable together. Each write is a temporary file renamed over
/// its target, durable only once the file's data is on disk before the rename and the rename
/// after it: an fsync of the file and one of its folder, each its own flush of the disk's
/// cache (a rotation that replaces a version writes twice and renames once: five flushes).
/// Writers that arrive while a flush is under way share the next one instead: a `syncfs` of the
/// vault's filesystem makes every write finished before it started durable, the temporary
/// files' data and the renames alike. Measured on this machine's virtio disk, one writer alone
/// fsynced 440 file-and-folder pairs a second and sixteen together 640; batches of eight
/// through `syncfs` made 4,000.
///
/// The flushes run on a thread of their own, one at a time; a writer asks for the next one and
/// awaits its number, so no task holds a thread while it waits.
struct SyncBatch {
    shared: Arc<SyncShared>,
    /// The number of the last flush finished.
    done: tokio::sync::watch::Receiver<u64>,
}

struct SyncShared {
    /// The vault's folder, the handle `syncfs` names the filesystem by.
    folder: std::fs::File,
    state: std::sync::Mutex<SyncState>,
    asked: std::sync::Condvar,
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct SyncState {
    /// The highest flush number a writer awaits, and the flushes started so far.
    wanted: u64,
    started: u64,
    /// The recent flushes that failed, by number, with their error.
    failed: std::collections::VecDeque<(u64, std::io::ErrorKind, String)>,
    /// The number of the last failure dropped from `failed` to bound it: a writer covered by a
    /// flush that old cannot learn it succeeded, so it is told it failed.
    forgotten: u64,
    /// The vault is gone: the flusher ends once no flush is wanted.
    closed: bool,
}

impl SyncBatch {
    fn open(folder: &Path) -> std::io::Result<SyncBatch> {
        let (done_tx, done) = tokio::sync::watch::channel(0);
        let shared = Arc::new(SyncShared {
            folder: std::fs::File::open(folder)?,
            state: Default::default(),
            asked: std::sync::Condvar::new(),
            done: done_tx,
        });
        let flusher = shared.clone();
        std::thread::Builder::new()
            .name("rotor-vault-sync".into())
            .spawn(move || flusher.run())?;
        Ok(SyncBatch { shared, done })
    }

    /// Writes `bytes` to `target` so that readers see the old or the new file, never a mix,
    /// and returns once the new one is durable: temporary file in the same folder, a shared
    /// flush, rename, another shared flush.
    async fn replace(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let temp = temporary_beside(target);
        let result = async {
            write_new_file(&temp, bytes, 0o600)?;
            self.flushed().await?;
            rename_over(&temp, target)?;
            self.flushed().await
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Returns once what this task wrote before the call is on disk: after the first flush
    /// that starts from now on.
    async fn flushed(&self) -> std::io::Result<()> {
        let mine = {
            let mut state = self.shared.state.lock().expect("vault sync lock");
            let mine = state.started + 1;
            state.wanted = state.wanted.max(mine);
            mine
        };
        self.shared.asked.notify_one();
        self.done
            .clone()
            .wait_for(|&done| done >= mine)
            .await
            .map_err(|_| std::io::Error::other("the vault's flusher thread ended"))?;
        let state = self.shared.state.lock().expect("vault sync lock");
        match state.failed.iter().find(|(n, ..)| *n == mine) {
            Some((_, kind, message)) => Err(std::io::Error::new(
                *kind,
                format!("flushing the vault's filesystem failed: {message}"),
            )),
            None if mine <= state.forgotten => Err(std::io::Error::other(
                "flushing the vault's filesystem failed again and again",
            )),
            None => Ok(()),
        }
    }
}

impl Drop for SyncBatch {
    fn drop(&mut self) {
        self.shared.state.lock().expect("vault sync lock").closed = true;
        self.shared.asked.notify_one();
    }
}

impl SyncShared {
    /// The flusher: one `syncfs` after another while writers want one.
    fn run(&self) {
        let mut state = self.state.lock().expect("vault sync lock");
        loop {
            while state.wanted <= state.started {
                if state.closed {
                    return;
                }
                state = self.asked.wait(state).expect("vault sync lock");
            }
            state.started += 1;
            let number = state.started;
            drop(state);
            let outcome = rustix::fs::syncfs(&self.folder);
            state = self.state.lock().expect("vault sync lock");
            if let Err(e) = outcome {
                let e = std::io::Error::from(e);
                state.failed.push_back((number, e.kind(), e.to_string()));
                if state.failed.len() > 64
                    && let Some((dropped, ..)) = state.failed.pop_front()
                {
                    state.forgotten = dropped;
                }
            }
            // Under the lock: a writer that sees its number finds its failure recorded.
            self.done.send_replace(number);
        }
    }
}

/// Renames `source` over `target`, leaving the freeing of the file it replaces to a blocking
/// thread ([`free_elsewhere`]).
fn rename_over(source: &Path, target: &Path) -> std::io::Result<()> {
    let replaced = std::fs::File::open(target).ok();
    std::fs::rename(source, target)?;
    free_elsewhere(replaced);
    Ok(())
}

/// Removes `file`, leaving the freeing of its blocks to a blocking thread.
fn remove_elsewhere(file: &Path) -> std::io::Result<()> {
    let removed = std::fs::File::open(file).ok();
    std::fs::remove_file(file)?;
    free_elsewhere(removed);
    Ok(())
}

/// Closes a file whose last name is gone on one of the runtime's blocking threads. The close
/// frees its blocks, and on a filesystem mounted with online `discard` (common on cloud VMs,
/// this project's among them) freeing waits for the disk to discard them: in the benchmark the
/// runtime's two threads spent 18 % of the rotations that replace a version blocked there, in
/// the promotion's rename, while every other task waited. Holding the replaced file open
/// across the rename moves that wait off them; the rename itself stays where it was.
fn free_elsewhere(file: Option<std::fs::File>) {
    let Some(file) = file else { return };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(file));
        }
        Err(_) => drop(file),
    }
}

/// Creates `target` with `bytes`, complete and durable, unless it exists already: written to a
/// temporary file first and hard-linked into place, which fails if anything is at `target`.
/// Returns whether this call created it (another process may have been first).
pub fn create_exclusively(target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    let temp = temporary_beside(target);
    let linked = (|| {
        write_new_file(&temp, bytes, mode)?.sync_all()?;
        std::fs::hard_link(&temp, target)
    })();
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_parent(target).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The temporary file a write of `target` goes to before its rename: in the same folder (a
/// rename does not cross filesystems), hidden, and named unpredictably so that nobody can
/// place a link there beforehand (it is created exclusively, without following links, too).
fn temporary_beside(target: &Path) -> PathBuf {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    dir.join(format!(".{name}.tmp-{}-{nonce:016x}", std::process::id()))
}

/// Writes a new file, never an existing one and never through a link (the store's integrity
/// key is made the same way).
pub(crate) fn write_new_file(
    file: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never an existing file, never through a link: a name someone prepared is refused.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(mode)
        .open(file)?;
    f.write_all(bytes)?;
    Ok(f)
}

fn sync_parent(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn vault(dir: &Path) -> FileVault {
        let config = FileVaultConfig {
            dir: dir.join("v"),
            identity: SecretRef::File {
                file: dir.join("key"),
            },
        };
        FileVault::open("local", &config).await.unwrap()
    }

    fn cred(value: &str) -> Credential {
        Credential::new().with("value", SecretString::from(value))
    }

    /// A vault whose `path` holds a first version, promoted from run `t1`: `one`.
    async fn promoted_once(dir: &Path, path: &str) -> (FileVault, StoredVersion) {
        let v = vault(dir).await;
        let first = v
            .write_pending(path, "t1", &cred("one"), Previous::Kept)
            .await
            .unwrap();
        v.promote(path, "t1", None).await.unwrap();
        (v, first)
    }

    /// The `value` field of what consumers read at `path`.
    async fn current_value(v: &FileVault, path: &str) -> String {
        let doc = v.read_current(path).await.unwrap().unwrap();
        doc.current
            .credential
            .get("value")
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[tokio::test]
    async fn a_rollover_moves_pending_to_current_and_current_to_previous() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let p1 = v
            .write_pending("a/b", "t1", &cred("one"), Previous::Kept)
            .await
            .unwrap();
        assert!(
            v.read_current("a/b").await.unwrap().is_none(),
            "pending is not visible to consumers"
        );
        assert_eq!(v.promote("a/b", "t1", None).await.unwrap(), p1.version);
        v.write_pending("a/b", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        // Idempotent mint: the same token keeps the first value.
        let again = v
            .write_pending("a/b", "t2", &cred("other"), Previous::Kept)
            .await
            .unwrap();
        assert_eq!(again.fingerprint, cred("two").fingerprint().to_hex());
        let v2 = v.promote("a/b", "t2", Some(&p1.version)).await.unwrap();
        assert_eq!(
            v.promote("a/b", "t2", Some(&p1.version)).await.unwrap(),
            v2,
            "promote is idempotent"
        );
        let doc = v.read_current("a/b").await.unwrap().unwrap();
        assert_eq!(
            doc.current.credential.get("value").unwrap().expose_secret(),
            "two"
        );
        assert_eq!(
            doc.previous
                .as_ref()
                .unwrap()
                .credential
                .get("value")
                .unwrap()
                .expose_secret(),
            "one"
        );
        assert!(v.read_pending("a/b").await.unwrap().is_none());
        v.drop_previous("a/b", "t2").await.unwrap();
        v.drop_previous("a/b", "t2").await.unwrap();
        assert!(
            v.read_current("a/b")
                .await
                .unwrap()
                .unwrap()
                .previous
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_pending_file_carries_the_current_fields_and_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let (v, p1) = promoted_once(dir.path(), "r").await;
        v.write_pending("r", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        let pending = v.inner.load("r", PENDING_SUFFIX).unwrap().unwrap();
        assert_eq!(pending.meta.previous_version.as_ref(), Some(&p1.version));
        let inode = |suffix| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(v.inner.file("r", suffix)).unwrap().ino()
        };
        let pending_inode = inode(PENDING_SUFFIX);
        v.promote("r", "t2", Some(&p1.version)).await.unwrap();
        assert_eq!(
            inode(CURRENT_SUFFIX),
            pending_inode,
            "promotion renamed the pending file"
        );
        let doc = v.read_current("r").await.unwrap().unwrap();
        let previous = doc.previous.unwrap();
        assert_eq!(previous.version, p1.version);
        assert_eq!(
            previous.credential.get("value").unwrap().expose_secret(),
            "one"
        );
    }

    #[tokio::test]
    async fn a_pending_file_without_the_current_fields_is_promoted_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (v, p1) = promoted_once(dir.path(), "o").await;
        // What an older rotor left mid-run: the pending fields alone.
        let old = FileDocument {
            fields: cred("two"),
            previous: None,
            meta: Meta {
                version: "2".into(),
                token: Some("t2".into()),
                fingerprint: cred("two").fingerprint().to_hex(),
                ..Meta::default()
            },
        };
        v.inner.store("o", PENDING_SUFFIX, &old).await.unwrap();
        v.promote("o", "t2", Some(&p1.version)).await.unwrap();
        assert_eq!(current_value(&v, "o").await, "two");
        let doc = v.read_current("o").await.unwrap().unwrap();
        let previous = doc
            .previous
            .expect("the replaced fields are kept through grace");
        assert_eq!(
            previous.credential.get("value").unwrap().expose_secret(),
            "one"
        );
        assert!(v.read_pending("o").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_out_of_band_change_is_a_conflict_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = promoted_once(dir.path(), "x").await;
        v.write_pending("x", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        let err = v.promote("x", "t2", Some("7")).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Conflict);
        assert_eq!(current_value(&v, "x").await, "one");
    }

    #[tokio::test]
    async fn a_hand_edit_that_keeps_rotors_metadata_is_not_taken_for_rotors_value() {
        let dir = tempfile::tempdir().unwrap();
        let (v, p1) = promoted_once(dir.path(), "h").await;
        let pending = v
            .write_pending("h", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        // Someone re-encrypts both files with other values and rotor's `_rotor` object intact.
        for (suffix, value) in [
            (PENDING_SUFFIX, "edited-pending"),
            (CURRENT_SUFFIX, "edited"),
        ] {
            let mut doc = v.inner.load("h", suffix).unwrap().unwrap();
            doc.fields = cred(value);
            assert_ne!(doc.meta.fingerprint, cred(value).fingerprint().to_hex());
            v.inner.store("h", suffix, &doc).await.unwrap();
        }
        let read = v.read_pending("h").await.unwrap().unwrap();
        assert_ne!(
            read.fingerprint, pending.fingerprint,
            "taken from the fields"
        );
        let digest = cred("two").fingerprint();
        let err = v
            .promote_run(
                "h",
                "t2",
                None,
                Some(&p1.version),
                Some(crate::vault::Verified::Held(&digest)),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            crate::vault::not_verified("local", "h").to_string()
        );
        assert_eq!(current_value(&v, "h").await, "edited");
        let doc = v.read_current("h").await.unwrap().unwrap();
        assert_eq!(
            doc.current.fingerprint,
            cred("edited").fingerprint().to_hex()
        );
    }

    #[tokio::test]
    async fn a_foreign_or_corrupt_file_is_a_clear_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let file = dir.path().join("v/x.age");
        std::fs::write(&file, b"not an age file").unwrap();
        let err = v.read_current("x").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("corrupt or was encrypted to another identity"),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"not an age file");
    }

    #[tokio::test]
    async fn a_file_changed_behind_the_vault_is_read_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = promoted_once(dir.path(), "x").await;
        // Another process on the same folder and identity rotates it.
        let other = vault(dir.path()).await;
        other
            .write_pending("x", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        other.promote("x", "t2", Some("1")).await.unwrap();
        assert_eq!(current_value(&v, "x").await, "two");
        std::fs::write(dir.path().join("v/x.age"), b"not an age file").unwrap();
        let err = v.read_current("x").await.unwrap_err();
        assert!(err.to_string().contains("cannot decrypt"), "{err}");
    }

    #[tokio::test]
    async fn plaintexts_are_forgotten_when_a_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let remembered = |v: &FileVault| v.inner.remembered.lock().unwrap().len();
        v.write_pending("x", "t1", &cred("one"), Previous::Kept)
            .await
            .unwrap();
        v.promote("x", "t1", None).await.unwrap();
        assert_eq!(remembered(&v), 1, "the current file, for the steps to come");
        v.drop_previous("x", "t1").await.unwrap();
        assert_eq!(remembered(&v), 0, "retired: nothing kept");
        v.write_pending("x", "t2", &cred("two"), Previous::Kept)
            .await
            .unwrap();
        v.read_pending("x").await.unwrap();
        assert_eq!(remembered(&v), 2);
        v.discard_pending("x", "t2").await.unwrap();
        assert_eq!(remembered(&v), 0, "rolled back: nothing kept");
    }

    /// The files replaced or removed are closed on a blocking thread, each one: none stays
    /// open (a leaked handle would keep a deleted file's blocks, and a descriptor, forever).
    #[tokio::test]
    async fn replaced_and_removed_files_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        for i in 0..20 {
            let token = format!("t{i}");
            v.write_pending("p", &token, &cred(&format!("v{i}")), Previous::Kept)
                .await
                .unwrap();
            v.promote("p", &token, (i > 0).then(|| i.to_string()).as_deref())
                .await
                .unwrap();
            v.drop_previous("p", &token).await.unwrap();
        }
        v.write_pending("p", "gone", &cred("x"), Previous::Kept)
            .await
            .unwrap();
        v.discard_pending("p", "gone").await.unwrap();
        let deleted_ours = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| {
                    target.starts_with(dir.path())
                        && target.to_string_lossy().ends_with("(deleted)")
                })
                .count()
        };
        let mut open = deleted_ours();
        for _ in 0..100 {
            if open == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            open = deleted_ours();
        }
        assert_eq!(open, 0, "replaced files still open");
        assert_eq!(current_value(&v, "p").await, "v19");
    }

    #[tokio::test]
    async fn a_missing_identity_is_not_replaced_when_files_exist() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        v.write_pending("x", "t", &cred("one"), Previous::Kept)
            .await
            .unwrap();
        v.promote("x", "t", None).await.unwrap();
        std::fs::remove_file(dir.path().join("key")).unwrap();
        let config = FileVaultConfig {
            dir: dir.path().join("v"),
            identity: SecretRef::File {
                file: dir.path().join("key"),
            },
        };
        let err = FileVault::open("local", &config).await.err().unwrap();
        assert!(err.to_string().contains("restore the identity"), "{err}");
    }

    #[test]
    fn a_temporary_file_is_never_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let planted = dir.path().join(".x.age.tmp-1");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = write_new_file(&planted, b"ciphertext", 0o600).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        // And names are not predictable: two for one target differ.
        let target = dir.path().join("x.age");
        assert_ne!(temporary_beside(&target), temporary_beside(&target));
    }

    #[test]
    fn an_identity_is_created_once_and_the_second_creator_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        assert!(create_exclusively(&key, b"first", 0o600).unwrap());
        assert!(!create_exclusively(&key, b"second", 0o600).unwrap());
        assert_eq!(std::fs::read(&key).unwrap(), b"first");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn files_written_with_another_identity_refuse_the_vault_before_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        v.write_pending("x", "t", &cred("one"), Previous::Kept)
            .await
            .unwrap();
        v.promote("x", "t", None).await.unwrap();
        drop(v);
        let before = std::fs::read(dir.path().join("v/x.age")).unwrap();
        // Another key in the identity's place.
        std::fs::remove_file(dir.path().join("key")).unwrap();
        create_exclusively(
            &dir.path().join("key"),
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .as_bytes(),
            0o600,
        )
        .unwrap();
        let config = FileVaultConfig {
            dir: dir.path().join("v"),
            identity: SecretRef::File {
                file: dir.path().join("key"),
            },
        };
        let err = FileVault::open("local", &config).await.err().unwrap();
        assert!(
            err.to_string().contains("encrypted to another identity"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.path().join("v/x.age")).unwrap(), before);
    }

    #[tokio::test]
    async fn a_folder_others_may_write_and_an_identity_others_may_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(vault(dir.path()).await);
        let config = FileVaultConfig {
            dir: dir.path().join("v"),
            identity: SecretRef::File {
                file: dir.path().join("key"),
            },
        };
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("v"), mode("key")), (0o700, 0o600));
        let set = |p: &str, m: u32| {
            std::fs::set_permissions(dir.path().join(p), std::fs::Permissions::from_mode(m))
                .unwrap()
        };
        set("v", 0o777);
        let err = FileVault::open("local", &config).await.err().unwrap();
        assert!(
            err.to_string()
                .contains("writable by group or others (mode 0777)")
                && err.to_string().contains("chmod 0700"),
            "{err}"
        );
        set("v", 0o700);
        set("key", 0o644);
        let err = FileVault::open("local", &config).await.err().unwrap();
        assert!(
            err.to_string()
                .contains("readable by group or others (mode 0644)"),
            "{err}"
        );
    }
}
