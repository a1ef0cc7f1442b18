//! Prometheus metrics, encoded by `prometheus-client` in the format the scraper asks for
//! (OpenMetrics for Prometheus, the classic text format otherwise). Each
//! scrape reads the store first, so every replica reports the same state and a restarted
//! process loses nothing; what it reads is bounded by the config, not the history: the
//! credentials, and the run totals the store's triggers keep (`store::totals`), never the runs
//! themselves. Labels come only from config (credential id, provider, hook) and fixed sets
//! (outcome, condition): cardinality is bounded by the config. A series exists for every
//! configured credential from startup, not only after an event.
//!
//! Above `[metrics] per_credential_up_to` credentials the series are per provider kind
//! instead (`ProviderSeries`): counts of credentials in each condition and the extremes an
//! alert needs (the oldest version, the earliest rotation due), so that what a Prometheus
//! keeps does not grow with the credentials. `rotor status` still has every credential.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alert::Condition;
use crate::config::{Config, Credential};
use crate::scheduler::lag::Lag;
use crate::store::alerts::ActiveAlert;
use crate::store::notify::HookCounts;
use crate::store::totals::{DURATION_BUCKETS, RunTotals};
use crate::store::{CredentialRow, RunRow, Store, StoreError};

/// The two text formats a scraper may ask for: Prometheus sends `Accept:
/// application/openmetrics-text` and gets OpenMetrics; anything else (a person with curl,
/// `promtool check metrics`) gets the classic Prometheus text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Format {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

const OUTCOMES: [&str; 3] = ["completed", "rolled_back", "stuck"];
/// Every condition has a series, raised or not, so that a rule on any of them has one to
/// read (a rule on a condition left out could never fire).
const CONDITIONS: [Condition; Condition::ALL.len()] = Condition::ALL;

/// The per-credential gauges read from the credential's row: name, help, the value when the
/// row says nothing (no row yet, or the field is unset), and how to read it.
type Pick = fn(&CredentialRow, i64) -> Option<f64>;
const GAUGES: [(&str, &str, f64, Pick); 7] = [
    (
        "rotor_credential_age_seconds",
        "Age of the current version (absent until the first rotation: -1).",
        -1.0,
        |r, now| r.current_since.map(|s| seconds(now - s)),
    ),
    (
        "rotor_next_rotation_timestamp_seconds",
        "When the credential rotates next (0 when only by hand).",
        0.0,
        |r, _| r.next_due_at.map(seconds),
    ),
    (
        "rotor_last_success_timestamp_seconds",
        "When the last rotation completed (0: never).",
        0.0,
        |r, _| r.last_success_at.map(seconds),
    ),
    (
        "rotor_consecutive_failures",
        "Failed rotations since the last success.",
        0.0,
        |r, _| Some(r.consecutive_failures as f64),
    ),
    (
        "rotor_last_drill_timestamp_seconds",
        "When the last rotation drill of the credential ran (0: never).",
        0.0,
        |r, _| r.last_drill_at.map(seconds),
    ),
    (
        "rotor_credential_paused",
        "1 while the credential is paused (`rotor pause`; `rotor status` says who paused it and why: free text is no label).",
        0.0,
        |r, now| Some(if r.is_paused(now) { 1.0 } else { 0.0 }),
    ),
    (
        "rotor_credential_paused_until_timestamp_seconds",
        "When the pause ends by itself (0: not paused, or paused until `rotor resume`).",
        0.0,
        |r, now| r.paused_until.filter(|_| r.is_paused(now)).map(seconds),
    ),
];

