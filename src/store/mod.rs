//! The durable state: credentials with their persisted `next_due_at`, runs with their state,
//! lease and vault version ids, the step history and the hash-chained audit log.
//!
//! SQLite (embedded, one process) and PostgreSQL (replicas share the work) run the same SQL
//! with `$N` placeholders; the few statements that differ live in `sql`. Every step saves
//! with a compare-and-swap on the run's state and lease owner, in one short transaction that
//! also appends its audit row; no network call ever happens inside a transaction.
//!
//! One save path: a save is the statements of `sql` (`SAVE_RUN`, `END_STEP`,
//! `UPDATE_CREDENTIAL`, the audit row, `PASS_STEP`, `BEGIN_STEP`), bound by the same `bind_*!`
//! macros, executed by a PostgreSQL transaction (`save_run`, the audit row last: the head's row
//! lock serialises every replica until the commit) or by SQLite's group commit (the head moved
//! once for the whole group first: one writer holds the lock anyway). A group refused as a whole
//! is written one save per transaction by the same code.

pub mod anchor;
pub mod audit;
pub mod integrity;
mod sql;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use thiserror::Error;

pub use audit::{AuditEntry, AuditRow};

use crate::model::state::RunState;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "the store at {url} is unavailable: {source}; check that it is running and reachable, and the URL and password"
    )]
    Unavailable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the store at {url} has schema version {found}, newer than this rotor knows ({known}); \
         upgrade rotor (nothing was changed)"
    )]
    SchemaTooNew { url: String, found: i64, known: i64 },
    #[error("migrating the store at {url} failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("invalid store URL {url}: {message}")]
    BadUrl { url: String, message: String },
    /// The integrity key that keys the audit chain is missing or unusable.
    #[error("the store at {url}: {message}")]
    Key { url: String, message: String },
    /// A store file that is not a rotor store, or no longer one: nothing is written to it.
    #[error("the store at {url} is {what}; nothing was written to it. {action}")]
    Damaged {
        url: String,
        what: String,
        action: &'static str,
    },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// The compare-and-swap found the run in another state or under another owner: this
    /// worker's lease was lost and it must stop touching the run.
    #[error(
        "run {run_id} is no longer owned by this worker in state {expected}; another worker took it over"
    )]
    LeaseLost {
        run_id: String,
        expected: &'static str,
    },
    #[error("the store's writer thread stopped; nothing was saved")]
    WriterGone,
    #[error("reading the store failed: {0}")]
    Read(#[from] rusqlite::Error),
    #[error("writing the store failed: {0}")]
    Write(#[source] rusqlite::Error),
    #[error("credential {0} has a live run already (one live run per credential)")]
    RunInFlight(String),
    #[error("credential {0} is not in the store; is it in the config?")]
    UnknownCredential(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection pool to the store, migrated to this rotor's schema.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: String,
    /// Saves, step starts and minted values' fingerprints, written in groups (see
    /// `group_commit`).
    saves: std::sync::Arc<group_commit::GroupCommit>,
    /// SQLite: the point reads of a rotation's steps (see `reader`).
    reads: Option<std::sync::Arc<reader::Reader>>,
    /// The store's time (see `StoreClock`): on PostgreSQL, the database's.
    clock: crate::clock::StoreClock,
    /// Keys the audit chain (see `integrity`); never written to the store.
    key: integrity::IntegrityKey,
    /// Keys every fingerprint the store holds (see `crate::fingerprint`).
    fingerprints: crate::fingerprint::FingerprintKey,
}

/// A transaction that writes. SQLite begins it `IMMEDIATE`, taking the write lock (waiting
/// in the busy handler) before the first read: a deferred transaction that read first cannot
/// take it once another process wrote meanwhile, and fails at once with "database is locked"
/// without waiting, which made processes starting together on one store file fail each other.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Runs `$body` with `$p` bound to whichever pool the store has: the SQL is the same.
macro_rules! with_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// The parameters of the run-saving statements, bound in their placeholders' order onto a
/// query of either dialect: each statement's list is written once, whether it runs alone
/// (PostgreSQL) or in a SQLite batch whose later statements are numbered on (`sql::batch`).
macro_rules! bind_save_run {
    ($q:expr, $run:expr, $expected:expr, $worker:expr, $now:expr) => {
        $q.bind(&$run.id)
            .bind($expected.as_str())
            .bind($worker)
            .bind($run.state.as_str())
            .bind($run.attempts)
            .bind($run.not_before)
            .bind(&$run.lease_owner)
            .bind($run.lease_until)
            .bind(&$run.pending_version)
            .bind(&$run.pending_fingerprint)
            .bind(&$run.replaced_version)
            .bind(&$run.replaced_fingerprint)
            .bind($run.grace_until)
            .bind(&$run.last_error)
            .bind(&$run.error_class)
            .bind($run.stuck_from.map(RunState::as_str))
            .bind($run.finished_at)
            .bind($now)
            .bind(&$run.previous_usage)
    };
}

/// `sql::END_STEP`'s parameters.
macro_rules! bind_end_step {
    ($q:expr, $run:expr, $step:expr, $now:expr) => {
        $q.bind(&$run.id)
            .bind($step.seq)
            .bind($now)
            .bind($step.outcome)
            .bind(&$step.error)
    };
}

/// `sql::UPDATE_CREDENTIAL`'s parameters.
macro_rules! bind_credential_update {
    ($q:expr, $run:expr, $c:expr, $now:expr) => {
        $q.bind(&$run.credential_id)
            .bind(&$c.current_version)
            .bind(&$c.current_fingerprint)
            .bind($c.current_since)
            .bind($c.last_success_at)
            .bind($c.last_error.is_some() as i64)
            .bind($c.last_error.clone().flatten())
            .bind($c.failure.map(i64::from))
            .bind($c.next_due_at.is_some() as i64)
            .bind($c.next_due_at.flatten())
            .bind(&$c.due_reason)
            .bind($now)
    };
}

/// `sql::INSERT_AUDIT`'s parameters: the row `seq` that follows the head's `prev` hash.
macro_rules! bind_audit_row {
    ($q:expr, $seq:expr, $now:expr, $entry:expr, $prev:expr, $hash:expr) => {
        $q.bind($seq)
            .bind($now)
            .bind(&$entry.actor)
            .bind(&$entry.action)
            .bind(&$entry.credential_id)
            .bind(&$entry.run_id)
            .bind(&$entry.detail)
            .bind($prev)
            .bind($hash)
    };
}

/// `sql::BEGIN_STEP`'s parameters.
macro_rules! bind_begin_step {
    ($q:expr, $run:expr, $step:expr, $worker:expr, $now:expr) => {
        $q.bind(&$run.id)
            .bind($step)
            .bind($run.attempts + 1)
            .bind($worker)
            .bind($now)
    };
}

/// Appends the audit rows `$entries` (a slice, in order) inside transaction `$tx`: the head
/// moved on by all of them at once, the rows inserted by one statement per `AUDIT_CHUNK`.
macro_rules! append_audits {
    ($key:expr, $tx:expr, $now:expr, $entries:expr) => {{
        let key: &$crate::store::integrity::IntegrityKey = $key;
        let entries: &[AuditEntry] = $entries;
        if !entries.is_empty() {
            let (last, mut prev): (i64, String) =
                sqlx::query_as($crate::store::sql::ADVANCE_AUDIT_HEAD_BY)
                    .bind(entries.len() as i64)
                    .fetch_one(&mut *$tx)
                    .await?;
            let first = last - entries.len() as i64 + 1;
            let mut rows = Vec::with_capacity(entries.len());
            for (seq, entry) in (first..).zip(entries) {
                let hash = audit::row_hash(key, &prev, seq, $now, entry);
                rows.push((seq, entry, std::mem::replace(&mut prev, hash.clone()), hash));
            }
            for chunk in rows.chunks($crate::store::sql::AUDIT_CHUNK) {
                let mut insert = sqlx::query(sqlx::AssertSqlSafe(
                    $crate::store::sql::insert_audit_rows(chunk.len()),
                ));
                for (seq, entry, prev, hash) in chunk {
                    insert = bind_audit_row!(insert, *seq, $now, entry, prev, hash);
                }
                insert.execute(&mut *$tx).await?;
            }
        }
    }};
}

/// Appends one audit row inside transaction `$tx`, serialised by the update of `audit_head`
/// (a trigger moves the head's hash along with each insert statement).
macro_rules! append_audit {
    ($key:expr, $tx:expr, $now:expr, $entry:expr) => {{
        let entry: &AuditEntry = $entry;
        append_audits!($key, $tx, $now, std::slice::from_ref(entry))
    }};
}

mod group_commit;
pub mod incident;
mod keyed_fingerprints;
mod reader;
pub mod seen;
pub mod totals;

// After the macros above, which it uses.
pub mod alerts;
pub mod drill;
pub mod limits;
pub mod notify;
pub mod outbox;

/// What the store last recorded as a credential's current version.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct RecordedCurrent {
    #[sqlx(rename = "current_version")]
    pub version: Option<String>,
    /// Keyed (see `crate::fingerprint`).
    #[sqlx(rename = "current_fingerprint")]
    pub fingerprint: Option<String>,
}

/// A credential as the store keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    pub id: String,
    pub provider: String,
    pub vault: String,
    pub vault_path: String,
    pub schedule_hash: String,
    pub next_due_at: Option<i64>,
    pub due_reason: Option<String>,
    pub current_version: Option<String>,
    pub current_fingerprint: Option<String>,
    pub current_since: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_drill_at: Option<i64>,
    /// `passed` or `failed`.
    pub last_drill_outcome: Option<String>,
    pub consecutive_failures: i64,
    pub removed_at: Option<i64>,
    /// For a credential rotated by hand: when the current one expires, as a person recorded.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `rotor pause`: since when, until when (`None`: until `rotor resume`), by whom and why.
    pub paused_at: Option<i64>,
    pub paused_until: Option<i64>,
    pub paused_by: Option<String>,
    pub paused_reason: Option<String>,
}

