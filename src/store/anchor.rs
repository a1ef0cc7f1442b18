//! Anchors kept outside the store: the audit chain's head, taken at intervals by `rotor run`
//! (and on demand by `rotor audit anchor`), logged as a structured line and, when
//! `[store] anchor_file` names one, appended to a file the operator ships elsewhere. A store
//! writer who cuts rows from the end of the log, wipes it, or rewrites it with the key is
//! found by `rotor audit verify` against any anchor taken before.

use std::io::Write as _;
use std::path::Path;

use super::audit::Anchor;

/// Appends `anchor` and the time to `file`: created 0600 if absent, never through a link,
/// synced before returning.
pub fn append(file: &Path, anchor: &Anchor) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(file)?;
    writeln!(
        f,
        "{anchor} {}",
        crate::clock::rfc3339(chrono::Utc::now().timestamp_millis())
    )?;
    f.sync_data()
}

/// Takes one anchor: logged, and appended to `file` if given. Errors are logged: an anchor
/// missed is taken at the next interval.
pub async fn take(store: &super::Store, file: Option<&Path>) {
    let anchor = match store.audit_anchor().await {
        Ok(anchor) => anchor,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the audit chain's head for an anchor; trying again at the next interval");
            return;
        }
    };
    tracing::info!(target: "rotor::audit::anchor", anchor = %anchor, "audit anchor");
    if let Some(file) = file
        && let Err(e) = append(file, &anchor)
    {
        tracing::warn!(error = %e, file = %file.display(), "could not append the audit anchor");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_appended_to_a_private_file_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anchors");
        let anchor = Anchor {
            seq: 3,
            hash: "a".repeat(64),
        };
        append(&file, &anchor).unwrap();
        append(&file, &anchor).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.starts_with(&format!("3:{} ", "a".repeat(64))),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("victim"), &link).unwrap();
        assert!(append(&link, &anchor).is_err());
        assert!(!dir.path().join("victim").exists());
    }
}
