//! Drill progress on stderr: a bar per credential and scenario, moving step by step, when
//! stderr is a terminal; plain timestamped lines otherwise (CI logs, `| tee`).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::clock::rfc3339;

/// Where a drill reports its progress.
pub trait Progress: Send + Sync {
    fn start(&self, credential: &str, scenario: &str) -> Arc<dyn Bar>;
}

/// One credential's progress.
pub trait Bar: Send + Sync {
    /// Something the drill does itself (preflight, checking).
    fn step(&self, what: &str);
    /// The run's state, as the engine saved it.
    fn state(&self, state: &str);
    /// The run waits for its grace or a retry until `until` (ms).
    fn waiting(&self, why: &str, until: i64);
    fn done(&self, passed: bool, summary: &str);
}

/// Bars on a terminal, lines elsewhere.
pub fn for_stderr() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bars(MultiProgress::new()))
    } else {
        Arc::new(Lines)
    }
}

/// The states of a run in order, for the bar's position.
const STATES: [&str; 7] = [
    "planned",
    "pending_stored",
    "applied",
    "verified",
    "promoted",
    "retiring",
    "completed",
];

pub struct Bars(MultiProgress);

impl Progress for Bars {
    fn start(&self, credential: &str, scenario: &str) -> Arc<dyn Bar> {
        let bar = self.0.add(ProgressBar::new(STATES.len() as u64 - 1));
        bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:20}] {elapsed:>4} {wide_msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{credential} ({scenario})"));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Arc::new(bar)
    }
}

impl Bar for ProgressBar {
    fn step(&self, what: &str) {
        self.set_message(what.to_owned());
    }

    fn state(&self, state: &str) {
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            self.set_position(i as u64);
        }
        self.set_message(state.to_owned());
    }

    fn waiting(&self, why: &str, until: i64) {
        self.set_message(format!("{why}: waiting until {}", rfc3339(until)));
    }

    fn done(&self, passed: bool, summary: &str) {
        self.finish_with_message(format!(
            "{} {summary}",
            if passed { "passed" } else { "FAILED" }
        ));
    }
}

pub struct Lines;

impl Progress for Lines {
    fn start(&self, credential: &str, scenario: &str) -> Arc<dyn Bar> {
        Arc::new(Line {
            prefix: format!("{credential} ({scenario})"),
            last: Mutex::default(),
        })
    }
}

/// Plain lines: one per change, with the time.
pub struct Line {
    prefix: String,
    last: Mutex<String>,
}

impl Line {
    fn print(&self, message: String) {
        let mut last = self.last.lock().expect("progress lock");
        if *last != message {
            eprintln!(
                "{} drill {}: {message}",
                rfc3339(crate::clock::SystemClock.now_ms()),
                self.prefix
            );
            *last = message;
        }
    }
}

impl Bar for Line {
    fn step(&self, what: &str) {
        self.print(what.to_owned());
    }

    fn state(&self, state: &str) {
        self.print(state.to_owned());
    }

    fn waiting(&self, why: &str, until: i64) {
        self.print(format!("{why}: waiting until {}", rfc3339(until)));
    }

    fn done(&self, passed: bool, summary: &str) {
        self.print(format!(
            "{} {summary}",
            if passed { "passed" } else { "FAILED" }
        ));
    }
}

use crate::clock::Clock as _;
