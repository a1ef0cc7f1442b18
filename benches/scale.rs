//! Scale benchmark of the embedded default: N credentials (default 100,000) with the
//! `generated` rotator and the file vault on SQLite. Prints figures; asserts nothing.
//!
//!   cargo bench --bench scale                      # N = 100,000
//!   ROTOR_BENCH_N=10000 cargo bench --bench scale  # smaller
//!   ROTOR_BENCH_FILES=100 cargo bench --bench scale # credentials spread over 100 files
//!   ROTOR_BENCH_STORE=postgres://... cargo bench --bench scale # an empty PostgreSQL database
//!   ROTOR_BENCH_STORE=postgres://... ROTOR_BENCH_REPLICAS=3 cargo bench --bench scale
//!       # three replicas share the work: each its own connections, writer and worker id, in
//!       # this one process (the concurrency is split between them)
//!
//! Figures: config load, reconcile, plan (`rotor plan` over every credential, not printed),
//! sustained full rotations per second (mint, apply, verify, promote, grace 0, retire: every
//! vault write durable), first rotations and then the same credentials again (replacing a
//! version: the current file read and decrypted at mint, and overwritten at promotion),
//! scheduler lag from due time to claim (p50/p99) under a
//! steady load below capacity, claims per second (runs handed out, none run), and peak RSS of
//! the process. On PostgreSQL also the database's CPU and its work a rotation (commits, rows
//! written, buffers read, WAL bytes), counts that do not move with the machine's noise.
// The daemon's future, which this bench holds whole, nests deeper than the default limit
// lets the compiler lay out.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor::clock::{Clock, SystemClock};
use rotor::engine::{Engine, Runtime};
use rotor::scheduler::daemon::{self, Daemon, DaemonOptions, Signal};
use rotor::store::Store;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes the config into `dir/config/`: the shared tables in one file and the credentials
/// spread over `files` files (operators with many credentials keep one file per team).
fn write_config(dir: &std::path::Path, url: &str, n: usize, files: usize) -> std::path::PathBuf {
    let folder = dir.join("config");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("00-main.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n\n[defaults]\ngrace = \"0s\"\n\n[vaults.local]\nkind = \"file\"\n\
             dir = \"{dir}/vault\"\nidentity = {{ file = \"{dir}/vault.key\" }}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let files = files.max(1);
    let mut texts = vec![String::with_capacity(n / files * 200); files];
    for i in 0..n {
        texts[i % files].push_str(&format!(
            "\n[[credential]]\nid = \"svc{}/key{i}\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"local\", path = \"svc{}/key{i}\" }}\nrotator = {{ kind = \"generated\", length = 32 }}\n",
            i % 100,
            i % 100
        ));
    }
    for (k, text) in texts.into_iter().enumerate() {
        std::fs::write(folder.join(format!("team{k:03}.toml")), text).unwrap();
    }
    folder
}

/// Runs `statement` on the store (SQLite or PostgreSQL: the statements here suit both).
async fn sql(url: &str, statement: &str) {
    use sqlx::Connection;
    let statement = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()));
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        statement.execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        statement.execute(&mut c).await.unwrap();
    }
}

/// `SET` for the credentials numbered 1, 2 ... in id order (`k` in `expression`) up to `last`.
fn update_first(last: usize, set: &str) -> String {
    format!(
        "UPDATE credentials SET {set} FROM (SELECT id AS numbered_id, ROW_NUMBER() OVER (ORDER BY id) AS k \
         FROM credentials) numbered WHERE credentials.id = numbered.numbered_id AND numbered.k <= {last}"
    )
}

/// This process's CPU time so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The CPU time so far (user + system, seconds) of every `postgres` process on this machine:
/// the database's cost of the rotations, where it runs here. Backends that exited meanwhile
/// are not counted; the store's pool keeps its connections for the whole run.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .map(|stat| {
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<f64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect();
            (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
        })
        .sum()
}

