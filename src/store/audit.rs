//! The hash chain of the audit log: each row commits to the previous one, so an edited or
//! deleted row breaks the chain at a row `rotor audit verify` can name. The chain is keyed
//! (HMAC-SHA-256 with the installation's integrity key, kept outside the store): a database
//! writer without the key cannot recompute it over rows they changed. Rows cut from the end,
//! or a whole log replaced, are what anchors find (see `Anchor`).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::integrity::IntegrityKey;

/// One audited event. `detail` is free text for people and never holds secret material.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub credential_id: Option<String>,
    pub run_id: Option<String>,
    pub detail: String,
}

impl AuditEntry {
    pub fn new(actor: &str, action: &str) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            credential_id: None,
            run_id: None,
            detail: String::new(),
        }
    }

    pub fn credential(mut self, id: &str) -> Self {
        self.credential_id = Some(id.into());
        self
    }

    pub fn run(mut self, id: &str) -> Self {
        self.run_id = Some(id.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// The hash of the chain head before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash a row must carry: HMAC under `key` of the previous row's hash and the row's
/// fields, JSON-encoded as one array so that no two different rows share an input.
pub fn row_hash(
    key: &IntegrityKey,
    prev_hash: &str,
    seq: i64,
    at: i64,
    entry: &AuditEntry,
) -> String {
    key.mac_hex(&[prev_hash.as_bytes(), row_fields(seq, at, entry).as_bytes()])
}

/// The unkeyed SHA-256 hash of a store made before the chain was keyed: only to check such a
/// chain once, before it is rehashed under the key.
pub fn unkeyed_row_hash(prev_hash: &str, seq: i64, at: i64, entry: &AuditEntry) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(prev_hash.as_bytes())
            .chain_update(row_fields(seq, at, entry).as_bytes())
            .finalize(),
    )
}

fn row_fields(seq: i64, at: i64, entry: &AuditEntry) -> String {
    serde_json::to_string(&(
        seq,
        at,
        &entry.actor,
        &entry.action,
        &entry.credential_id,
        &entry.run_id,
        &entry.detail,
    ))
    .expect("audit fields serialize")
}

/// A row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub credential_id: Option<String>,
    pub run_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            actor: self.actor.clone(),
            action: self.action.clone(),
            credential_id: self.credential_id.clone(),
            run_id: self.run_id.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// Checks a whole chain (rows in `seq` order) against its head, each row's hash computed by
/// `hash` (`row_hash` under the key). Returns the first problem.
pub fn verify_chain(
    rows: &[AuditRow],
    head_seq: i64,
    head_hash: &str,
    hash: impl Fn(&str, i64, i64, &AuditEntry) -> String,
) -> Result<usize, String> {
    let mut prev = GENESIS.to_owned();
    for (i, row) in rows.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        if row.seq != expected_seq {
            return Err(format!(
                "audit row {expected_seq} is missing (the next row present is {})",
                row.seq
            ));
        }
        if row.prev_hash != prev {
            return Err(format!(
                "audit row {} does not follow row {}: a row was changed or removed",
                row.seq,
                row.seq - 1
            ));
        }
        if hash(&row.prev_hash, row.seq, row.at, &row.entry()) != row.hash {
            return Err(format!(
                "audit row {} was modified: its contents do not match its hash",
                row.seq
            ));
        }
        prev = row.hash.clone();
    }
    let last = rows.len() as i64;
    if head_seq != last || head_hash != prev {
        return Err(format!(
            "the audit log ends at row {last} but its head records row {head_seq}: rows were removed from the end"
        ));
    }
    Ok(rows.len())
}

