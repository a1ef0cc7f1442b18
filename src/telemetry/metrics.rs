//! Prometheus metrics, rendered from the store on each scrape, so every replica reports the
//! same state and a restarted process loses nothing. What a scrape reads is bounded by the
//! config, not the history: the credentials, and the run totals the store's triggers keep
//! (`store::totals`), never the runs themselves. Labels come only from config (credential
//! id, provider) and fixed sets (outcome, condition): cardinality is bounded by the config.
//! A series exists for every configured credential from startup, not only after an event.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::config::Config;
use crate::scheduler::lag::{LAG_BUCKETS, Lag};
use crate::store::totals::{DURATION_BUCKETS, RunTotals};
use crate::store::{Store, StoreError};

/// `"` `\` and newlines escaped, as the text format requires of label values.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The whole exposition, in the Prometheus text format (0.0.4).
pub async fn render(
    store: &Store,
    config: &Config,
    lag: &Lag,
    now: i64,
) -> Result<String, StoreError> {
    let rows = store.credentials_by_id().await?;
    let totals: BTreeMap<(String, String), RunTotals> = store
        .run_totals()
        .await?
        .into_iter()
        .map(|t| ((t.credential_id.clone(), t.state.clone()), t))
        .collect();
    let in_flight = store.live_runs().await?.len();
    let alerts = store.active_alerts().await?;
    let notified: BTreeMap<(String, String), crate::store::notify::HookCounts> = store
        .hook_counts()
        .await?
        .into_iter()
        .map(|c| ((c.credential_id.clone(), c.hook.clone()), c))
        .collect();
    let mut out = String::with_capacity(256 * config.credentials.len() + 4096);

    let ids: Vec<(String, String)> = config
        .credentials
        .iter()
        .map(|c| (label(&c.id), label(c.provider())))
        .collect();

    header(
        &mut out,
        "rotor_rotations_total",
        "counter",
        "Rotation runs that ended, by outcome.",
    );
    for ((id, provider), c) in ids.iter().zip(&config.credentials) {
        for outcome in ["completed", "rolled_back", "stuck"] {
            let n = totals
                .get(&(c.id.clone(), outcome.to_owned()))
                .map_or(0, |t| t.runs);
            let _ = writeln!(
                out,
                "rotor_rotations_total{{credential=\"{id}\",provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }

    header(
        &mut out,
        "rotor_rotation_duration_seconds",
        "histogram",
        "Time from the start of a rotation to its completion, grace included.",
    );
    for ((id, provider), c) in ids.iter().zip(&config.credentials) {
        let completed = totals.get(&(c.id.clone(), "completed".to_owned()));
        for (le, n) in completed
            .map(RunTotals::buckets)
            .unwrap_or_else(|| DURATION_BUCKETS.map(|le| (le, 0)))
        {
            let _ = writeln!(
                out,
                "rotor_rotation_duration_seconds_bucket{{credential=\"{id}\",provider=\"{provider}\",le=\"{le}\"}} {n}"
            );
        }
        let (count, sum_ms) = completed.map_or((0, 0), |t| (t.timed, t.duration_ms));
        let _ = writeln!(
            out,
            "rotor_rotation_duration_seconds_bucket{{credential=\"{id}\",provider=\"{provider}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "rotor_rotation_duration_seconds_sum{{credential=\"{id}\",provider=\"{provider}\"}} {}",
            seconds(sum_ms)
        );
        let _ = writeln!(
            out,
            "rotor_rotation_duration_seconds_count{{credential=\"{id}\",provider=\"{provider}\"}} {count}"
        );
    }

    type Pick = fn(&crate::store::CredentialRow, i64) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 7] = [
        (
            "rotor_credential_age_seconds",
            "Age of the current version (absent until the first rotation: -1).",
            |r, now| r.current_since.map(|s| seconds(now - s)),
        ),
        (
            "rotor_next_rotation_timestamp_seconds",
            "When the credential rotates next (0 when only by hand).",
            |r, _| r.next_due_at.map(seconds),
        ),
        (
            "rotor_last_success_timestamp_seconds",
            "When the last rotation completed (0: never).",
            |r, _| r.last_success_at.map(seconds),
        ),
        (
            "rotor_consecutive_failures",
            "Failed rotations since the last success.",
            |r, _| Some(r.consecutive_failures as f64),
        ),
        (
            "rotor_last_drill_timestamp_seconds",
            "When the last rotation drill of the credential ran (0: never).",
            |r, _| r.last_drill_at.map(seconds),
        ),
        (
            "rotor_credential_paused",
            "1 while the credential is paused (`rotor pause`; `rotor status` says who paused it and why: free text is no label).",
            |r, now| Some(if r.is_paused(now) { 1.0 } else { 0.0 }),
        ),
        (
            "rotor_credential_paused_until_timestamp_seconds",
            "When the pause ends by itself (0: not paused, or paused until `rotor resume`).",
            |r, now| r.paused_until.filter(|_| r.is_paused(now)).map(seconds),
        ),
    ];
    for (name, help, pick) in gauges {
        header(&mut out, name, "gauge", help);
        for ((id, provider), c) in ids.iter().zip(&config.credentials) {
            let fallback = if name == "rotor_credential_age_seconds" {
                -1.0
            } else {
                0.0
            };
            let value = rows
                .get(&c.id)
                .and_then(|r| pick(r, now))
                .unwrap_or(fallback);
            let _ = writeln!(
                out,
                "{name}{{credential=\"{id}\",provider=\"{provider}\"}} {value}"
            );
        }
    }

    header(
        &mut out,
        "rotor_credential_due_by_hand_timestamp_seconds",
        "gauge",
        "For a credential rotated by hand: when it is due (its expiry, or max_age after its last confirmation); 0 for the others.",
    );
    for ((id, provider), c) in ids.iter().zip(&config.credentials) {
        let due = rows
            .get(&c.id)
            .and_then(|r| crate::scheduler::by_hand::deadline(c, r))
            .map_or(0.0, seconds);
        let _ = writeln!(
            out,
            "rotor_credential_due_by_hand_timestamp_seconds{{credential=\"{id}\",provider=\"{provider}\"}} {due}"
        );
    }

    header(
        &mut out,
        "rotor_credential_max_age_seconds",
        "gauge",
        "The configured max_age (0: none), to alert on independently of rotor.",
    );
    for ((id, provider), c) in ids.iter().zip(&config.credentials) {
        let max_age = c.schedule.max_age.map_or(0, |m| m.as_secs());
        let _ = writeln!(
            out,
            "rotor_credential_max_age_seconds{{credential=\"{id}\",provider=\"{provider}\"}} {max_age}"
        );
    }

    header(
        &mut out,
        "rotor_runs_in_flight",
        "gauge",
        "Runs started and not yet finished.",
    );
    let _ = writeln!(out, "rotor_runs_in_flight {in_flight}");

    header(
        &mut out,
        "rotor_alerts_active",
        "gauge",
        "Alert conditions raised and not yet resolved.",
    );
    for ((id, provider), c) in ids.iter().zip(&config.credentials) {
        for condition in [
            "rolled_back",
            "retries_exhausted",
            "stuck",
            "conflict",
            "too_old",
            "notify_failed",
        ] {
            let raised = alerts
                .iter()
                .any(|a| a.credential_id == c.id && a.condition == condition);
            let _ = writeln!(
                out,
                "rotor_alerts_active{{credential=\"{id}\",provider=\"{provider}\",condition=\"{condition}\"}} {}",
                u8::from(raised)
            );
        }
    }

    header(
        &mut out,
        "rotor_notifications_total",
        "counter",
        "Attempts to notify a credential's consumers, by hook and outcome (success, failure).",
    );
    for ((id, _), c) in ids.iter().zip(&config.credentials) {
        for hook in &c.notify {
            let counts = notified.get(&(c.id.clone(), hook.clone()));
            for (outcome, n) in [
                ("success", counts.map_or(0, |c| c.succeeded)),
                ("failure", counts.map_or(0, |c| c.failed)),
            ] {
                let _ = writeln!(
                    out,
                    "rotor_notifications_total{{credential=\"{id}\",hook=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(hook)
                );
            }
        }
    }

    header(
        &mut out,
        "rotor_scheduler_lag_seconds",
        "histogram",
        "Time from a run's due time to its claim by this process.",
    );
    for (bucket, le) in lag.buckets.iter().zip(LAG_BUCKETS) {
        let _ = writeln!(
            out,
            "rotor_scheduler_lag_seconds_bucket{{le=\"{le}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = lag.count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "rotor_scheduler_lag_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "rotor_scheduler_lag_seconds_sum {}",
        lag.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(out, "rotor_scheduler_lag_seconds_count {count}");

    header(
        &mut out,
        "rotor_credentials",
        "gauge",
        "Credentials in the loaded config.",
    );
    let _ = writeln!(out, "rotor_credentials {}", config.credentials.len());
    header(
        &mut out,
        "rotor_build_info",
        "gauge",
        "The running rotor's version.",
    );
    let _ = writeln!(
        out,
        "rotor_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}
