//! When a credential people rotate by hand (`manual` rotator) is due: the expiry a person
//! recorded with `rotor confirm --expires-at`, else the configured `expires_at` until the first
//! confirmation, else `max_age` after the last confirmation (or after rotor began tracking it).

use crate::config::Credential;
use crate::store::CredentialRow;

/// The due time (ms), or `None` for a credential rotor rotates itself.
pub fn deadline(credential: &Credential, row: &CredentialRow) -> Option<i64> {
    let manual = credential.by_hand()?;
    if let Some(at) = row.expires_at {
        return Some(at);
    }
    if row.current_since.is_none()
        && let Some(at) = manual.expires_at_ms()
    {
        return Some(at);
    }
    let since = row.current_since.unwrap_or(row.created_at);
    credential
        .schedule
        .max_age
        .map(|max_age| since + max_age.as_secs() as i64 * 1000)
        .or_else(|| manual.expires_at_ms())
}

/// When to start reminding people.
pub fn reminder(credential: &Credential, row: &CredentialRow) -> Option<i64> {
    let manual = credential.by_hand()?;
    deadline(credential, row).map(|d| d - manual.remind_before.as_secs() as i64 * 1000)
}
