//! The fingerprints of every value rotor minted (`Fingerprint::of_value`), and what they lead
//! back to: `rotor identify` asks which credential and run a value found in the wild came from.

use super::{Pool, RunRow, Store, StoreError};
use super::{group_commit, sql};

/// Where a value was minted: the credential, the run and the field.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Minted {
    pub credential_id: String,
    pub run_id: String,
    pub field: String,
    pub recorded_at: i64,
}

impl Store {
    /// Records the fingerprint of each field of the candidate run `run_id` minted. Idempotent:
    /// a mint resumed after a crash records nothing twice.
    pub async fn record_minted(
        &self,
        credential_id: &str,
        run_id: &str,
        fields: &[(&str, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let minted = group_commit::Write::Minted {
            credential_id: credential_id.to_owned(),
            run_id: run_id.to_owned(),
            fields: fields
                .iter()
                .map(|(f, v)| ((*f).to_owned(), v.clone()))
                .collect(),
            now,
        };
        self.saves.write(minted).await?;
        Ok(())
    }

    /// Every mint of a value with this fingerprint (hex), newest first.
    pub async fn minted(&self, fingerprint: &str) -> Result<Vec<Minted>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::MINTED).bind(fingerprint).fetch_all(p).await?))
    }

    /// The newest run of the credential that replaced `version`: its retire step is what ends
    /// that version.
    pub async fn run_replacing(
        &self,
        credential_id: &str,
        version: &str,
    ) -> Result<Option<RunRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as(sql::RUN_REPLACING)
            .bind(credential_id).bind(version).fetch_optional(p).await?))
    }
}
