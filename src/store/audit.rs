//! The hash chain of the audit log: each row commits to the previous one, so an edited or
//! deleted row breaks the chain at a row `rotor audit verify` can name.

use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// The hash a row must carry. The fields are JSON-encoded as one array, so no two different
/// rows share an input.
pub fn row_hash(prev_hash: &str, seq: i64, at: i64, entry: &AuditEntry) -> String {
    let fields = serde_json::to_string(&(
        seq,
        at,
        &entry.actor,
        &entry.action,
        &entry.credential_id,
        &entry.run_id,
        &entry.detail,
    ))
    .expect("audit fields serialize");
    hex::encode(
        Sha256::new()
            .chain_update(prev_hash.as_bytes())
            .chain_update(fields.as_bytes())
            .finalize(),
    )
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

/// Checks a whole chain (rows in `seq` order) against its head. Returns the first problem.
pub fn verify_chain(rows: &[AuditRow], head_seq: i64, head_hash: &str) -> Result<usize, String> {
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
        let entry = AuditEntry {
            actor: row.actor.clone(),
            action: row.action.clone(),
            credential_id: row.credential_id.clone(),
            run_id: row.run_id.clone(),
            detail: row.detail.clone(),
        };
        if row_hash(&row.prev_hash, row.seq, row.at, &entry) != row.hash {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_owned();
        (1..=n as i64)
            .map(|seq| {
                let e = AuditEntry::new("test", "step").detail(format!("row {seq}"));
                let hash = row_hash(&prev, seq, seq * 10, &e);
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
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let rows = chain(5);
        let head = rows.last().unwrap().hash.clone();
        assert_eq!(verify_chain(&rows, 5, &head), Ok(5));

        let mut edited = rows.clone();
        edited[2].detail = "row 3, edited".into();
        assert!(
            verify_chain(&edited, 5, &head)
                .unwrap_err()
                .contains("row 3 was modified")
        );

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert!(
            verify_chain(&deleted, 5, &head)
                .unwrap_err()
                .contains("row 2 is missing")
        );

        let truncated = &rows[..4];
        assert!(
            verify_chain(truncated, 5, &head)
                .unwrap_err()
                .contains("removed from the end")
        );
    }
}
