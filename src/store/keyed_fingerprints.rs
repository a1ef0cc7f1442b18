//! Keys the fingerprints of a store written before fingerprints were keyed, once, at open.
//!
//! Such a store holds SHA-256 digests where it now holds their keyed form
//! (`crate::fingerprint`). Each is rewritten as `FingerprintKey::of_hex` of itself, in one
//! transaction with the flag that says it was done (taken under the audit head's row lock, so
//! replicas opening the store together do it once), and an audit row says how many. Nothing
//! needs a value: that is why fingerprints key the digest.
//!
//! What is not rewritten: the audit log's own rows (`retired sha256:…` in their detail), which
//! the chain seals as they were written.

use sqlx::Row;

use super::audit::{self, AuditEntry};
use super::{BeginWrite, INSERT_BATCH, Pool, Store, StoreError, sql};

/// One column of fingerprints and the primary key its rows are rewritten by.
struct Column {
    table: &'static str,
    key: &'static [&'static str],
    column: &'static str,
}

const COLUMNS: [Column; 4] = [
    Column {
        table: "credentials",
        key: &["id"],
        column: "current_fingerprint",
    },
    Column {
        table: "runs",
        key: &["id"],
        column: "pending_fingerprint",
    },
    Column {
        table: "runs",
        key: &["id"],
        column: "replaced_fingerprint",
    },
    Column {
        table: "value_fingerprints",
        key: &["run_id", "field"],
        column: "fingerprint",
    },
];

impl Column {
    fn select(&self) -> String {
        format!(
            "SELECT {}, {} FROM {} WHERE {} IS NOT NULL",
            self.key.join(", "),
            self.column,
            self.table,
            self.column
        )
    }

    /// Rewrites `rows` rows at once: a join of the table on its key with a VALUES list of
    /// (key..., keyed fingerprint), which both dialects name column1, column2, ...
    fn update(&self, backend: super::Backend, rows: usize) -> String {
        let width = self.key.len() + 1;
        let on: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{}.{k} = m.column{}", self.table, i + 1))
            .collect();
        format!(
            "UPDATE {} SET {} = m.column{width} FROM (VALUES {}) AS m WHERE {}",
            self.table,
            self.column,
            super::placeholders(backend, rows, width),
            on.join(" AND ")
        )
    }
}

impl Store {
    /// Keys the store's fingerprints if they are not yet: see the module.
    pub(super) async fn key_the_fingerprints(&self) -> Result<(), StoreError> {
        let (keyed,): (i64,) =
            with_pool!(self, p => sqlx::query_as(sql::FINGERPRINTS_KEYED).fetch_one(p).await?);
        if keyed != 0 {
            return Ok(());
        }
        let now = crate::clock::Clock::now_ms(&self.clock);
        let backend = self.backend();
        let key = &self.fingerprints;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let (keyed,): (i64,) =
                sqlx::query_as(sql::LOCK_FINGERPRINTS_KEYED).fetch_one(&mut *tx).await?;
            if keyed == 0 {
                let mut counts = Vec::new();
                let (mut total, mut left) = (0usize, 0usize);
                // Table and column names are this module's constants; values are bound.
                for column in &COLUMNS {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(column.select()))
                        .fetch_all(&mut *tx).await?;
                    let mut rewritten: Vec<Vec<String>> = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let mut values: Vec<String> = (0..=column.key.len())
                            .map(|i| row.try_get::<String, _>(i))
                            .collect::<Result<_, _>>()?;
                        let digest = values.pop().expect("the fingerprint column");
                        match key.of_hex(&digest) {
                            Some(keyed) => {
                                values.push(keyed);
                                rewritten.push(values);
                            }
                            None => left += 1,
                        }
                    }
                    for batch in rewritten.chunks(INSERT_BATCH / 2) {
                        let mut query =
                            sqlx::query(sqlx::AssertSqlSafe(column.update(backend, batch.len())));
                        for value in batch.iter().flatten() {
                            query = query.bind(value);
                        }
                        query.execute(&mut *tx).await?;
                    }
                    total += rewritten.len();
                    counts.push(format!("{} {}.{}", rewritten.len(), column.table, column.column));
                }
                let payloads: Vec<(i64, String)> =
                    sqlx::query_as(sql::NOTIFY_PAYLOADS).fetch_all(&mut *tx).await?;
                let mut notifications = 0usize;
                for (id, payload) in payloads {
                    if let Some(keyed) = key_payload(key, &payload) {
                        sqlx::query(sql::SET_NOTIFY_PAYLOAD).bind(keyed).bind(id)
                            .execute(&mut *tx).await?;
                        notifications += 1;
                    }
                }
                counts.push(format!("{notifications} notification payloads"));
                sqlx::query(sql::SET_FINGERPRINTS_KEYED).execute(&mut *tx).await?;
                if total + notifications + left > 0 {
                    let mut detail = format!("fingerprints keyed: {}", counts.join(", "));
                    if left > 0 {
                        detail.push_str(&format!("; {left} were not SHA-256 digests and are left as they were"));
                    }
                    tracing::info!(detail = %detail, "keyed the store's fingerprints");
                    append_audit!(&self.key, tx, now, &AuditEntry::new("rotor", "fingerprints_keyed").detail(detail));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// A notification payload with its `sha256:` fingerprints keyed; `None` when it has none.
fn key_payload(key: &crate::fingerprint::FingerprintKey, payload: &str) -> Option<String> {
    let mut event: serde_json::Value = serde_json::from_str(payload).ok()?;
    let mut changed = false;
    for field in ["fingerprint", "previous_fingerprint"] {
        let keyed = event
            .get(field)
            .and_then(|v| v.as_str())
            .and_then(|v| v.strip_prefix("sha256:"))
            .and_then(|digest| key.of_hex(digest));
        if let Some(keyed) = keyed {
            event[field] = serde_json::Value::String(crate::fingerprint::shown(&keyed));
            changed = true;
        }
    }
    changed.then(|| event.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::integrity::IntegrityKey;

    #[test]
    fn a_payload_s_digests_are_keyed_and_the_rest_kept() {
        let key = IntegrityKey::from_bytes(&[5; 32])
            .unwrap()
            .fingerprint_key();
        let digest = rotor_rotators::Fingerprint::of_value(b"v");
        let payload = serde_json::json!({
            "event": "promoted",
            "fingerprint": format!("sha256:{}", digest.to_hex()),
            "previous_fingerprint": null,
            "version": "3",
        })
        .to_string();
        let keyed: serde_json::Value =
            serde_json::from_str(&key_payload(&key, &payload).unwrap()).unwrap();
        assert_eq!(
            keyed["fingerprint"],
            format!("hmac-sha256:{}", key.of(&digest))
        );
        assert_eq!(keyed["previous_fingerprint"], serde_json::Value::Null);
        assert_eq!(keyed["version"], "3");
        assert_eq!(key_payload(&key, &keyed.to_string()), None, "keyed once");
    }
}