/// The gauges per provider kind, above `[metrics] per_credential_up_to`: name, help, value.
type ProviderPick = fn(&ProviderSeries) -> f64;
const PROVIDER_GAUGES: [(&str, &str, ProviderPick); 8] = [
    (
        "rotor_provider_credentials",
        "Credentials of the provider kind in the loaded config.",
        |p| p.credentials as f64,
    ),
    (
        "rotor_provider_oldest_age_seconds",
        "Age of the oldest current version among the provider kind's credentials (-1: none has one yet).",
        |p| p.oldest_age,
    ),
    (
        "rotor_provider_past_max_age",
        "Credentials whose current version is older than their max_age.",
        |p| p.past_max_age as f64,
    ),
    (
        "rotor_provider_failing",
        "Credentials whose last rotation failed (consecutive failures above 0).",
        |p| p.failing as f64,
    ),
    (
        "rotor_credential_paused",
        "Credentials paused (`rotor pause`; `rotor status` says who paused each and why).",
        |p| p.paused as f64,
    ),
    (
        "rotor_provider_next_rotation_timestamp_seconds",
        "The earliest rotation due among the provider kind's credentials that are not paused (0: none scheduled).",
        |p| p.next_rotation.unwrap_or(0.0),
    ),
    (
        "rotor_provider_oldest_drill_timestamp_seconds",
        "The oldest last rotation drill among the provider kind's credentials (0: one was never drilled).",
        |p| p.oldest_drill.unwrap_or(0.0),
    ),
    (
        "rotor_provider_due_by_hand_timestamp_seconds",
        "The earliest due date among the provider kind's credentials rotated by hand (0: none).",
        |p| p.due_by_hand.unwrap_or(0.0),
    ),
];

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// One configured credential's series, read from the store.
#[derive(Debug)]
struct Series {
    id: String,
    provider: String,
    /// Runs at rest per `OUTCOMES`.
    outcomes: [u64; 3],
    /// Completed runs' durations: sum (s), count, and per-bucket (not cumulative) counts.
    duration_sum: f64,
    duration_count: u64,
    duration_buckets: Vec<(f64, u64)>,
    gauges: [f64; GAUGES.len()],
    due_by_hand: f64,
    max_age: u64,
    /// Raised per `CONDITIONS`.
    alerts: [bool; CONDITIONS.len()],
    /// (hook, successes, failures) per configured hook.
    notified: Vec<(String, u64, u64)>,
    /// During grace under `retire_when = "unused"`: when the replaced credential was last
    /// seen in use (s).
    previous_last_used: Option<f64>,
    /// During grace: when it ends at the latest (s).
    grace_end: Option<f64>,
}

