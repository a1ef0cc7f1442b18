//! What one `/metrics` scrape costs as the run history grows: C credentials (default 100) on
//! the embedded default's SQLite store, with 1,000 and then 1,000,000 completed runs behind
//! them. Prints the median and p90 of the scrape (the store reads and the encoding, as the
//! endpoint does them) and, beside it, of the reads the scrape made before the run totals:
//! every run at rest grouped by state, and every completed run's duration. Asserts nothing.
//!
//!   cargo bench --bench scrape
//!   ROTOR_BENCH_SCRAPE_CREDENTIALS=1000 ROTOR_BENCH_SCRAPE_RUNS=1000,100000 cargo bench --bench scrape
//!   ROTOR_BENCH_SCRAPE_CREDENTIALS=100000 ROTOR_BENCH_SCRAPE_RUNS=1000 \
//!     ROTOR_BENCH_SCRAPE_PER_CREDENTIAL_UP_TO=100000 cargo bench --bench scrape   # `[metrics]`
//!   ROTOR_BENCH_SCRAPE_CREDENTIALS=1000000 ROTOR_BENCH_SCRAPE_RUNS=1000 \
//!     ROTOR_BENCH_SCRAPE_REPEATS=11 cargo bench --bench scrape   # scrapes timed (default 31)
//!   ROTOR_BENCH_STORE=postgres://... cargo bench --bench scrape   # an empty PostgreSQL database

use std::time::{Duration, Instant};

use rotor::store::Store;
use rotor::telemetry::metrics::{Format, render};
use sqlx::Connection;

/// Runs `$body` with `$db` connected to the store at `$url`, SQLite or PostgreSQL.
macro_rules! with_connection {
    ($url:expr, $db:ident => $body:expr) => {
        if $url.starts_with("postgres") {
            let mut $db = sqlx::PgConnection::connect($url).await.unwrap();
            let out = $body;
            $db.close().await.unwrap();
            out
        } else {
            let mut $db = sqlx::SqliteConnection::connect($url).await.unwrap();
            let out = $body;
            $db.close().await.unwrap();
            out
        }
    };
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn median_and_p90(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
    )
}

/// Adds `n` completed runs, spread over the credentials, in one statement (the triggers
/// count each, as they would count runs ending one by one).
async fn add_runs(url: &str, from: usize, n: usize, credentials: usize) {
    let sql = format!(
        "WITH RECURSIVE k(i) AS (SELECT CAST({from} AS BIGINT) UNION ALL SELECT i + 1 FROM k \
         WHERE i < {last}) \
         INSERT INTO runs (id, credential_id, token, state, reason, grace_ms, not_before, \
         created_at, finished_at, updated_at) \
         SELECT 'bench-' || i, 'bench/key' || (i % {credentials}), 'token-' || i, 'completed', \
         'schedule', 0, 0, i * 1000, i * 1000 + (i % 7200) * 1000, i * 1000 FROM k",
        last = from + n - 1
    );
    with_connection!(url, db => {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut db).await.unwrap();
    });
}

/// `scan_the_history` on the connection `$db`.
macro_rules! scan_with {
    ($db:ident) => {{
        let started = Instant::now();
        let outcomes: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT credential_id, state, COUNT(*) FROM runs WHERE state IN \
         ('completed', 'rolled_back', 'stuck') AND (drill IS NULL OR drill <> 'dry_run') \
         GROUP BY credential_id, state",
        )
        .fetch_all(&mut $db)
        .await
        .unwrap();
        let durations: Vec<(String, i64)> = sqlx::query_as(
            "SELECT credential_id, finished_at - created_at FROM runs \
         WHERE state = 'completed' AND finished_at IS NOT NULL",
        )
        .fetch_all(&mut $db)
        .await
        .unwrap();
        let took = started.elapsed();
        std::hint::black_box((outcomes, durations));
        took
    }};
}

/// The two reads the scrape made before the run totals, timed together.
async fn scan_the_history(url: &str) -> Duration {
    with_connection!(url, db => scan_with!(db))
}

#[tokio::main]
async fn main() {
    let credentials: usize = env_or("ROTOR_BENCH_SCRAPE_CREDENTIALS", "100")
        .parse()
        .unwrap();
    let sizes: Vec<usize> = env_or("ROTOR_BENCH_SCRAPE_RUNS", "1000,1000000")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let repeats: usize = env_or("ROTOR_BENCH_SCRAPE_REPEATS", "31").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("ROTOR_BENCH_STORE")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("rotor.db").display()));
    let store_kind = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let mut config_text = String::from(
        "[defaults]\ngrace = \"0s\"\n\n[vaults.local]\nkind = \"file\"\ndir = \"vault\"\n\
         identity = { file = \"vault.key\" }\n",
    );
    if let Ok(up_to) = std::env::var("ROTOR_BENCH_SCRAPE_PER_CREDENTIAL_UP_TO") {
        config_text += &format!("\n[metrics]\nper_credential_up_to = {up_to}\n");
    }
    for i in 0..credentials {
        config_text += &format!(
            "\n[[credential]]\nid = \"bench/key{i}\"\nschedule = {{ every = \"30d\" }}\n\
             vault = {{ name = \"local\", path = \"bench/key{i}\" }}\n\
             rotator = {{ kind = \"generated\" }}\n"
        );
    }
    let config = rotor::config::load_text(&dir.path().join("rotor.toml"), config_text).unwrap();
    let key = rotor::store::integrity::IntegrityKey::from_bytes(&[7; 32]).unwrap();
    let store = Store::open(&url, None, Some(key), false).await.unwrap();
    rotor::scheduler::daemon::reconcile(&store, &config, &rotor::clock::SystemClock)
        .await
        .unwrap();
    let lag = Default::default();

    let per = if credentials <= config.metrics.per_credential_up_to {
        "series per credential"
    } else {
        "series per provider kind"
    };
    println!(
        "scrape cost, {credentials} credentials ({per}), {store_kind}, {repeats} scrapes each (ms)"
    );
    let mut runs = 0;
    for size in sizes {
        let filling = Instant::now();
        add_runs(&url, runs, size - runs, credentials).await;
        runs = size;
        let filled = filling.elapsed();
        let mut scrapes = Vec::new();
        let (mut bytes, mut series) = (0, 0);
        for _ in 0..repeats {
            let started = Instant::now();
            let text = render(&store, &config, &lag, 0, Format::OpenMetrics)
                .await
                .unwrap();
            scrapes.push(started.elapsed());
            bytes = text.len();
            series = text.lines().filter(|l| !l.starts_with('#')).count();
        }
        let mut scans = Vec::new();
        for _ in 0..repeats.min(11) {
            scans.push(scan_the_history(&url).await);
        }
        let (median, p90) = median_and_p90(scrapes);
        let (scan_median, scan_p90) = median_and_p90(scans);
        println!(
            "  {runs:>9} completed runs: scrape median {median:.2}, p90 {p90:.2} ({bytes} bytes, \
             {series} samples); \
             the history scan it replaced: median {scan_median:.2}, p90 {scan_p90:.2} \
             (runs added in {:.1} s)",
            filled.as_secs_f64()
        );
    }
}