impl CredentialRow {
    /// Whether the credential is paused at `now`: a pause with an end is over once it passed.
    pub fn is_paused(&self, now: i64) -> bool {
        self.pause().is_paused(now)
    }

    pub fn pause(&self) -> Pause {
        Pause {
            paused_at: self.paused_at,
            paused_until: self.paused_until,
        }
    }
}

/// A pass over every credential that holds one page of them at a time
/// (`Store::credential_pages`).
pub struct CredentialPages<'a> {
    store: &'a Store,
    /// The last id read; `None` once the last page has been.
    after: Option<String>,
    size: i64,
}

impl CredentialPages<'_> {
    /// The next page; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<CredentialRow>>, StoreError> {
        let Some(after) = self.after.take() else {
            return Ok(None);
        };
        let page = self.store.credentials_after(&after, self.size).await?;
        if page.len() as i64 == self.size {
            self.after = page.last().map(|row| row.id.clone());
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

/// A credential's `rotor pause`, as one read or write of the store saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pause {
    pub paused_at: Option<i64>,
    /// `None`: until `rotor resume`.
    pub paused_until: Option<i64>,
}

impl Pause {
    /// Whether the credential is paused at `now`: a pause with an end is over once it passed.
    pub fn is_paused(&self, now: i64) -> bool {
        self.paused_at.is_some() && self.paused_until.is_none_or(|until| until > now)
    }
}

/// A step's start, recorded: its record's sequence number, and the credential's pause as the
/// transaction that recorded it saw. A run learns of a `rotor pause` from the write that
/// begins each step, not from a read of its own before it (one round trip a step fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    pub seq: i64,
    pub pause: Pause,
}

/// A run as the store keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub credential_id: String,
    pub token: String,
    /// A state this rotor does not know fails the read (`UnknownState`), never becomes another.
    pub state: RunState,
    pub reason: String,
    pub emergency: i64,
    pub grace_ms: i64,
    pub attempts: i64,
    pub not_before: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub pending_version: Option<String>,
    pub pending_fingerprint: Option<String>,
    pub replaced_version: Option<String>,
    pub replaced_fingerprint: Option<String>,
    pub grace_until: Option<i64>,
    pub last_error: Option<String>,
    pub error_class: Option<String>,
    /// The state a stuck run was in, where `rotor rotate` resumes it.
    pub stuck_from: Option<RunState>,
    /// `dry_run` or `live` for a run of `rotor drill`.
    pub drill: Option<String>,
    /// What a person asked of the run while it was live (`store::incident::Interrupt`).
    pub interrupt: Option<String>,
    /// What the provider told of the replaced credential's use during grace, as JSON
    /// (`engine::usage::PreviousUsage`).
    pub previous_usage: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

impl RunRow {
    pub fn state(&self) -> RunState {
        self.state
    }

