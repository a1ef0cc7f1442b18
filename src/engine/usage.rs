//! Grace that ends by evidence (`retire_when = "unused"`): during grace the provider is asked
//! whether the replaced credential is still used (`Rotator::last_used`), each answer is saved
//! on the run (so a restart remembers what was seen), and `policy::usage::decide` says whether
//! to retire now, look again later, or retire or keep it while alerting that it is still used.
//! An emergency, `rotor cancel --retire-now` and a drill are not held by it.

use rotor_rotators::{Rotator, Usage};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Condition};
use crate::policy::usage::{Decision, Gate, Readings, decide};
use crate::store::{RunRow, StoreError};
use crate::vault::Vault;

use super::drive::Commit;
use super::error::EngineError;
use super::{Ctx, Driven, Engine};

/// What the provider told of the replaced credential's use, kept on the run as JSON. Never a
/// secret: times, addresses, application and service names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreviousUsage {
    /// When the replaced credential became current (ms): its `max_age` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// What the last answer was: `seen`, `unseen` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// When it was last seen in use (ms), over every answer of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Who used it then, in the provider's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the provider was last asked (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
    /// Why the last question failed, if it did (rotor asks again at the next sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Retired while still in use (`on_still_used = "retire"`, or `"wait"` at `max_age`): its
    /// `still_used` alert stays raised past this run's completion, until a later rotation
    /// retires with nobody seen on the old credential.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired_in_use: bool,
}

impl PreviousUsage {
    pub fn of(run: &RunRow) -> Self {
        run.previous_usage
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, run: &mut RunRow) {
        run.previous_usage = Some(serde_json::to_string(self).expect("usage serializes"));
    }

    /// Whether any answer of this run was evidence (seen or unseen).
    fn evidence(&self) -> bool {
        matches!(self.evidence.as_deref(), Some("seen" | "unseen"))
    }

    /// Takes in one answer of the provider.
    fn record(&mut self, answer: Result<Usage, String>, now: i64) {
        self.checked_at = Some(now);
        match answer {
            Ok(Usage::Unknown) => {
                self.evidence = Some("unknown".into());
                self.error = None;
            }
            Ok(Usage::Unseen) => {
                self.evidence = Some("unseen".into());
                self.error = None;
            }
            Ok(Usage::Seen { at, by }) => {
                let at = at.unwrap_or(now).min(now);
                self.evidence = Some("seen".into());
                if self.last_seen.is_none_or(|seen| at >= seen) {
                    self.last_seen = Some(at);
                    self.by = Some(by);
                }
                self.error = None;
            }
            // What was seen before still counts; the next sample asks again.
            Err(message) => self.error = Some(message),
        }
    }

    /// "seen 2026-12-04T05:00:00Z: 1 session(s) of role app_b: 10.0.0.5 (...)".
    pub fn describe(&self) -> String {
        match (&self.last_seen, &self.by) {
            (Some(at), Some(by)) => {
                format!("last seen in use {}: {by}", crate::clock::rfc3339(*at))
            }
            _ => match self.evidence.as_deref() {
                Some("unseen") => "not seen in use".into(),
                Some("unknown") => "the provider cannot tell".into(),
                _ => "not asked yet".into(),
            },
        }
    }
}

impl Engine {
    /// The gate that holds this run's grace, if any: the credential's `retire_when =
    /// "unused"`, unless a person asked for the old credential to go now (an emergency,
    /// `cancel --retire-now`) or it is a drill, whose report says what was seen instead.
    pub(super) fn usage_gate(&self, ctx: &Ctx<'_>, run: &RunRow) -> Option<Gate> {
        if run.emergency != 0 || run.interrupt.is_some() || run.drill.is_some() {
            return None;
        }
        ctx.credential.usage_gate
    }

    /// Records when the replaced credential became current, at promotion: its `max_age`
    /// bounds how long `on_still_used = "wait"` keeps it.
    pub(super) async fn note_replaced_since(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
    ) -> Result<(), StoreError> {
        if ctx.credential.usage_gate.is_none() || run.replaced_version.is_none() {
            return Ok(());
        }
        let since = self
            .store
            .credential(&ctx.credential.id)
            .await?
            .and_then(|row| row.current_since);
        let mut usage = PreviousUsage::of(run);
        usage.since = since;
        usage.save(run);
        Ok(())
    }

