//! Alerts: announcing that a rotation failed (and that it recovered) to the configured sinks.
//! Every alert is also appended to the audit log by the caller.

use crate::config::{AlertConfig, Config};

/// What went wrong, for whom, and what to do. Never carries secret material: `cause` is a
/// rotor error message, which by construction names paths and steps, not values.
#[derive(Debug, Clone)]
pub struct Alert {
    pub credential_id: String,
    pub provider: String,
    pub condition: Condition,
    pub step: String,
    pub attempt: i64,
    pub run_id: String,
    pub cause: String,
    pub action: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RolledBack,
    Stuck,
    Conflict,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RolledBack => "rolled_back",
            Condition::Stuck => "stuck",
            Condition::Conflict => "conflict",
        }
    }
}

/// Sends alerts to the sinks a credential is routed to.
#[derive(Debug, Clone, Default)]
pub struct Alerter {
    sinks: std::collections::BTreeMap<String, AlertConfig>,
}

impl Alerter {
    pub fn new(config: &Config) -> Self {
        Self {
            sinks: config.alerts.clone(),
        }
    }

    /// Raises `alert` on each of `routes`. A credential with no routes still logs: a failure
    /// must never pass in silence.
    pub fn raise(&self, alert: &Alert, routes: &[String]) {
        let mut delivered = false;
        for name in routes {
            match self.sinks.get(name) {
                Some(AlertConfig::Log(_)) => {
                    log_alert(name, alert);
                    delivered = true;
                }
                None => tracing::warn!(sink = %name, "alert sink is not configured"),
            }
        }
        if !delivered {
            log_alert("(default)", alert);
        }
    }

    /// Announces that a credential that had failed rotated successfully.
    pub fn resolve(&self, credential_id: &str, run_id: &str, routes: &[String]) {
        for name in routes {
            if let Some(AlertConfig::Log(_)) = self.sinks.get(name) {
                tracing::info!(sink = %name, credential = credential_id, run = run_id, "alert resolved: rotation succeeded");
            }
        }
    }
}

fn log_alert(sink: &str, a: &Alert) {
    tracing::error!(
        sink,
        credential = %a.credential_id,
        provider = %a.provider,
        condition = a.condition.as_str(),
        step = %a.step,
        attempt = a.attempt,
        run = %a.run_id,
        cause = %a.cause,
        action = %a.action,
        "ALERT: rotation failed"
    );
}
