//! Drill (`rotor drill`): every selected credential through each scenario, the drill kept in
//! the store with its report, and `drill_overdue` resolved for the credentials that passed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use crate::alert::Condition;
use crate::clock::Clock;
use crate::config::Config;
use crate::drill::progress::Progress;
use crate::drill::report::Report;
use crate::drill::{DrillOptions, Driller, Fault, select};
use crate::engine::{EngineError, Runtime};
use crate::scheduler::daemon;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum DrillError {
    #[error("no credential matches {0:?} (an id glob, a provider kind or a vault name)")]
    NothingSelected(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Who drills, and how they follow and stop it.
pub struct Drilling {
    pub actor: String,
    pub clock: Arc<dyn Clock>,
    /// Set (by Ctrl-C) to stop after the step in flight; the drill's runs stay resumable.
    pub stopping: Arc<AtomicBool>,
    pub progress: Arc<dyn Progress>,
}

/// The drill's report, and whether it passed (every scenario of every credential, and not
/// interrupted).
pub struct Drilled {
    pub report: Report,
    pub passed: bool,
}

pub async fn run(
    store: &Store,
    config: Config,
    options: &DrillOptions,
    drilling: Drilling,
) -> Result<Drilled, DrillError> {
    let (selected, by_hand) = select(&config, &options.select);
    if selected.is_empty() && by_hand.is_empty() {
        return Err(DrillError::NothingSelected(options.select.clone()));
    }
    let selected: Vec<_> = selected.into_iter().cloned().collect();
    let by_hand: Vec<String> = by_hand.into_iter().map(|c| c.id.clone()).collect();
    let Drilling {
        actor,
        clock,
        stopping,
        progress,
    } = drilling;
    daemon::reconcile(store, &config, clock.as_ref()).await?;
    let runtime = Arc::new(Runtime::build(config).await?);
    let drill_id = format!("drill_{}", daemon::random_hex(6));
    let started = clock.now_ms();
    store
        .start_drill(&drill_id, &actor, &described(options), started)
        .await?;
    let driller = Driller {
        store: store.clone(),
        runtime: runtime.clone(),
        clock: clock.clone(),
        actor: actor.clone(),
        stopping: stopping.clone(),
        progress,
    };
    let scenarios: Vec<Option<&Fault>> = if options.faults.is_empty() {
        vec![None]
    } else {
        options.faults.iter().map(Some).collect()
    };
    let mut reports = Vec::new();
    'credentials: for credential in &selected {
        for fault in &scenarios {
            if stopping.load(Ordering::SeqCst) {
                break 'credentials;
            }
            reports.push(driller.drill(credential, options, *fault).await?);
        }
    }
    // A credential passed its drill when every scenario of it did.
    let mut outcomes: BTreeMap<String, bool> = BTreeMap::new();
    for r in &reports {
        *outcomes.entry(r.credential_id.clone()).or_insert(true) &= r.passed;
    }
    let finished = clock.now_ms();
    let report = Report::new(
        drill_id.clone(),
        actor.clone(),
        started,
        finished,
        options,
        reports,
        by_hand,
    );
    let passed = report.passed && !stopping.load(Ordering::SeqCst);
    let json = serde_json::to_string_pretty(&report).expect("a drill report serializes");
    let results: Vec<(String, bool)> = outcomes.into_iter().collect();
    let outcome = if passed { "passed" } else { "failed" };
    store
        .finish_drill(&drill_id, &actor, outcome, &json, &results, finished)
        .await?;
    for (id, ok) in &results {
        if *ok && let Some(c) = runtime.config.credential(id) {
            runtime
                .alerter
                .resolve(store, id, &[Condition::DrillOverdue], &c.alerts, finished)
                .await?;
        }
    }
    Ok(Drilled { report, passed })
}

/// The drill's options as the store records them.
fn described(options: &DrillOptions) -> String {
    serde_json::json!({
        "select": options.select,
        "dry_run": options.dry_run,
        "inject": options.faults.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "grace_seconds": options.grace.map(|g| g.as_secs()),
    })
    .to_string()
}