    /// Grace under the gate: asks the provider, saves the answer, and either lets the run go
    /// on to retirement (`None`) or gives it back to the durable timer until the next sample.
    pub(super) async fn wait_for_disuse(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        gate: Gate,
        grace_until: i64,
    ) -> Result<Option<Driven>, EngineError> {
        let now = self.now();
        let mut usage = PreviousUsage::of(run);
        if !self.ask_usage(ctx, &mut usage, now).await {
            // Nothing of rotor's to ask about (an adopted credential): the timer decides.
            return self.hold_until(run, grace_until, &usage, now).await;
        }
        let keep_until = match (usage.since, ctx.credential.schedule.max_age) {
            (Some(since), Some(max_age)) => Some(since + max_age.as_std().as_millis() as i64),
            _ => None,
        };
        let readings = Readings {
            now,
            promoted_at: grace_until - run.grace_ms,
            grace_until,
            last_seen: usage.last_seen,
            evidence: usage.evidence(),
            keep_until,
        };
        match decide(gate, readings) {
            Decision::Retire => {
                usage.save(run);
                tracing::info!(usage = %usage.describe(), "the old credential is unused: retiring it");
                Ok(None)
            }
            Decision::RetireStillUsed => {
                usage.retired_in_use = true;
                usage.save(run);
                self.alert_still_used(ctx, run, &usage, true).await?;
                Ok(None)
            }
            Decision::Wait(until) => self.hold_until(run, until, &usage, now).await,
            Decision::KeepStillUsed(until) => {
                self.alert_still_used(ctx, run, &usage, false).await?;
                self.hold_until(run, until, &usage, now).await
            }
        }
    }

    /// Asks the provider once, where it can tell, and keeps the answer on the run (saved with
    /// the run's next commit): what a drill reports. Never holds the run.
    pub(super) async fn observe_usage(&self, ctx: &Ctx<'_>, run: &mut RunRow) {
        if ctx.credential.rotator.settings().usage_evidence().is_none() {
            return;
        }
        let mut usage = PreviousUsage::of(run);
        if self.ask_usage(ctx, &mut usage, self.now()).await {
            usage.save(run);
        }
    }

    /// Asks the provider whether the credential the run replaced (the vault's `previous`) is
    /// still used, and records the answer (a failed question too) in `usage`. False when
    /// there is no such credential to ask about.
    async fn ask_usage(&self, ctx: &Ctx<'_>, usage: &mut PreviousUsage, now: i64) -> bool {
        let previous = match ctx.vault.read_current(&ctx.credential.vault_path).await {
            Ok(document) => document.and_then(|d| d.previous).map(|p| p.credential),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replaced credential to ask of its use");
                None
            }
        };
        let Some(previous) = previous else {
            return false;
        };
        let answer = ctx
            .rotator
            .last_used(&previous)
            .await
            .map_err(|e| e.message);
        if let Err(message) = &answer {
            tracing::warn!(error = %message, "the provider did not say whether the old credential is used; asking again at the next sample");
        }
        usage.record(answer, now);
        true
    }

    /// Gives the run back to the durable timer until `until`, with what was seen saved.
    async fn hold_until(
        &self,
        run: &mut RunRow,
        until: i64,
        usage: &PreviousUsage,
        now: i64,
    ) -> Result<Option<Driven>, EngineError> {
        if until <= now {
            usage.save(run);
            return Ok(None);
        }
        let from = run.state();
        usage.save(run);
        run.wait_until(until);
        let audit = self.audit(run, "grace_wait").detail(format!(
            "retire when unused; old credential {}; asks again at {}",
            usage.describe(),
            crate::clock::rfc3339(until)
        ));
        self.commit(run, Commit::plain(from, None, audit)).await?;
        Ok(Some(Driven::Waiting(until)))
    }

    /// Raises `still_used`: grace ended with the old credential in use. The run's completion
    /// resolves it.
    async fn alert_still_used(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        usage: &PreviousUsage,
        retiring: bool,
    ) -> Result<(), EngineError> {
        let id = &ctx.credential.id;
        let action = if retiring {
            format!(
                "rotor retires the old credential now: whoever still uses it fails from now on; point them at the current one (`rotor status {id}`)"
            )
        } else {
            format!(
                "rotor keeps the old credential (`on_still_used = \"wait\"`) and asks again, at most until its max_age; move its users to the current one, or end it with `rotor cancel {id} --retire-now`"
            )
        };
        let alert = Alert {
            credential_id: id.clone(),
            provider: ctx.credential.provider().to_owned(),
            condition: Condition::StillUsed,
            step: "grace".into(),
            attempt: 0,
            run_id: run.id.clone(),
            cause: format!(
                "grace is over and the old credential is still in use: {}",
                usage.describe()
            ),
            action,
            raised_at: String::new(),
        };
        let detail = format!("{}: {}", Condition::StillUsed.as_str(), usage.describe());
        if self.raise_once(ctx, run, &alert, detail).await? {
            tracing::warn!(usage = %usage.describe(), retiring, "grace is over and the old credential is still in use");
        }
        Ok(())
    }
}