/// The chain's head at one moment, kept outside the store (a log line, a file the operator
/// ships elsewhere): whatever later happens to the store, the row `seq` must still be there
/// with this hash. Written `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not an audit anchor: expected SEQ:HASH, as `rotor audit anchor` prints"
            )
        };
        let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        if seq < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Anchor {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Checks a chain (already verified) against anchors taken earlier: each anchored row must
/// still be there, with the hash it had. Finds rows cut from the end with the head moved
/// back, a wiped log with the head reset, and a chain rewritten from before an anchor.
pub fn check_anchors(rows: &[AuditRow], anchors: &[Anchor]) -> Result<(), String> {
    for anchor in anchors {
        if anchor.seq == 0 {
            continue;
        }
        let Some(row) = usize::try_from(anchor.seq - 1)
            .ok()
            .and_then(|i| rows.get(i))
        else {
            return Err(format!(
                "the audit log ends at row {} but anchor {anchor} records row {}: rows were removed from the end, or the log was replaced",
                rows.len(),
                anchor.seq
            ));
        };
        if row.hash != anchor.hash {
            return Err(format!(
                "audit row {} does not match anchor {anchor}: the log was rewritten or replaced since the anchor was taken",
                anchor.seq
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IntegrityKey {
        IntegrityKey::from_bytes(&[7; 32]).unwrap()
    }

    fn keyed(prev: &str, seq: i64, at: i64, e: &AuditEntry) -> String {
        row_hash(&key(), prev, seq, at, e)
    }

    fn chain(n: usize) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_owned();
        (1..=n as i64)
            .map(|seq| {
                let e = AuditEntry::new("test", "step").detail(format!("row {seq}"));
                let hash = keyed(&prev, seq, seq * 10, &e);
                let row = AuditRow {
                    seq,
                    at: seq * 10,
                    actor: e.actor,
                    action: e.action,
                    credential_id: None,
                    run_id: None,
                    detail: e.detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn anchors_find_a_cut_tail_a_wiped_log_and_a_rewritten_chain() {
        let rows = chain(5);
        let anchor: Anchor = format!("4:{}", rows[3].hash).parse().unwrap();
        assert_eq!(anchor.to_string(), format!("4:{}", rows[3].hash));
        assert!("4:xyz".parse::<Anchor>().is_err());
        assert_eq!(check_anchors(&rows, std::slice::from_ref(&anchor)), Ok(()));
        let cut = check_anchors(&rows[..3], std::slice::from_ref(&anchor)).unwrap_err();
        assert!(cut.contains("rows were removed from the end"), "{cut}");
        let wiped = check_anchors(&[], std::slice::from_ref(&anchor)).unwrap_err();
        assert!(wiped.contains("ends at row 0"), "{wiped}");
        let mut rewritten = rows.clone();
        rewritten[3].hash = "f".repeat(64);
        let problem = check_anchors(&rewritten, &[anchor]).unwrap_err();
        assert!(problem.contains("does not match anchor"), "{problem}");
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let rows = chain(5);
        let head = rows.last().unwrap().hash.clone();
        assert_eq!(verify_chain(&rows, 5, &head, keyed), Ok(5));

        let mut edited = rows.clone();
        edited[2].detail = "row 3, edited".into();
        assert!(
            verify_chain(&edited, 5, &head, keyed)
                .unwrap_err()
                .contains("row 3 was modified")
        );

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert!(
            verify_chain(&deleted, 5, &head, keyed)
                .unwrap_err()
                .contains("row 2 is missing")
        );

        let truncated = &rows[..4];
        assert!(
            verify_chain(truncated, 5, &head, keyed)
                .unwrap_err()
                .contains("removed from the end")
        );

        // Recomputed without the key (as anyone who can write the store could): refused.
        let mut forged = rows.clone();
        forged[2].detail = "row 3, forged".into();
        let mut prev = forged[1].hash.clone();
        for row in &mut forged[2..] {
            row.prev_hash = prev.clone();
            row.hash = unkeyed_row_hash(&prev, row.seq, row.at, &row.entry());
            prev = row.hash.clone();
        }
        assert!(
            verify_chain(&forged, 5, &prev, keyed)
                .unwrap_err()
                .contains("row 3 was modified")
        );
    }
}