/// The database's work so far, as PostgreSQL counts it: transactions committed, rows written
/// (inserted, updated or deleted), buffers read (from its cache or not) and WAL bytes. Unlike
/// rates and CPU time these do not move with the machine's noise, so two builds' figures a
/// rotation compare directly (autovacuum's buffer reads and WAL are in them too). A backend
/// reports its counts when it has been idle for a while (10 s at most), so this waits first.
async fn postgres_work(url: &str) -> [f64; 4] {
    use sqlx::Connection;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (commits, rows, buffers): (f64, f64, f64) = sqlx::query_as(
        "SELECT xact_commit::float8, (tup_inserted + tup_updated + tup_deleted)::float8, \
         (blks_hit + blks_read)::float8 FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    let wal: f64 = sqlx::query_scalar("SELECT wal_bytes::float8 FROM pg_stat_wal")
        .fetch_one(&mut c)
        .await
        .unwrap();
    [commits, rows, buffers, wal]
}

/// `after` less `before`, a rotation, as the line the bench prints (nothing without them).
fn work_per_rotation(
    before: Option<[f64; 4]>,
    after: Option<[f64; 4]>,
    rotations: usize,
) -> String {
    let (Some(before), Some(after)) = (before, after) else {
        return String::new();
    };
    let per = |i: usize| (after[i] - before[i]) / rotations as f64;
    format!(
        "{:.2} / {:.1} / {:.0} / {:.0}",
        per(0),
        per(1),
        per(2),
        per(3)
    )
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs one daemon a replica until each stops, and sums what they did.
async fn run_replicas(
    engines: &[Arc<Engine>],
    runtime: &Arc<Runtime>,
    options: DaemonOptions,
    stop_after: Option<Duration>,
) -> daemon::RunSummary {
    let mut replicas = tokio::task::JoinSet::new();
    for engine in engines {
        let (engine, runtime, options) = (engine.clone(), runtime.clone(), options.clone());
        replicas.spawn(async move { run_daemon(&engine, &runtime, options, stop_after).await });
    }
    let mut all = daemon::RunSummary::default();
    while let Some(summary) = replicas.join_next().await {
        let summary = summary.unwrap();
        all.completed += summary.completed;
        all.lag_ms.extend(summary.lag_ms);
    }
    all
}

async fn run_daemon(
    engine: &Arc<Engine>,
    runtime: &Arc<Runtime>,
    options: DaemonOptions,
    stop_after: Option<Duration>,
) -> daemon::RunSummary {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if let Some(after) = stop_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Signal::Stop).await;
        });
    } else {
        std::mem::forget(tx);
    }
    let daemon = Daemon {
        engine: engine.clone(),
        runtime: runtime.clone(),
        options,
        published: tokio::sync::watch::channel(runtime.clone()).0,
        lag: Default::default(),
    };
    daemon
        .run(rx, || async {
            Err::<Runtime, String>("no reload in the benchmark".into())
        })
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let n = env_usize("ROTOR_BENCH_N", 100_000);
    let rotations = env_usize("ROTOR_BENCH_ROTATIONS", 20_000).min(n);
    let dir = tempfile::tempdir_in(std::env::var("ROTOR_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let url = std::env::var("ROTOR_BENCH_STORE")
        .unwrap_or_else(|_| format!("sqlite://{}/rotor.db", dir.path().display()));
    let postgres = !url.starts_with("sqlite:");
    // On SQLite, 128 in flight: the vault's flushes and the store's group commits each serve
    // more rotations than at 64 (alternating runs at 20,000: ~14 % more a second). The
    // PostgreSQL store, which commits each save on its own, gained 9 % at 128 but its lag p99
    // went from 17 to 156 ms: it stays at 64.
    let default_concurrency = if postgres { 64 } else { 128 };
    let concurrency = env_usize("ROTOR_BENCH_CONCURRENCY", default_concurrency);
    let files = env_usize("ROTOR_BENCH_FILES", 1);
    let path = write_config(dir.path(), &url, n, files);
    let clock = SystemClock;

    let started = Instant::now();
    let config = rotor::config::load(&[path]).unwrap();
    let load = started.elapsed();
    let rss_after_load = peak_rss_mib();

    // A PostgreSQL store's integrity key is kept outside it (`[store] key`); the bench's is
    // a fixed one, as its database is thrown away.
    let key =
        postgres.then(|| rotor::store::integrity::IntegrityKey::from_bytes(&[7; 32]).unwrap());
    let store = Store::open(&url, None, key.clone(), false).await.unwrap();
    let started = Instant::now();
    daemon::reconcile(&store, &config, &clock).await.unwrap();
    let reconcile = started.elapsed();

    let started = Instant::now();
    // What `rotor plan` does, its entries made and dropped one at a time as it prints them.
    let plan_count = rotor::app::plan::plan(&store, &config, clock.now_ms())
        .await
        .unwrap()
        .filter(|entry| entry.next_due_at.is_some())
        .count();
    let plan = started.elapsed();

    // Only `rotations` credentials are due; the rest wait a month.
    let far = clock.now_ms() + 30 * 86_400_000;
    sql(&url, &format!("UPDATE credentials SET next_due_at = {far}")).await;
    let now = clock.now_ms();
    sql(
        &url,
        &update_first(rotations, &format!("next_due_at = {now}")),
    )
    .await;
    let runtime = Arc::new(Runtime::build(config).await.unwrap());
    let replicas = env_usize("ROTOR_BENCH_REPLICAS", 1).max(1);
    let mut engines = Vec::new();
    for replica in 0..replicas {
        let store = match replica {
            0 => store.clone(),
            _ => Store::open(&url, None, key.clone(), false).await.unwrap(),
        };
        engines.push(Arc::new(Engine::new(
            store,
            Arc::new(SystemClock),
            daemon::worker_id(),
        )));
    }
    let options = DaemonOptions {
        concurrency: (concurrency / replicas).max(1),
        lease: Duration::from_secs(60),
        poll: Duration::from_secs(5),
        once: true,
    };
    // PostgreSQL's work so far; nothing on SQLite.
    let work_now = async || {
        if postgres {
            Some(postgres_work(&url).await)
        } else {
            None
        }
    };
    let work_before = work_now().await;
    let (started, cpu_before, db_before) = (Instant::now(), cpu_seconds(), postgres_cpu_seconds());
    let summary = run_replicas(&engines, &runtime, options.clone(), None).await;
    let rotate = started.elapsed();
    let cpu_per_rotation_ms = (cpu_seconds() - cpu_before) * 1000.0 / rotations as f64;
    let db_per_rotation_ms = (postgres_cpu_seconds() - db_before) * 1000.0 / rotations as f64;
    assert_eq!(summary.completed, rotations, "every due credential rotated");
    let per_second = rotations as f64 / rotate.as_secs_f64();

    let work_between = work_now().await;

    // The same credentials again: each rotation now replaces a version. With grace 0 the
    // promoted file goes without it (`Previous::Omitted`), so retirement writes nothing; what
    // is left over a first rotation is reading the current file at mint.
    let now = clock.now_ms();
    sql(
        &url,
        &update_first(rotations, &format!("next_due_at = {now}")),
    )
    .await;
    let (started, cpu_before, db_before) = (Instant::now(), cpu_seconds(), postgres_cpu_seconds());
    let summary = run_replicas(&engines, &runtime, options.clone(), None).await;
    let again = started.elapsed();
    let cpu_per_replacing_ms = (cpu_seconds() - cpu_before) * 1000.0 / rotations as f64;
    let db_per_replacing_ms = (postgres_cpu_seconds() - db_before) * 1000.0 / rotations as f64;
    assert_eq!(
        summary.completed, rotations,
        "every due credential rotated again"
    );
    let replacing_per_second = rotations as f64 / again.as_secs_f64();
    // Read after both passes (the first's end is the second's start, one wait each).
    let work_first = work_per_rotation(work_before, work_between, rotations);
    let work_replacing = work_per_rotation(work_between, work_now().await, rotations);

    // Steady load at half the measured capacity for 20 s: due times spread evenly, the daemon
    // sleeping until each is due. Lag is claim time minus due time. Those rotations replace a
    // version, so the capacity is the slower rate of the two (half the first rotations' rate
    // was four fifths of the replacing one in a run, and the queue, not the scheduler, set the
    // lag: p99 1.8 s).
    let rate = (per_second.min(replacing_per_second) / 2.0).max(1.0);
    let seconds = 20.0;
    let count = (rate * seconds) as usize;
    // The due times are spread past a far-off base first, then moved to start 2 s from now by
    // a second statement that touches only them: numbering a million credentials takes
    // seconds, and due times set before it ended would be late when the daemon starts.
    const FAR: i64 = 1 << 50;
    sql(
        &url,
        &update_first(
            count,
            &format!("next_due_at = {FAR} + CAST(((numbered.k - 1) * 1000.0 / {rate}) AS BIGINT)"),
        ),
    )
    .await;
    let start = clock.now_ms() + 2_000;
    sql(
        &url,
        &format!(
            "UPDATE credentials SET next_due_at = next_due_at - {FAR} + {start} \
             WHERE next_due_at >= {FAR}"
        ),
    )
    .await;
    let steady = DaemonOptions {
        once: false,
        ..options
    };
    let summary = run_replicas(
        &engines,
        &runtime,
        steady,
        Some(Duration::from_secs_f64(seconds + 4.0)),
    )
    .await;
    let mut lag = summary.lag_ms.clone();
    lag.sort_unstable();

    // Claim throughput: runs planned for `claims` credentials, then claimed as the daemon
    // claims them when its slots are free (a quarter of the concurrency at a time), with
    // nothing run, until none is left. A store round trip a claim: what bounds how fast
    // replicas hand out work.
    let claims = env_usize("ROTOR_BENCH_CLAIMS", 10_000).min(n);
    let now = clock.now_ms();
    sql(&url, &update_first(claims, &format!("next_due_at = {now}"))).await;
    let planned = daemon::plan_due(&store, &runtime.config, now, claims as i64)
        .await
        .unwrap();
    let batch = (concurrency / 4).max(1) as i64;
    let (started, mut claimed) = (Instant::now(), 0);
    loop {
        let got = store
            .claim("claim-bench", now, now + 600_000, batch)
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        claimed += got.len();
    }
    let claim_rate = claimed as f64 / started.elapsed().as_secs_f64();
    // The steady phase may have left runs of its own (stopped mid-run, released): they are
    // claimed too.
    assert!(claimed >= planned, "every planned run claimed");

    let backend = if postgres {
        "PostgreSQL"
    } else {
        "SQLite (WAL)"
    };
    println!(
        "rotor scale benchmark: {n} credentials in {files} file(s), generated rotator, file vault, {backend} store, {replicas} replica(s)"
    );
    println!("{:<52} {:>12}", "figure", "value");
    println!(
        "{:<52} {:>10.2} s",
        "config load (parse + validate)",
        load.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.2} s",
        "reconcile into an empty store",
        reconcile.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.2} s",
        format!("plan ({plan_count} next-due times)"),
        plan.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.0} /s",
        format!("full rotations, {rotations} due at once, concurrency {concurrency}"),
        per_second
    );
    println!(
        "{:<52} {:>10.2} ms",
        "rotor's CPU (user + system) per rotation", cpu_per_rotation_ms
    );
    if postgres {
        println!(
            "{:<52} {:>10.2} ms",
            "PostgreSQL's CPU per rotation (where it runs here)", db_per_rotation_ms
        );
        println!(
            "{:<52} {:>12}",
            "PostgreSQL a rotation: commits / rows / buffers / WAL B", work_first
        );
    }
    println!(
        "{:<52} {:>10.0} /s",
        "the same credentials again (each replaces a version)", replacing_per_second
    );
    println!(
        "{:<52} {:>10.2} ms",
        "rotor's CPU per rotation, replacing a version", cpu_per_replacing_ms
    );
    if postgres {
        println!(
            "{:<52} {:>10.2} ms",
            "PostgreSQL's CPU per rotation, replacing a version", db_per_replacing_ms
        );
        println!(
            "{:<52} {:>12}",
            "the same, replacing a version", work_replacing
        );
    }
    println!(
        "{:<52} {:>10} ms",
        format!("lag due->claimed p50 ({} runs at {rate:.0}/s)", lag.len()),
        percentile(&lag, 0.5)
    );
    println!(
        "{:<52} {:>10} ms",
        "lag due->claimed p99",
        percentile(&lag, 0.99)
    );
    println!(
        "{:<52} {:>10.0} /s",
        format!("claims ({claimed} runs, {batch} a claim)"),
        claim_rate
    );
    println!(
        "{:<52} {:>10.0} MiB",
        "peak RSS while loading config", rss_after_load
    );
    println!(
        "{:<52} {:>10.0} MiB",
        "peak RSS (whole run)",
        peak_rss_mib()
    );
    store.close().await;
}