    pub fn set_state(&mut self, state: RunState) {
        self.state = state;
    }

    /// Gives the run back to the durable timer: unleased, ready at `at` (ms).
    pub fn wait_until(&mut self, at: i64) {
        self.not_before = at;
        self.lease_owner = None;
        self.lease_until = None;
    }
}

/// One step of a run's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub run_id: String,
    pub seq: i64,
    pub step: String,
    pub attempt: i64,
    pub worker: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
}

/// What `reconcile` did to one credential, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileChange {
    Added {
        id: String,
    },
    ScheduleChanged {
        id: String,
        next_due_at: Option<i64>,
    },
    Removed {
        id: String,
    },
    Restored {
        id: String,
    },
}

/// A credential's desired row, computed from config by the scheduler.
#[derive(Debug, Clone)]
pub struct DesiredCredential<'a> {
    pub id: Cow<'a, str>,
    pub provider: &'static str,
    pub vault: Cow<'a, str>,
    pub vault_path: Cow<'a, str>,
    pub schedule_hash: Cow<'a, str>,
}

/// A new run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub credential_id: String,
    pub token: String,
    pub reason: String,
    pub emergency: bool,
    pub grace_ms: i64,
    pub not_before: i64,
    /// `dry_run` or `live` for a run of `rotor drill`.
    pub drill: Option<&'static str>,
}

/// How the step that is being saved ended.
#[derive(Debug, Clone)]
pub struct StepEnd {
    pub seq: i64,
    pub outcome: &'static str,
    pub error: Option<String>,
}

/// How soon a write must be on disk. PostgreSQL commits are durable either way; SQLite's WAL
/// commits at `synchronous = NORMAL`, on disk at the next checkpoint, so a power loss (not a
/// crash: the WAL is in the kernel by then) may roll the store back to an earlier commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On disk at SQLite's next checkpoint. Enough before a write only the vault sees: the
    /// vault keeps the newest value, and a store rolled back behind it is reported as a path
    /// changed outside rotor (exit 4, an alert, nothing overwritten), never silently lost.
    /// Syncing every save cost a third of the embedded default's rotations a second
    /// (1,220 → 804 /s at 20,000 credentials, benches/README.md).
    #[default]
    Deferred,
    /// On disk before the call returns: the start of a step that changes a provider (mints,
    /// applies, retires, rolls back). A power loss must not leave a key created, a password
    /// set or a credential deleted with no record that rotor was about to do it.
    Synced,
}

/// What a save records after the end of the step it saves, in the same commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Then<'a> {
    /// A step with nothing to do (no provider call, no vault write): recorded as started and
    /// finished, its state reached by this save. Nothing happens between its start and its
    /// end, so a commit of its own would record nothing a crash could need.
    pub passed: Option<&'a str>,
    /// The step that runs next: its start, persisted before it runs.
    pub begin: Option<&'a str>,
    /// How soon this save must be on disk (the next step's side effect decides).
    pub durability: Durability,
}

impl<'a> Then<'a> {
    pub fn begin(step: &'a str) -> Self {
        Then {
            passed: None,
            begin: Some(step),
            durability: Durability::Deferred,
        }
    }
}

/// Changes to a credential's row that a run's save carries atomically.
#[derive(Debug, Clone, Default)]
pub struct CredentialUpdate {
    pub current_version: Option<String>,
    pub current_fingerprint: Option<String>,
    pub current_since: Option<i64>,
    pub last_success_at: Option<i64>,
    /// `Some(None)` clears it.
    pub last_error: Option<Option<String>>,
    /// `Some(true)` counts one more failure, `Some(false)` resets the count.
    pub failure: Option<bool>,
    /// `Some(None)`: manual only.
    pub next_due_at: Option<Option<i64>>,
    pub due_reason: Option<String>,
}

/// Serialises `reconcile` across PostgreSQL replicas (an arbitrary, fixed key).
const RECONCILE_LOCK: i64 = 0x726f_746f_725f_7263;

const MIGRATOR_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
const MIGRATOR_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQLite store (and the WAL and shared-memory files SQLite makes beside it with the same
/// mode) are rotor's user's alone: created 0600 whatever the umask, and an existing store that
/// others may read is tightened to 0600.
fn keep_private(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            tracing::info!(file = %std::path::Path::new(&path).display(), "store file was readable by others: mode set to 0600");
        }
    }
    Ok(())
}

/// Holds an exclusive advisory lock on the folder of `file` until dropped (waiting for it).
fn lock_folder_of(file: &std::path::Path) -> std::io::Result<std::fs::File> {
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let handle = std::fs::File::open(folder)?;
    rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(handle)
}

/// What to do with a damaged store.
const RESTORE: &str = "Restore it from a backup (`sqlite3 FILE \".recover\"` may save its rows), \
    or point --database (or [store] url) at the right file";

/// What is wrong with a SQLite store file, by the error SQLite gave: not a database at all, or
/// corrupt pages.
fn damage_of(e: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    let code: i64 = d.code()?.parse().ok()?;
    match code & 0xff {
        11 => Some("corrupt (SQLite reports damaged pages)"),
        26 => Some("not a SQLite database (another file, or encrypted)"),
        _ => None,
    }
}

