//! The drill report: per credential and scenario, the steps with their durations, the outcome,
//! whether each alert reached its sink, and what to fix. Markdown for people, JSON (`--json`)
//! for tools; both from the same data. Never a secret: steps carry rotor's error messages.

use std::fmt::Write as _;

use serde::Serialize;

use super::Fault;
use crate::clock::rfc3339;
use crate::config::Credential;
use crate::store::StepRow;
use crate::store::drill::SinkDelivery;

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub attempt: i64,
    pub worker: String,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
}

impl From<&StepRow> for StepReport {
    fn from(s: &StepRow) -> Self {
        StepReport {
            step: s.step.clone(),
            attempt: s.attempt,
            worker: s.worker.clone(),
            duration_ms: s.finished_at.map(|f| f - s.started_at),
            outcome: s.outcome.clone(),
            error: s.error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertDelivery {
    pub sink: String,
    pub condition: String,
    /// `trigger` or `resolve`.
    pub event: String,
    pub delivered: bool,
    pub attempts: i64,
    pub error: Option<String>,
}

impl From<SinkDelivery> for AlertDelivery {
    fn from(d: SinkDelivery) -> Self {
        AlertDelivery {
            delivered: d.delivered_at.is_some(),
            sink: d.sink,
            condition: d.condition,
            event: d.event,
            attempts: d.attempts,
            error: d.last_error,
        }
    }
}

/// One credential under one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialReport {
    pub credential_id: String,
    pub provider: String,
    pub vault: String,
    /// `rotation`, `dry run`, or the injected fault.
    pub scenario: String,
    pub dry_run: bool,
    pub fault: Option<String>,
    pub run_id: Option<String>,
    pub final_state: String,
    pub passed: bool,
    /// Whether what consumers read changed.
    pub rotated: bool,
    /// The current credential authenticated after the drill.
    pub current_verifies: bool,
    pub interrupted: bool,
    pub duration_ms: i64,
    pub steps: Vec<StepReport>,
    pub alerts: Vec<AlertDelivery>,
    /// What the provider tells of a credential's use (`None`: nothing, so `retire_when =
    /// "unused"` is not available for it).
    pub usage_evidence: Option<String>,
    /// Who was seen using the replaced credential during the drill's grace, as the provider
    /// tells (`None`: no evidence, or no grace).
    pub previous_used: Option<String>,
    /// What went as documented but deserves a word.
    pub notes: Vec<String>,
    /// What failed, each with what to fix.
    pub problems: Vec<String>,
}

impl CredentialReport {
    pub fn new(credential: &Credential, dry_run: bool, fault: Option<&Fault>) -> Self {
        let scenario = match (fault, dry_run) {
            (Some(f), true) => format!("dry run, {f}"),
            (Some(f), false) => f.to_string(),
            (None, true) => "dry run".into(),
            (None, false) => "rotation".into(),
        };
        CredentialReport {
            credential_id: credential.id.clone(),
            provider: credential.provider().to_owned(),
            vault: credential.vault.clone(),
            scenario,
            dry_run,
            fault: fault.map(ToString::to_string),
            run_id: None,
            final_state: "not started".into(),
            passed: true,
            rotated: false,
            current_verifies: false,
            interrupted: false,
            duration_ms: 0,
            steps: Vec::new(),
            alerts: Vec::new(),
            usage_evidence: credential
                .rotator
                .settings()
                .usage_evidence()
                .map(str::to_owned),
            previous_used: None,
            notes: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, text: String) {
        self.passed = false;
        self.problems.push(text);
    }

    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    pub fn passed(&self) -> bool {
        self.passed
    }

    /// One line for the progress display.
    pub fn summary(&self) -> String {
        match self.problems.first() {
            Some(p) => p.clone(),
            None => format!("{} ({})", self.final_state, self.scenario),
        }
    }
}

/// A whole drill.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub drill_id: String,
    pub actor: String,
    pub started_at: String,
    pub finished_at: String,
    pub dry_run: bool,
    pub faults: Vec<String>,
    pub selected: Vec<String>,
    pub passed: bool,
    pub credentials: Vec<CredentialReport>,
    /// Selected credentials people rotate by hand: a drill cannot rotate them.
    pub by_hand: Vec<String>,
}

fn ms(value: Option<i64>) -> String {
    value.map_or("-".into(), |v| format!("{v} ms"))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    pub fn new(
        drill_id: String,
        actor: String,
        started_at: i64,
        finished_at: i64,
        options: &super::DrillOptions,
        credentials: Vec<CredentialReport>,
        by_hand: Vec<String>,
    ) -> Self {
        Report {
            drill_id,
            actor,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished_at),
            dry_run: options.dry_run,
            faults: options.faults.iter().map(ToString::to_string).collect(),
            selected: options.select.clone(),
            passed: !credentials.is_empty() && credentials.iter().all(|c| c.passed),
            credentials,
            by_hand,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Rotation drill {}\n", self.drill_id);
        let _ = writeln!(
            out,
            "- Outcome: **{}**",
            if self.passed { "passed" } else { "FAILED" }
        );
        let _ = writeln!(out, "- By: {}", self.actor);
        let _ = writeln!(out, "- From {} to {}", self.started_at, self.finished_at);
        let _ = writeln!(
            out,
            "- Mode: {}",
            if self.dry_run {
                "dry run (candidates verified, then discarded; consumers untouched)"
            } else {
                "rotation (consumers get new credentials)"
            }
        );
        let _ = writeln!(
            out,
            "- Selection: {}",
            if self.selected.is_empty() {
                "every credential".into()
            } else {
                self.selected.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "- Injected: {}",
            if self.faults.is_empty() {
                "nothing".into()
            } else {
                self.faults.join(", ")
            }
        );
        if self.credentials.is_empty() {
            let _ = writeln!(out, "\nNo credential was selected: nothing was drilled.");
        }
        let _ = writeln!(
            out,
            "\n| Credential | Provider | Scenario | Outcome | Final state | Duration |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for c in &self.credentials {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&c.credential_id),
                c.provider,
                c.scenario,
                if c.passed { "passed" } else { "**FAILED**" },
                c.final_state,
                ms(Some(c.duration_ms))
            );
        }
        for c in &self.credentials {
            let _ = writeln!(out, "\n## {} ({})\n", c.credential_id, c.scenario);
            let _ = writeln!(
                out,
                "- Run: {}",
                c.run_id.as_deref().unwrap_or("none started")
            );
            let _ = writeln!(
                out,
                "- Consumers: {}",
                if c.rotated {
                    "read a new credential"
                } else {
                    "read the same credential as before"
                }
            );
            let _ = writeln!(
                out,
                "- Current credential after the drill: {}",
                if c.current_verifies {
                    "authenticates"
                } else {
                    "**does not authenticate (or was not checked)**"
                }
            );
            if !c.steps.is_empty() {
                let _ = writeln!(
                    out,
                    "\n| Step | Attempt | Worker | Duration | Outcome | Error |"
                );
                let _ = writeln!(out, "|---|---|---|---|---|---|");
                for s in &c.steps {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        s.step,
                        s.attempt,
                        cell(&s.worker),
                        ms(s.duration_ms),
                        s.outcome,
                        cell(s.error.as_deref().unwrap_or(""))
                    );
                }
            }
            if c.alerts.is_empty() {
                let _ = writeln!(out, "\nAlerts: none raised.");
            } else {
                let _ = writeln!(out, "\n| Alert sink | Condition | Event | Delivered |");
                let _ = writeln!(out, "|---|---|---|---|");
                for a in &c.alerts {
                    let delivered = if a.delivered {
                        "yes".to_owned()
                    } else {
                        format!("**no**: {}", a.error.as_deref().unwrap_or("not yet tried"))
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} |",
                        cell(&a.sink),
                        a.condition,
                        a.event,
                        cell(&delivered)
                    );
                }
            }
            match (&c.usage_evidence, &c.previous_used) {
                (Some(evidence), Some(used)) => {
                    let _ = writeln!(
                        out,
                        "\nEvidence of use ({evidence}): the previous credential, during grace: {used}."
                    );
                }
                (Some(evidence), None) => {
                    let _ = writeln!(out, "\nEvidence of use: {evidence}.");
                }
                (None, _) => {
                    let _ = writeln!(
                        out,
                        "\nEvidence of use: none from this provider (`retire_when = \"unused\"` is not available)."
                    );
                }
            }
            for n in &c.notes {
                let _ = writeln!(out, "\nNote: {n}");
            }
            if !c.problems.is_empty() {
                let _ = writeln!(out, "\nWhat to fix:\n");
                for p in &c.problems {
                    let _ = writeln!(out, "- {p}");
                }
            }
        }
        if !self.by_hand.is_empty() {
            let _ = writeln!(
                out,
                "\nNot drilled (rotated by hand; `rotor confirm` records their rotation): {}",
                self.by_hand.join(", ")
            );
        }
        out
    }
}