impl Series {
    /// The labels of every per-credential series, borrowed: a scrape of many credentials
    /// copies no label value.
    fn labels(&self) -> [(&'static str, &str); 2] {
        [("credential", &self.id), ("provider", &self.provider)]
    }
}

/// One provider kind's series, aggregated over its credentials.
#[derive(Debug, Default)]
struct ProviderSeries {
    credentials: u64,
    outcomes: [u64; 3],
    duration_sum: f64,
    duration_count: u64,
    /// Per-bucket counts, summed bucket by bucket.
    duration_buckets: Vec<(f64, u64)>,
    /// The age of the oldest current version (s; -1: none has one yet).
    oldest_age: f64,
    /// Credentials whose current version is older than their `max_age`.
    past_max_age: u64,
    /// Credentials whose last rotation failed.
    failing: u64,
    paused: u64,
    /// The earliest rotation due of a credential that is not paused (s).
    next_rotation: Option<f64>,
    /// The oldest last drill (s; 0: a credential was never drilled).
    oldest_drill: Option<f64>,
    /// The earliest due date of a credential rotated by hand (s).
    due_by_hand: Option<f64>,
    /// Credentials with each of `CONDITIONS` raised.
    alerts: [u64; CONDITIONS.len()],
}

impl ProviderSeries {
    fn add(&mut self, s: &Series) {
        // In `GAUGES`' order.
        let [age, next_rotation, _, failures, drill, paused, _] = s.gauges;
        if self.credentials == 0 {
            self.oldest_age = -1.0;
            self.duration_buckets = s.duration_buckets.iter().map(|&(le, _)| (le, 0)).collect();
        }
        self.credentials += 1;
        for (sum, n) in self.outcomes.iter_mut().zip(s.outcomes) {
            *sum += n;
        }
        self.duration_sum += s.duration_sum;
        self.duration_count += s.duration_count;
        for (sum, (_, n)) in self.duration_buckets.iter_mut().zip(&s.duration_buckets) {
            sum.1 += n;
        }
        self.oldest_age = self.oldest_age.max(age);
        self.past_max_age += u64::from(s.max_age > 0 && age > s.max_age as f64);
        self.failing += u64::from(failures > 0.0);
        self.paused += u64::from(paused > 0.0);
        if next_rotation > 0.0 && paused == 0.0 {
            self.next_rotation = Some(
                self.next_rotation
                    .map_or(next_rotation, |t| t.min(next_rotation)),
            );
        }
        self.oldest_drill = Some(self.oldest_drill.map_or(drill, |t| t.min(drill)));
        if s.due_by_hand > 0.0 {
            self.due_by_hand = Some(
                self.due_by_hand
                    .map_or(s.due_by_hand, |t| t.min(s.due_by_hand)),
            );
        }
        for (count, raised) in self.alerts.iter_mut().zip(s.alerts) {
            *count += u64::from(raised);
        }
    }
}

/// The credentials' series, each its own or aggregated per provider kind.
#[derive(Debug)]
enum Exposition {
    PerCredential(Vec<Series>),
    /// By provider kind; notification attempts by hook and outcome.
    PerProvider {
        providers: BTreeMap<String, ProviderSeries>,
        notified: BTreeMap<String, (u64, u64)>,
    },
}

impl Exposition {
    fn add(&mut self, series: Series) {
        match self {
            Exposition::PerCredential(all) => all.push(series),
            Exposition::PerProvider {
                providers,
                notified,
            } => {
                for (hook, succeeded, failed) in &series.notified {
                    let counts = notified.entry(hook.clone()).or_default();
                    counts.0 += succeeded;
                    counts.1 += failed;
                }
                match providers.get_mut(&series.provider) {
                    Some(kind) => kind.add(&series),
                    None => {
                        let mut kind = ProviderSeries::default();
                        kind.add(&series);
                        providers.insert(series.provider, kind);
                    }
                }
            }
        }
    }
}

/// Everything one scrape reports: read from the store (async), then encoded (sync).
#[derive(Debug)]
struct Snapshot {
    exposition: Exposition,
    credentials: u64,
    in_flight: u64,
    lag: Lag,
}

/// `rows` grouped by the credential each belongs to.
fn by_credential<T>(rows: Vec<T>, credential: impl Fn(&T) -> &String) -> HashMap<String, Vec<T>> {
    let mut grouped: HashMap<String, Vec<T>> = HashMap::new();
    for row in rows {
        grouped
            .entry(credential(&row).clone())
            .or_default()
            .push(row);
    }
    grouped
}

/// The per-bucket counts `prometheus-client` encodes, from cumulative ones, with `+Inf`.
fn per_bucket(cumulative: [(u64, i64); DURATION_BUCKETS.len()], count: i64) -> Vec<(f64, u64)> {
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = cumulative
        .iter()
        .map(|&(le, n)| {
            let here = (n - below).max(0) as u64;
            below = n;
            (le as f64, here)
        })
        .collect();
    buckets.push((f64::INFINITY, (count - below).max(0) as u64));
    buckets
}

/// How many credentials a scrape reads from the store at a time.
const PAGE: i64 = 1_000;

impl Snapshot {
    /// Reads the store a page of credentials at a time, with the page's run totals, alerts and
    /// hook counts: aggregated per provider kind, what a scrape holds is one page and the sums,
    /// however many credentials there are (the live runs, read once, are as many as run at
    /// once).
    async fn read(store: &Store, config: &Config, lag: &Lag, now: i64) -> Result<Self, StoreError> {
        let live = store.live_runs().await?;
        let in_flight = live.len() as u64;
        // At most one live run a credential.
        let mut live: HashMap<String, RunRow> = live
            .into_iter()
            .map(|r| (r.credential_id.clone(), r))
            .collect();
        let mut exposition = if config.credentials.len() <= config.metrics.per_credential_up_to {
            Exposition::PerCredential(Vec::with_capacity(config.credentials.len()))
        } else {
            Exposition::PerProvider {
                providers: BTreeMap::new(),
                notified: BTreeMap::new(),
            }
        };
        // Which configured credentials have a row: the others (reconcile has not written them
        // yet) still get their series, after the last page.
        let mut has_row = vec![false; config.credentials.len()];
        let mut pages = store.credential_pages(PAGE);
        let mut after = String::new();
        while let Some(rows) = pages.next().await? {
            let through = &rows.last().expect("a page is never empty").id;
            // Each read grouped by credential once, so that building a credential's series
            // looks up its own rows instead of scanning the page's.
            let mut totals = by_credential(store.run_totals_in(&after, through).await?, |t| {
                &t.credential_id
            });
            let mut alerts = by_credential(store.active_alerts_in(&after, through).await?, |a| {
                &a.credential_id
            });
            let mut notified = by_credential(store.hook_counts_in(&after, through).await?, |n| {
                &n.credential_id
            });
            for row in &rows {
                // A row the config no longer names keeps its history and has no series.
                let Some(index) = config.index_of(&row.id) else {
                    continue;
                };
                has_row[index] = true;
                exposition.add(series_of(
                    &config.credentials[index],
                    Some(row),
                    Reads {
                        totals: totals.remove(&row.id).unwrap_or_default(),
                        alerts: alerts.remove(&row.id).unwrap_or_default(),
                        notified: notified.remove(&row.id).unwrap_or_default(),
                        run: live.remove(&row.id),
                    },
                    now,
                ));
            }
            after.clone_from(through);
        }
        for (credential, _) in config
            .credentials
            .iter()
            .zip(&has_row)
            .filter(|(_, had)| !**had)
        {
            let reads = Reads {
                run: live.remove(&credential.id),
                ..Reads::default()
            };
            exposition.add(series_of(credential, None, reads, now));
        }
        Ok(Snapshot {
            exposition,
            credentials: config.credentials.len() as u64,
            in_flight,
            lag: lag.clone(),
        })
    }