/// The URL without a password, for messages.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Store {
    /// Connects and applies migrations. A store whose schema is newer than this build is
    /// refused before anything is written, and so is an empty SQLite file (see `open`).
    /// The integrity key is the one kept beside a SQLite store (see `integrity`); a
    /// PostgreSQL store needs `open` with a key.
    pub async fn connect(url: &str, password: Option<&SecretString>) -> Result<Store, StoreError> {
        Self::open(url, password, None, false).await
    }

    /// `connect`, where `init` lets an existing empty (0-byte) SQLite file become a new
    /// store: without it such a file is refused, as a store that lost its contents would be
    /// (initialising it silently would lose the history and the audit log).
    /// `key` keys the audit chain; `None` is the key beside a SQLite store, and an error for
    /// a PostgreSQL store.
    pub async fn open(
        url: &str,
        password: Option<&SecretString>,
        key: Option<integrity::IntegrityKey>,
        init: bool,
    ) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let damaged = |e: sqlx::Error| match damage_of(&e) {
            Some(what) => StoreError::Damaged {
                url: shown.clone(),
                what: what.to_owned(),
                action: RESTORE,
            },
            None => StoreError::Unavailable {
                url: shown.clone(),
                source: e,
            },
        };
        let bad_url = |e: sqlx::Error| StoreError::BadUrl {
            url: shown.clone(),
            message: e.to_string(),
        };
        let unavailable = |e: sqlx::Error| StoreError::Unavailable {
            url: shown.clone(),
            source: e,
        };
        let mut turn = None;
        let mut key = key;
        let (pool, migrator, saves, reads) = if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(StoreError::BadUrl {
                    url: shown,
                    message: "an in-memory database keeps nothing across a restart: name a file, \
                              such as sqlite://rotor.db"
                        .into(),
                });
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(bad_url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            let file = options.get_filename().to_owned();
            // Processes opening one store take turns from here through the migrations (an
            // advisory lock of its folder: SQLite's own fcntl locks do not see it, and the file
            // may not exist yet): a new store is created and migrated once, and the empty file
            // its creator just made is never taken for a store that lost its contents.
            let io = |e: std::io::Error| StoreError::Unavailable {
                url: shown.clone(),
                source: sqlx::Error::Io(e),
            };
            turn = Some(lock_folder_of(&file).map_err(io)?);
            if !init && std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() == 0) {
                return Err(StoreError::Damaged {
                    url: shown,
                    what: "an empty file (0 bytes)".into(),
                    action: "If it lost its contents, restore it from a backup; to start a new store in it, run the command again with --init",
                });
            }
            keep_private(&file).map_err(io)?;
            if key.is_none() {
                key =
                    Some(
                        integrity::IntegrityKey::beside(&file).map_err(|e| StoreError::Key {
                            url: shown.clone(),
                            message: e.to_string(),
                        })?,
                    );
            }
            // One connection: SQLite has one writer, and writers contending for its lock wait
            // in its busy handler's sleeps, where sqlx's queue would hand over at once.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                // Never recycled: with an idle timeout sqlx 0.9.0 runs a maintenance task,
                // seen spinning at 100% CPU on the runtime's only worker (its idle count had
                // wrapped) once a process lived past the 10-minute default, starving every
                // other task. Without a timeout that task is not started.
                .idle_timeout(None)
                .max_lifetime(None)
                // A local file: no network to have dropped it, and a ping is a hand-over to
                // the connection's thread and back each time the group commit takes its turn.
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(damaged)?;
            let reads = std::sync::Arc::new(reader::Reader::new(&file));
            let writer = group_commit::SqliteWriter::new(
                pool.clone(),
                file,
                key.clone().expect("set above"),
            );
            let saves = group_commit::GroupCommit::start(writer, "rotor-sqlite-writer")
                .map_err(|e| unavailable(sqlx::Error::Io(e)))?;
            (Pool::Sqlite(pool), &MIGRATOR_SQLITE, saves, Some(reads))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            if key.is_none() {
                return Err(StoreError::Key {
                    url: shown,
                    message: "a PostgreSQL store needs an integrity key kept outside it, shared by \
                              its replicas: write `[store] key = { file = \"/etc/rotor/store.key\" }` \
                              (or `{ env = \"NAME\" }`) with at least 32 random bytes, e.g. from \
                              `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`"
                        .into(),
                });
            }
            // A replica paused inside a transaction (SIGSTOP, a VM freeze) would hold its row
            // locks, and SKIP LOCKED claims would pass its runs by however long its lease ran
            // out: the server ends such a session. rotor's transactions last milliseconds and
            // never span a network call.
            let mut options = PgConnectOptions::from_str(url)
                .map_err(bad_url)?
                .options([("idle_in_transaction_session_timeout", "5s")]);
            if let Some(password) = password {
                options = options.password(password.expose_secret());
            }
            let pool = PgPoolOptions::new()
                .max_connections(8)
                // Never recycled, as the SQLite pool above; a connection the server dropped
                // is found by the ping before each acquire.
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .map_err(unavailable)?;
            let writer =
                group_commit::PostgresWriter::new(options, key.clone().expect("checked above"));
            let saves = group_commit::GroupCommit::start(writer, "rotor-postgres-writer")
                .map_err(|e| unavailable(sqlx::Error::Io(e)))?;
            (Pool::Postgres(pool), &MIGRATOR_POSTGRES, saves, None)
        } else {
            return Err(StoreError::BadUrl {
                url: shown,
                message: "expected sqlite:// or postgres://".into(),
            });
        };
        let store = Store {
            pool,
            url: shown,
            saves,
            reads,
            clock: crate::clock::StoreClock::default(),
            fingerprints: key
                .as_ref()
                .expect("each backend has its key")
                .fingerprint_key(),
            key: key.expect("each backend has its key"),
        };
        store.sync_clock().await?;
        store.migrate(migrator).await?;
        store.key_the_chain().await?;
        store.key_the_fingerprints().await?;
        drop(turn);
        Ok(store)
    }

    /// The key every fingerprint this store holds is keyed with (see `crate::fingerprint`).
    pub fn fingerprint_key(&self) -> &crate::fingerprint::FingerprintKey {
        &self.fingerprints
    }

    /// The clock every time written to this store is read from: leases, due times, grace.
    /// On PostgreSQL it is the database's (this host's, corrected by `sync_clock`).
    pub fn clock(&self) -> std::sync::Arc<dyn crate::clock::Clock> {
        std::sync::Arc::new(self.clock.clone())
    }

    /// Measures this host's clock against PostgreSQL's (the fastest of three round trips)
    /// and corrects the store's clock by the difference; a difference over a second is worth
    /// a warning, as the host's own clock is what its logs are stamped with. Nothing on SQLite,
    /// whose writers all share one host's clock. `rotor run` repeats it every minute.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let mut best: Option<(i64, i64, i64)> = None;
        for _ in 0..3 {
            let sent = crate::clock::StoreClock::host_now();
            let (db,): (i64,) = sqlx::query_as(sql::DATABASE_NOW_MS).fetch_one(pool).await?;
            let received = crate::clock::StoreClock::host_now();
            if best.is_none_or(|(s, _, r)| received - sent < r - s) {
                best = Some((sent, db, received));
            }
        }
        let (sent, db, received) = best.expect("three readings");
        let before = self.clock.offset_ms();
        let offset = self.clock.observe(sent, db, received);
        if offset.abs() > 1000 && (offset - before).abs() > 1000 {
            tracing::warn!(
                offset_ms = offset,
                "this host's clock is {:.1} s {} PostgreSQL's; rotor times leases and schedules by the database's",
                offset.abs() as f64 / 1000.0,
                if offset < 0 { "ahead of" } else { "behind" }
            );
        }
        Ok(())
    }

    async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        // A runtime role with the grants of `rotor policy --store` may not create tables, and
        // sqlx's migrator begins with `CREATE TABLE IF NOT EXISTS`, refused without CREATE on
        // the schema: a store already at this schema (same versions, same checksums) is left
        // as it is.
        if let Pool::Postgres(p) = &self.pool
            && let Ok(applied) = sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(p)
            .await
            && applied
                .iter()
                .map(|(v, c)| (*v, c.as_slice()))
                .eq(migrator.iter().map(|m| (m.version, m.checksum.as_ref())))
        {
            return Ok(());
        }
        let result = with_pool!(self, p => migrator.run(p).await);
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
                Err(StoreError::SchemaTooNew {
                    url: self.url.clone(),
                    found,
                    known,
                })
            }
            Err(sqlx::migrate::MigrateError::Execute(e)) if damage_of(&e).is_some() => {
                Err(StoreError::Damaged {
                    url: self.url.clone(),
                    what: damage_of(&e).unwrap_or_default().to_owned(),
                    action: RESTORE,
                })
            }
            Err(sqlx::migrate::MigrateError::Execute(e)) if is_connection_error(&e) => {
                Err(StoreError::Unavailable {
                    url: self.url.clone(),
                    source: e,
                })
            }
            Err(source) => Err(StoreError::Migrate {
                url: self.url.clone(),
                source,
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// Brings the credentials table in line with config: new credentials are added due now,
    /// changed schedules get `next_due_at` from `recompute`, credentials gone from config are
    /// marked removed (never deleted: their history stays). Returns what changed.
    pub async fn reconcile(
        &self,
        desired: &[DesiredCredential<'_>],
        now: i64,
        recompute: impl Fn(&str, Option<i64>) -> (Option<i64>, &'static str),
    ) -> Result<Vec<ReconcileChange>, StoreError> {
        let mut changes = Vec::new();
        let postgres = self.backend() == Backend::Postgres;
        // Writes the new rows in `added`, many to a statement, in either dialect's transaction.
        macro_rules! insert_added {
            ($tx:expr, $added:expr) => {{
                let sql = format!(
                    "{}{}",
                    sql::INSERT_CREDENTIALS_VALUES,
                    placeholders(self.backend(), $added.len(), 9)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (d, (due, reason)) in $added.iter() {
                    query = query
                        .bind(d.id.as_ref())
                        .bind(d.provider)
                        .bind(d.vault.as_ref())
                        .bind(d.vault_path.as_ref())
                        .bind(d.schedule_hash.as_ref())
                        .bind(*due)
                        .bind(*reason)
                        .bind(now)
                        .bind(now);
                }
                query.execute(&mut *$tx).await?;
            }};
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // Replicas starting together reconcile one after the other, each seeing what the
            // one before it wrote.
            if postgres {
                sqlx::query(sql::ADVISORY_LOCK)
                    .bind(RECONCILE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let existing: Vec<(String, String, Option<i64>, Option<i64>)> =
                sqlx::query_as(sql::RECONCILE_KNOWN)
                    .fetch_all(&mut *tx)
                    .await?;
            // Each known credential, and whether the config still has it.
            let mut existing: std::collections::HashMap<_, _> = existing
                .into_iter()
                .map(|(id, hash, since, removed)| (id, (hash, since, removed, false)))
                .collect();
            // New rows are written a statement of many at a time as they are found: each
            // statement is a round trip, and a million new credentials are not held twice.
            let mut added = Vec::with_capacity(INSERT_BATCH.min(desired.len()));
            for d in desired {
                match existing.get_mut(d.id.as_ref()) {
                    None => {
                        added.push((d, recompute(&d.id, None)));
                        changes.push(ReconcileChange::Added { id: d.id.clone().into_owned() });
                    }
                    Some((hash, since, removed, wanted)) => {
                        *wanted = true;
                        if removed.is_some() {
                            sqlx::query(sql::RESTORE_CREDENTIAL)
                                .bind(d.id.as_ref()).bind(now).execute(&mut *tx).await?;
                            changes.push(ReconcileChange::Restored { id: d.id.clone().into_owned() });
                        }
                        if *hash != d.schedule_hash {
                            let (due, reason) = recompute(&d.id, *since);
                            sqlx::query(sql::RESCHEDULE_CREDENTIAL,
                            )
                            .bind(d.id.as_ref()).bind(d.schedule_hash.as_ref()).bind(due).bind(reason)
                            .bind(d.provider).bind(d.vault.as_ref()).bind(d.vault_path.as_ref()).bind(now)
                            .execute(&mut *tx).await?;
                            changes.push(ReconcileChange::ScheduleChanged { id: d.id.clone().into_owned(), next_due_at: due });
                        }
                    }
                }
                if added.len() == INSERT_BATCH {
                    insert_added!(tx, added);
                    added.clear();
                }
            }
            if !added.is_empty() {
                insert_added!(tx, added);
            }
            let mut gone: Vec<&String> = existing
                .iter()
                .filter(|(_, (_, _, removed, wanted))| removed.is_none() && !wanted)
                .map(|(id, _)| id)
                .collect();
            gone.sort();
            for id in gone {
                sqlx::query(sql::REMOVE_CREDENTIAL)
                    .bind(id).bind(now).execute(&mut *tx).await?;
                changes.push(ReconcileChange::Removed { id: id.clone() });
            }
            if !changes.is_empty() {
                let detail = format!("{} change(s) from config", changes.len());
                append_audit!(&self.key, tx, now, &AuditEntry::new("rotor", "reconcile").detail(detail));
            }
            tx.commit().await?;
        });
        Ok(changes)
    }

    /// Credentials that are due at `now`, are not removed and have no live run.
    pub async fn due_credentials(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(
            with_pool!(self, p => sqlx::query_as(sql::DUE_CREDENTIALS).bind(now).bind(limit).fetch_all(p).await?),
        )
    }

    /// The earliest future time at which something becomes due or ready (a credential's
    /// `next_due_at`, a run's timer, a foreign lease's expiry), so the daemon can sleep until
    /// then instead of polling.
    pub async fn next_wakeup(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => sql::NEXT_WAKEUP,
            Backend::Postgres => sql::NEXT_WAKEUP_POSTGRES,
        };
        let (t,): (Option<i64>,) =
            with_pool!(self, p => sqlx::query_as(sql).bind(now).fetch_one(p).await?);
        Ok(t)
    }

    /// Inserts runs; a credential that already has a live run is skipped (the partial unique
    /// index decides, so two replicas planning the same credential create one run).
    pub async fn insert_runs(&self, runs: &[NewRun], now: i64) -> Result<usize, StoreError> {
        let mut inserted = 0;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut planned = Vec::new();
            // A statement per chunk, not two per run: each statement is a round trip (a
            // hand-over to SQLite's thread), and on SQLite the group commit waits for them.
            for chunk in runs.chunks(sql::RUN_CHUNK) {
                let mut insert = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql::insert_runs(chunk.len())));
                for r in chunk {
                    insert = insert.bind(&r.id).bind(&r.credential_id).bind(&r.token).bind(&r.reason)
                        .bind(r.emergency as i64).bind(r.grace_ms).bind(r.not_before).bind(now);
                }
                let ids = insert.fetch_all(&mut *tx).await?;
                if ids.is_empty() {
                    continue;
                }
                let fresh: Vec<&NewRun> = chunk.iter().filter(|r| ids.contains(&r.id)).collect();
                inserted += fresh.len();
                // Out of the due set while the run is live; promotion or rollback sets it anew.
                let mut clear = sqlx::query(sqlx::AssertSqlSafe(sql::clear_next_due(fresh.len())));
                for r in &fresh {
                    clear = clear.bind(&r.credential_id);
                }
                clear.execute(&mut *tx).await?;
                planned.extend(fresh.iter().map(|r| {
                    let detail = format!("reason {}{}", r.reason, if r.emergency { ", emergency" } else { "" });
                    AuditEntry::new("rotor", "run_planned").credential(&r.credential_id).run(&r.id).detail(detail)
                }));
            }
            append_audits!(&self.key, tx, now, &planned);
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// Claims up to `limit` runs that are ready (their `not_before` has passed) and unowned or
    /// whose lease expired, for `worker` until `lease_until`. One statement: no reaper needed.
    pub async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError> {
        let statement = match self.backend() {
            Backend::Sqlite => sql::CLAIM_SQLITE,
            Backend::Postgres => sql::CLAIM_POSTGRES,
        };
        let claimed: Vec<RunRow> = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let claimed: Vec<RunRow> = sqlx::query_as(statement)
                .bind(worker)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let entries: Vec<AuditEntry> = claimed.iter().map(|run| claim_entry(worker, run)).collect();
            append_audits!(&self.key, tx, now, &entries);
            tx.commit().await?;
            claimed
        });
        Ok(claimed)
    }

    /// Claims one run by id, if it is ready and not leased by a live worker.
    pub async fn claim_run(
        &self,
        run_id: &str,
        worker: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<RunRow>, StoreError> {
        let sql = sql::CLAIM_RUN;
        Ok(
            with_pool!(self, p => sqlx::query_as(sql).bind(worker).bind(lease_until).bind(run_id).bind(now).fetch_optional(p).await?),
        )
    }

    /// Whether `worker` still owns a run with a lease lasting at least `until`. A lease that
    /// expired without a taker is no longer held here (any worker may claim it at any moment),
    /// although the fenced save would still accept it.
    pub async fn lease_held(
        &self,
        run_id: &str,
        worker: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let held: i64 = with_pool!(self, p => sqlx::query_scalar(sql::LEASE_HELD,
        )
        .bind(run_id)
        .bind(worker)
        .bind(until)
        .fetch_one(p)
        .await?);
        Ok(held > 0)
    }

    /// The live run of a credential, if any.
    pub async fn live_run(&self, credential_id: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(
            with_pool!(self, p => sqlx::query_as(sql::LIVE_RUN).bind(credential_id).fetch_optional(p).await?),
        )
    }

    /// Extends the leases `worker` holds on `run_ids`. Returns how many it still holds.
    pub async fn heartbeat(
        &self,
        worker: &str,
        run_ids: &[String],
        lease_until: i64,
    ) -> Result<u64, StoreError> {
        let mut held = 0;
        with_pool!(self, p => {
            for id in run_ids {
                held += sqlx::query(sql::HEARTBEAT)
                    .bind(id).bind(worker).bind(lease_until).execute(p).await?.rows_affected();
            }
        });
        Ok(held)
    }

    /// Records that a step is starting (persisted before it runs). Fenced by the lease.
    pub async fn begin_step(
        &self,
        run: &RunRow,
        step: &str,
        worker: &str,
        now: i64,
        durability: Durability,
    ) -> Result<Begun, StoreError> {
        let begin = group_commit::Write::Begin {
            run: run.clone(),
            step: step.to_owned(),
            worker: worker.to_owned(),
            now,
            durability,
        };
        self.saves
            .write(begin)
            .await?
            .ok_or_else(|| StoreError::Query(sqlx::Error::RowNotFound))
    }

    /// Saves a run after a step: compare-and-swap on (`id`, `expected` state, lease owner),
    /// the step's outcome, the credential's update and an audit row, in one transaction.
    /// Zero rows changed means the lease was lost: nothing is written.
    #[allow(clippy::too_many_arguments)] // one statement's worth of columns, named at the call
    pub async fn save_run(
        &self,
        run: &RunRow,
        expected: RunState,
        worker: &str,
        step: Option<&StepEnd>,
        credential: Option<&CredentialUpdate>,
        audit: &AuditEntry,
        now: i64,
        then: Then<'_>,
    ) -> Result<Option<Begun>, StoreError> {
        let save = group_commit::Save {
            run: run.clone(),
            expected,
            worker: worker.to_owned(),
            step: step.cloned(),
            credential: credential.cloned(),
            audit: audit.clone(),
            now,
            passed: then.passed.map(str::to_owned),
            begin_next: then.begin.map(str::to_owned),
            durability: then.durability,
        };
        self.saves.write(group_commit::Write::Save(save)).await
    }

    /// Gives up `worker`'s lease on a run without changing its state (shutdown, or a step that
    /// waits for a timer).
    pub async fn release(&self, run_id: &str, worker: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(sql::RELEASE)
                .bind(run_id).bind(worker).execute(p).await?;
        });
        Ok(())
    }

    /// Asks for a rotation now (`rotor rotate`). A stuck run is retried from its state instead.
    pub async fn request_rotation(
        &self,
        run: &NewRun,
        actor: &str,
        now: i64,
    ) -> Result<&'static str, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let exists: Option<(String,)> = sqlx::query_as(sql::CREDENTIAL_EXISTS)
                .bind(&run.credential_id).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                return Err(StoreError::UnknownCredential(run.credential_id.clone()));
            }
            let unstuck = sqlx::query(sql::RESUME_STUCK_RUN,
            )
            .bind(&run.credential_id).bind(now).execute(&mut *tx).await?.rows_affected();
            let outcome = if unstuck > 0 {
                "stuck"
            } else {
                let done = sqlx::query(sql::REQUEST_RUN,
                )
                .bind(&run.id).bind(&run.credential_id).bind(&run.token).bind(&run.reason)
                .bind(run.emergency as i64).bind(run.grace_ms).bind(now).bind(run.drill)
                .execute(&mut *tx).await?.rows_affected();
                if done == 0 {
                    return Err(StoreError::RunInFlight(run.credential_id.clone()));
                }
                sqlx::query(sql::CLEAR_NEXT_DUE)
                    .bind(&run.credential_id).execute(&mut *tx).await?;
                "planned"
            };
            append_audit!(&self.key, tx, now, &requested(run, actor));
            tx.commit().await?;
            self.announce_work().await?;
            Ok(outcome)
        })
    }

    /// The channel idle PostgreSQL replicas listen on for new work.
    pub const WORK_CHANNEL: &str = "rotor_work";

    /// Wakes idle replicas (PostgreSQL `NOTIFY`); with SQLite there is only one process.
    pub async fn announce_work(&self) -> Result<(), StoreError> {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::query(sql::ANNOUNCE_WORK)
                .bind(Self::WORK_CHANNEL)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Listens for `announce_work` of other processes; `None` for SQLite. Each notification is
    /// passed on to `wake`. The listener reconnects by itself after the database restarts, and
    /// wakes `wake` then too: what was announced while it was away never arrives.
    pub async fn listen_for_work(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        async fn listen(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(Store::WORK_CHANNEL).await?;
            Ok(listener)
        }
        let mut listener = Some(listen(pool).await?);
        let pool = pool.clone();
        Ok(Some(tokio::spawn(async move {
            let mut failures = 0;
            loop {
                let current = match listener.as_mut() {
                    Some(current) => current,
                    None => match listen(&pool).await {
                        Ok(fresh) => {
                            failures = 0;
                            tracing::info!("listening for work notifications again");
                            wake.notify_one();
                            listener.insert(fresh)
                        }
                        // The store is shutting down.
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => {
                            failures += 1;
                            let wait = crate::policy::backoff::STORE_LOST.delay(failures);
                            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "lost the work notifications; reconnecting");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    },
                };
                // `recv` would reconnect without a word; `try_recv` says when it did, so that
                // what was announced while the connection was down is looked for.
                match current.try_recv().await {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => {
                        tracing::warn!(
                            "the work notifications' connection dropped and is back; looking for work announced meanwhile"
                        );
                        wake.notify_one();
                    }
                    Err(sqlx::Error::PoolClosed) => return,
                    // Any other error may leave the listener on a dead connection: start over.
                    Err(e) => {
                        failures += 1;
                        let wait = crate::policy::backoff::STORE_LOST.delay(failures);
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "lost the work notifications; reconnecting");
                        listener = None;
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        })))
    }

    pub async fn credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::CREDENTIALS).fetch_all(p).await?))
    }

    /// Every credential, `size` at a time in id order (`CredentialPages::next`).
    pub fn credential_pages(&self, size: i64) -> CredentialPages<'_> {
        CredentialPages {
            store: self,
            after: Some(String::new()),
            size,
        }
    }

    /// The credentials after `after` in id order, at most `limit`: `credentials` a page at a
    /// time ("" for the first page), for a pass over them all that must not hold the store or
    /// the runtime for the whole table.
    pub async fn credentials_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CredentialRow>, StoreError> {
        if let Some(reads) = &self.reads {
            return reads.credentials_after(after, limit);
        }
        Ok(with_pool!(self, p => sqlx::query_as(sql::CREDENTIALS_AFTER
        ).bind(after).bind(limit).fetch_all(p).await?))
    }

    /// The rows `statement` reads for the credentials with ids in (`after`, `through`]: those
    /// of one page of `credential_pages` (its `$1` and `$2`), so that a pass over a million
    /// credentials holds a page's.
    pub(crate) async fn of_page<T>(
        &self,
        statement: &'static str,
        after: &str,
        through: &str,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        Ok(
            with_pool!(self, p => sqlx::query_as(statement).bind(after).bind(through).fetch_all(p).await?),
        )
    }

    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::CREDENTIAL).bind(id).fetch_optional(p).await?))
    }

    /// The version and keyed fingerprint the store last recorded as the credential's current
    /// one (neither, for a credential never promoted or confirmed by hand).
    pub async fn current_recorded(&self, id: &str) -> Result<RecordedCurrent, StoreError> {
        match &self.reads {
            Some(reads) => reads.current_recorded(id),
            None => Ok(with_pool!(self, p => sqlx::query_as::<_, RecordedCurrent>(
                sql::CURRENT_RECORDED)
            .bind(id)
            .fetch_optional(p)
            .await?)
            .unwrap_or_default()),
        }
    }

    pub async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::RUN).bind(id).fetch_optional(p).await?))
    }

    /// The live run of each credential that has one.
    pub async fn live_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::LIVE_RUNS).fetch_all(p).await?))
    }

    /// The live run of each credential that has one, by credential id.
    pub async fn live_runs_by_credential(
        &self,
    ) -> Result<std::collections::HashMap<String, RunRow>, StoreError> {
        let runs = self.live_runs().await?;
        Ok(runs
            .into_iter()
            .map(|r| (r.credential_id.clone(), r))
            .collect())
    }

    /// Runs, newest first, of one credential or of all.
    pub async fn runs(
        &self,
        credential_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::RUNS
        ).bind(credential_id).bind(limit).fetch_all(p).await?))
    }

    /// Records that a person rotated a credential by hand (`rotor confirm`), with its audit row.
    pub async fn confirm_manual(
        &self,
        id: &str,
        expires_at: Option<i64>,
        audit: &AuditEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(sql::CONFIRM_MANUAL,
            )
            .bind(id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::UnknownCredential(id.to_owned()));
            }
            append_audit!(&self.key, tx, now, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(sql::PING).execute(pool).await?;
            Ok(())
        })
    }

    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::STEPS)
            .bind(run_id).fetch_all(p).await?))
    }

    /// Count of runs that are not finished, for `--once` and shutdown.
    pub async fn runs_ready_before(&self, until: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = with_pool!(self, p => sqlx::query_as(sql::RUNS_READY_BEFORE).bind(until).fetch_one(p).await?);
        Ok(n)
    }

    /// Appends one audit row on its own (CLI actions, alerts).
    pub async fn audit(&self, entry: &AuditEntry, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            append_audit!(&self.key, tx, now, entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Checks the whole audit chain; `Ok(rows)` or the first problem, naming the row.
    pub async fn verify_audit(&self) -> Result<Result<usize, String>, StoreError> {
        self.verify_audit_against(&[]).await
    }

    /// The chain's head now, to keep outside the store (see `audit::Anchor`).
    pub async fn audit_anchor(&self) -> Result<audit::Anchor, StoreError> {
        let (seq, hash): (i64, String) =
            with_pool!(self, p => sqlx::query_as(sql::AUDIT_HEAD).fetch_one(p).await?);
        Ok(audit::Anchor { seq, hash })
    }

    /// `verify_audit`, and each anchor taken earlier still holds.
    pub async fn verify_audit_against(
        &self,
        anchors: &[audit::Anchor],
    ) -> Result<Result<usize, String>, StoreError> {
        let (rows, head): (Vec<AuditRow>, (i64, String)) = with_pool!(self, p => {
            let rows = sqlx::query_as(sql::AUDIT_ROWS).fetch_all(p).await?;
            let head = sqlx::query_as(sql::AUDIT_HEAD).fetch_one(p).await?;
            (rows, head)
        });
        let verified = audit::verify_chain(&rows, head.0, &head.1, |prev, seq, at, entry| {
            audit::row_hash(&self.key, prev, seq, at, entry)
        });
        Ok(verified.and_then(|n| audit::check_anchors(&rows, anchors).map(|()| n)))
    }

    /// Keys a chain made before the chain was keyed, once: the rows are checked as they were
    /// written (unkeyed SHA-256), rehashed under the key in one transaction, and a row saying
    /// so, and whether the unkeyed chain was intact, is appended. From then on, a row changed
    /// without the key no longer matches. (Whoever could rewrite the unkeyed chain before it
    /// was keyed is beyond what a key can undo; anchors taken before show it.)
    async fn key_the_chain(&self) -> Result<(), StoreError> {
        let (keyed,): (i64,) =
            with_pool!(self, p => sqlx::query_as(sql::AUDIT_KEYED).fetch_one(p).await?);
        if keyed != 0 {
            return Ok(());
        }
        let now = crate::clock::Clock::now_ms(&self.clock);
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let (keyed,): (i64,) = sqlx::query_as(sql::LOCK_AUDIT_KEYED).fetch_one(&mut *tx).await?;
            if keyed == 0 {
                let rows: Vec<AuditRow> = sqlx::query_as(sql::AUDIT_ROWS).fetch_all(&mut *tx).await?;
                let (head_seq, head_hash): (i64, String) =
                    sqlx::query_as(sql::AUDIT_HEAD).fetch_one(&mut *tx).await?;
                let before = audit::verify_chain(&rows, head_seq, &head_hash, audit::unkeyed_row_hash);
                let mut prev = audit::GENESIS.to_owned();
                for row in &rows {
                    let hash = audit::row_hash(&self.key, &prev, row.seq, row.at, &row.entry());
                    sqlx::query(sql::REHASH_AUDIT_ROW).bind(&prev).bind(&hash).bind(row.seq)
                        .execute(&mut *tx).await?;
                    prev = hash;
                }
                sqlx::query(sql::KEYED_AUDIT_HEAD).bind(&prev).execute(&mut *tx).await?;
                if !rows.is_empty() {
                    let detail = match &before {
                        Ok(n) => format!("{n} rows rehashed under the integrity key; the unkeyed chain was intact"),
                        Err(problem) => format!(
                            "{} rows rehashed under the integrity key; the unkeyed chain was already broken: {problem}",
                            rows.len()
                        ),
                    };
                    if let Err(problem) = &before {
                        tracing::warn!(problem = %problem, "the audit chain was broken before it was keyed; the row that keys it says so");
                    }
                    append_audit!(&self.key, tx, now, &AuditEntry::new("rotor", "audit_keyed").detail(detail));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's parameter limits.
const INSERT_BATCH: usize = 500;

/// `($1, $2, ...), ($n+1, ...)` for `rows` rows of `columns` parameters. SQLite gets plain
/// `?`: it looks numbered parameters up by name, one linear scan per bind.
fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            match backend {
                Backend::Sqlite => text.push('?'),
                Backend::Postgres => text.push_str(&format!("${}", row * columns + column + 1)),
            }
        }
        text.push(')');
    }
    text
}

impl StoreError {
    /// The store could not be reached (down, restarting, failing over), as opposed to a
    /// statement it refused: waiting and trying again is the cure.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } | StoreError::Damaged { .. } => true,
            StoreError::Query(e) => {
                is_connection_error(e)
                    || damage_of(e).is_some()
                    || matches!(e, sqlx::Error::Database(d)
                        // connection_exception (08...), admin_shutdown, crash_shutdown,
                        // cannot_connect_now (57P01..57P03)
                        if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")))
            }
            StoreError::Read(e) | StoreError::Write(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DatabaseCorrupt
                        | rusqlite::ErrorCode::NotADatabase
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            _ => false,
        }
    }
}

/// The audit row of a claim.
fn claim_entry(worker: &str, run: &RunRow) -> AuditEntry {
    AuditEntry::new(worker, "claim")
        .credential(&run.credential_id)
        .run(&run.id)
        .detail(format!("in state {}", run.state))
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
    )
}

/// The audit entry of a rotation someone asked for.
fn requested(run: &NewRun, actor: &str) -> AuditEntry {
    let detail = format!(
        "requested{}",
        if run.emergency {
            " (emergency, grace 0)"
        } else {
            ""
        }
    );
    AuditEntry::new(actor, "rotate")
        .credential(&run.credential_id)
        .run(&run.id)
        .detail(detail)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_in_memory_store_is_refused() {
        for url in ["sqlite::memory:", "sqlite://rotor.db?mode=memory"] {
            let err = super::Store::connect(url, None).await.err().unwrap();
            assert!(err.to_string().contains("in-memory"), "{url}: {err}");
        }
    }
}
