//! SQLite: the point reads of a rotation's steps, made on the caller's thread through
//! read-only connections of their own.
//!
//! sqlx's SQLite pool holds one connection, the one the group commit takes for each group:
//! a read through it waited for the group in progress, then held the connection (two thread
//! hand-overs) while the next group waited for it. With the two reads of each rotation (the
//! recorded version at mint, the raised alerts at retire) the writer spent more than half its
//! time waiting for the connection. In WAL mode readers do not block the writer nor wait for
//! it, and an indexed lookup in the page cache takes microseconds: less than a hand-over.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::sql;
use super::{CredentialRow, RecordedCurrent, StoreError};

/// Idle connections kept for the next read: one per runtime worker is enough.
const KEPT: usize = 4;

pub(super) struct Reader {
    file: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Reader {
    pub fn new(file: &Path) -> Reader {
        Reader {
            file: file.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let kept = self.idle.lock().expect("store reader lock").pop();
        let conn = match kept {
            Some(conn) => conn,
            None => open(&self.file)?,
        };
        let outcome = read(&conn)?;
        let mut idle = self.idle.lock().expect("store reader lock");
        if idle.len() < KEPT {
            idle.push(conn);
        }
        Ok(outcome)
    }

    /// The version and keyed fingerprint the store last recorded as the credential's current.
    pub fn current_recorded(&self, credential_id: &str) -> Result<RecordedCurrent, StoreError> {
        self.with(|db| {
            db.prepare_cached(sql::READ_CURRENT_RECORDED)?
                .query_row([credential_id], |row| {
                    Ok(RecordedCurrent {
                        version: row.get(0)?,
                        fingerprint: row.get(1)?,
                    })
                })
                .optional()
                .map(Option::unwrap_or_default)
        })
    }

    /// Whether any alert is raised for the credential.
    pub fn any_active_alert(&self, credential_id: &str) -> Result<bool, StoreError> {
        self.with(|db| {
            db.prepare_cached(sql::ANY_ACTIVE_ALERT)?
                .query_row([credential_id], |row| row.get(0))
        })
    }

    /// `Store::credentials_after`. The passes over every credential (the age check each
    /// minute, `rotor status`) read through here: a million rows through the pool's one
    /// connection held back the group commit for seconds each minute, and with it the claims.
    pub fn credentials_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CredentialRow>, StoreError> {
        self.with(|db| {
            db.prepare_cached(&CREDENTIALS_AFTER)?
                .query_map(rusqlite::params![after, limit], credential_row)?
                .collect()
        })
    }
}

/// The columns of a `credentials` row, in the order `credential_row` reads them.
const COLUMNS: [&str; 23] = [
    "id",
    "provider",
    "vault",
    "vault_path",
    "schedule_hash",
    "next_due_at",
    "due_reason",
    "current_version",
    "current_fingerprint",
    "current_since",
    "last_success_at",
    "last_error",
    "last_drill_at",
    "last_drill_outcome",
    "consecutive_failures",
    "removed_at",
    "expires_at",
    "created_at",
    "updated_at",
    "paused_at",
    "paused_until",
    "paused_by",
    "paused_reason",
];

/// `sql::READ_CREDENTIALS_AFTER` with `COLUMNS` named.
static CREDENTIALS_AFTER: LazyLock<String> =
    LazyLock::new(|| sql::READ_CREDENTIALS_AFTER.replace("COLUMNS", &COLUMNS.join(", ")));

/// The position of `name` in `COLUMNS`; a name not there does not compile.
const fn at(name: &str) -> usize {
    let mut i = 0;
    while i < COLUMNS.len() {
        if COLUMNS[i].eq_ignore_ascii_case(name) {
            return i;
        }
        i += 1;
    }
    panic!("not one of the credentials' COLUMNS")
}

/// A `credentials` row, read by position: by name, rusqlite looks each column up among all of
/// the statement's (up to 23 names compared for each of 23 columns), which was half of what a
/// `/metrics` scrape over every credential spent.
fn credential_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialRow> {
    Ok(CredentialRow {
        id: row.get(const { at("id") })?,
        provider: row.get(const { at("provider") })?,
        vault: row.get(const { at("vault") })?,
        vault_path: row.get(const { at("vault_path") })?,
        schedule_hash: row.get(const { at("schedule_hash") })?,
        next_due_at: row.get(const { at("next_due_at") })?,
        due_reason: row.get(const { at("due_reason") })?,
        current_version: row.get(const { at("current_version") })?,
        current_fingerprint: row.get(const { at("current_fingerprint") })?,
        current_since: row.get(const { at("current_since") })?,
        last_success_at: row.get(const { at("last_success_at") })?,
        last_error: row.get(const { at("last_error") })?,
        last_drill_at: row.get(const { at("last_drill_at") })?,
        last_drill_outcome: row.get(const { at("last_drill_outcome") })?,
        consecutive_failures: row.get(const { at("consecutive_failures") })?,
        removed_at: row.get(const { at("removed_at") })?,
        expires_at: row.get(const { at("expires_at") })?,
        created_at: row.get(const { at("created_at") })?,
        updated_at: row.get(const { at("updated_at") })?,
        paused_at: row.get(const { at("paused_at") })?,
        paused_until: row.get(const { at("paused_until") })?,
        paused_by: row.get(const { at("paused_by") })?,
        paused_reason: row.get(const { at("paused_reason") })?,
    })
}

fn open(file: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A reader waits only while another connection recovers the WAL after a crash.
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}