    /// About how long the text of this snapshot is, so that encoding it allocates once.
    fn text_len(&self) -> usize {
        match &self.exposition {
            Exposition::PerCredential(series) => 2048 * series.len() + 4096,
            Exposition::PerProvider { providers, .. } => 4096 * providers.len() + 4096,
        }
    }
}

/// What the store has about one credential besides its row.
#[derive(Default)]
struct Reads {
    totals: Vec<RunTotals>,
    alerts: Vec<ActiveAlert>,
    notified: Vec<HookCounts>,
    /// Its live run, if one is.
    run: Option<RunRow>,
}

/// One configured credential's series, from its row (`None`: not in the store yet) and reads.
fn series_of(c: &Credential, row: Option<&CredentialRow>, reads: Reads, now: i64) -> Series {
    let Reads {
        totals,
        alerts,
        notified,
        run,
    } = reads;
    let in_state = |state: &str| totals.iter().find(|t| t.state == state);
    let outcomes = OUTCOMES.map(|o| in_state(o).map_or(0, |t| t.runs.max(0) as u64));
    let completed = in_state("completed");
    let (sum_ms, count) = completed.map_or((0, 0), |t| (t.duration_ms, t.timed));
    let cumulative = completed.map_or(DURATION_BUCKETS.map(|le| (le, 0)), RunTotals::buckets);
    Series {
        previous_last_used: run
            .as_ref()
            .and_then(|r| crate::engine::PreviousUsage::of(r).last_seen)
            .map(seconds),
        grace_end: run.as_ref().and_then(|r| r.grace_until).map(seconds),
        id: c.id.clone(),
        provider: c.provider().to_owned(),
        outcomes,
        duration_sum: seconds(sum_ms),
        duration_count: count.max(0) as u64,
        duration_buckets: per_bucket(cumulative, count),
        gauges: GAUGES
            .map(|(_, _, fallback, pick)| row.and_then(|r| pick(r, now)).unwrap_or(fallback)),
        due_by_hand: row
            .and_then(|r| crate::scheduler::by_hand::deadline(c, r))
            .map_or(0.0, seconds),
        max_age: c.schedule.max_age.map_or(0, |m| m.as_secs()),
        alerts: CONDITIONS
            .map(|condition| alerts.iter().any(|a| a.condition == condition.as_str())),
        notified: c
            .notify
            .iter()
            .map(|hook| {
                let counts = notified.iter().find(|n| n.hook == *hook);
                (
                    hook.clone(),
                    counts.map_or(0, |n| n.succeeded.max(0) as u64),
                    counts.map_or(0, |n| n.failed.max(0) as u64),
                )
            })
            .collect(),
    }
}

/// A gauge family with a sample for each credential `pick` knows a value of, none for the
/// others.
fn gauges_where_known(
    encoder: &mut DescriptorEncoder,
    series: &[Series],
    name: &str,
    help: &str,
    pick: fn(&Series) -> Option<f64>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for s in series {
        if let Some(at) = pick(s) {
            family.encode_family(&s.labels())?.encode_gauge(&at)?;
        }
    }
    Ok(())
}

/// Each credential's own series.
fn encode_per_credential(
    series: &[Series],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    // A counter's descriptor is named without `_total`: the encoder adds it to the samples.
    let mut family = encoder.encode_descriptor(
        "rotor_rotations",
        "Rotation runs that ended, by outcome.",
        None,
        MetricType::Counter,
    )?;
    for s in series {
        for (outcome, n) in OUTCOMES.iter().zip(s.outcomes) {
            let [credential, provider] = s.labels();
            let set = [credential, provider, ("outcome", *outcome)];
            family
                .encode_family(&set)?
                .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "rotor_rotation_duration_seconds",
        "Time from the start of a rotation to its completion, grace included.",
        None,
        MetricType::Histogram,
    )?;
    for s in series {
        family
            .encode_family(&s.labels())?
            .encode_histogram::<NoLabelSet>(
                s.duration_sum,
                s.duration_count,
                &s.duration_buckets,
                None,
            )?;
    }

    for (i, (name, help, _, _)) in GAUGES.iter().enumerate() {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for s in series {
            family
                .encode_family(&s.labels())?
                .encode_gauge(&s.gauges[i])?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "rotor_credential_due_by_hand_timestamp_seconds",
        "For a credential rotated by hand: when it is due (its expiry, or max_age after its last confirmation); 0 for the others.",
        None,
        MetricType::Gauge,
    )?;
    for s in series {
        family
            .encode_family(&s.labels())?
            .encode_gauge(&s.due_by_hand)?;
    }

    gauges_where_known(
        encoder,
        series,
        "rotor_previous_credential_last_used_timestamp_seconds",
        "During grace under retire_when = \"unused\": when the replaced credential was last seen in use, as the provider tells (no sample before the first sighting).",
        |s| s.previous_last_used,
    )?;
    gauges_where_known(
        encoder,
        series,
        "rotor_grace_end_timestamp_seconds",
        "During grace: when it ends at the latest and the replaced credential is retired (under retire_when = \"unused\" it may end sooner; no sample outside grace).",
        |s| s.grace_end,
    )?;

    let mut family = encoder.encode_descriptor(
        "rotor_credential_max_age_seconds",
        "The configured max_age (0: none), to alert on independently of rotor.",
        None,
        MetricType::Gauge,
    )?;
    for s in series {
        family
            .encode_family(&s.labels())?
            .encode_gauge(&s.max_age)?;
    }

    let mut family = encoder.encode_descriptor(
        "rotor_alerts_active",
        "Alert conditions raised and not yet resolved.",
        None,
        MetricType::Gauge,
    )?;
    for s in series {
        for (condition, raised) in CONDITIONS.iter().zip(s.alerts) {
            let [credential, provider] = s.labels();
            let set = [credential, provider, ("condition", condition.as_str())];
            family
                .encode_family(&set)?
                .encode_gauge(&u64::from(raised))?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "rotor_notifications",
        "Attempts to notify a credential's consumers, by hook and outcome (success, failure).",
        None,
        MetricType::Counter,
    )?;
    for s in series {
        for (hook, succeeded, failed) in &s.notified {
            for (outcome, n) in [("success", succeeded), ("failure", failed)] {
                let set = [
                    ("credential", s.id.as_str()),
                    ("hook", hook.as_str()),
                    ("outcome", outcome),
                ];
                family
                    .encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
    }

    Ok(())
}

/// A gauge family with one sample per provider kind: `value` of its series.
fn per_provider_gauge(
    encoder: &mut DescriptorEncoder,
    providers: &BTreeMap<String, ProviderSeries>,
    name: &str,
    help: &str,
    value: fn(&ProviderSeries) -> f64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (provider, p) in providers {
        family
            .encode_family(&[("provider", provider.as_str())])?
            .encode_gauge(&value(p))?;
    }
    Ok(())
}

/// The series aggregated per provider kind (`[metrics] per_credential_up_to`).
fn encode_per_provider(
    providers: &BTreeMap<String, ProviderSeries>,
    notified: &BTreeMap<String, (u64, u64)>,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "rotor_rotations",
        "Rotation runs that ended, by outcome.",
        None,
        MetricType::Counter,
    )?;
    for (provider, p) in providers {
        for (outcome, n) in OUTCOMES.iter().zip(p.outcomes) {
            let set = [("provider", provider.as_str()), ("outcome", *outcome)];
            family
                .encode_family(&set)?
                .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "rotor_rotation_duration_seconds",
        "Time from the start of a rotation to its completion, grace included.",
        None,
        MetricType::Histogram,
    )?;
    for (provider, p) in providers {
        family
            .encode_family(&[("provider", provider.as_str())])?
            .encode_histogram::<NoLabelSet>(
                p.duration_sum,
                p.duration_count,
                &p.duration_buckets,
                None,
            )?;
    }

    for (name, help, value) in PROVIDER_GAUGES {
        per_provider_gauge(encoder, providers, name, help, value)?;
    }

    let mut family = encoder.encode_descriptor(
        "rotor_alerts_active",
        "Credentials with the alert condition raised and not yet resolved.",
        None,
        MetricType::Gauge,
    )?;
    for (provider, p) in providers {
        for (condition, n) in CONDITIONS.iter().zip(p.alerts) {
            let set = [
                ("provider", provider.as_str()),
                ("condition", condition.as_str()),
            ];
            family.encode_family(&set)?.encode_gauge(&n)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "rotor_notifications",
        "Attempts to notify consumers, by hook and outcome (success, failure).",
        None,
        MetricType::Counter,
    )?;
    for (hook, (succeeded, failed)) in notified {
        for (outcome, n) in [("success", succeeded), ("failure", failed)] {
            let set = [("hook", hook.as_str()), ("outcome", outcome)];
            family
                .encode_family(&set)?
                .encode_counter::<NoLabelSet, _, f64>(n, None)?;
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match &self.exposition {
            Exposition::PerCredential(series) => encode_per_credential(series, &mut encoder)?,
            Exposition::PerProvider {
                providers,
                notified,
            } => encode_per_provider(providers, notified, &mut encoder)?,
        }

        encoder
            .encode_descriptor(
                "rotor_runs_in_flight",
                "Runs started and not yet finished.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.in_flight)?;

        let family = encoder.encode_descriptor(
            "rotor_scheduler_lag_seconds",
            "Time from a run's due time to its claim by this process.",
            None,
            self.lag.0.metric_type(),
        )?;
        self.lag.0.encode(family)?;

        encoder
            .encode_descriptor(
                "rotor_credentials",
                "Credentials in the loaded config.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.credentials)?;

        let mut family = encoder.encode_descriptor(
            "rotor_build_info",
            "The running rotor's version.",
            None,
            MetricType::Gauge,
        )?;
        family
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1u64)?;
        Ok(())
    }
}

/// The whole exposition, in `format`.
pub async fn render(
    store: &Store,
    config: &Config,
    lag: &Lag,
    now: i64,
    format: Format,
) -> Result<String, StoreError> {
    let snapshot = Snapshot::read(store, config, lag, now).await?;
    let mut out = String::with_capacity(snapshot.text_len());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    }
    .expect("writing to a String cannot fail");
    Ok(out)
}
