//! Scale-out: three real `rotor run` replicas on one real PostgreSQL share the work through
//! leases. Each credential is rotated exactly once (checked at the provider and in the vault),
//! a SIGKILLed replica's runs are finished by the others, a replica stopped past its lease is
//! fenced off and carries on, a database restart is ridden out, and the provider limits of
//! `[limits]` hold for the three together.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor::vault::{Vault, Vaults};
use secrecy::ExposeSecret;

use crate::providers::block_on;
use crate::support::postgres::{self, Postgres};
use crate::support::saas::{ADMIN_TOKEN, Saas};
use crate::support::{Rotor, require_program};

/// `n` credentials rotated by the `http` rotator against one fake SaaS, into one file vault,
/// with the store in database `db` of `server`.
struct Cluster<'a> {
    rotor: Rotor,
    saas: Arc<Saas>,
    server: &'a Postgres,
    db: String,
    n: usize,
}

struct Replica {
    child: Child,
    log: PathBuf,
}

/// A replica a failed test leaves behind is killed, not left running.
impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Replica {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This replica's worker id, from its start line.
    fn worker(&self) -> String {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("rotor started"))
            .expect("started");
        line.split("worker=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    }

    fn signal(&self, signal: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "SIGTERM: {status:?}\n{}", self.log());
    }
}

impl<'a> Cluster<'a> {
    /// `listed`: the rotator lists keys, so that a mint repeated after a crash revokes the key
    /// the first attempt made (each mint then reads every key: kept off where nothing crashes).
    fn new(server: &'a Postgres, name: &str, n: usize, limits: &str, listed: bool) -> Cluster<'a> {
        let saas = Saas::start();
        let rotor = Rotor::new("");
        let dir = rotor.dir.path().to_path_buf();
        std::fs::write(dir.join("saas-admin"), ADMIN_TOKEN).unwrap();
        let mut text = format!(
            r#"
[defaults]
grace = "0s"
alerts = ["log"]
retry = {{ max_attempts = 5, initial = "1s", max = "2s" }}

[vaults.local]
kind = "file"
dir = "{dir}/vault"
identity = {{ file = "{dir}/vault.key" }}

[alerts.log]
kind = "log"
{limits}
"#,
            dir = dir.display()
        );
        for i in 0..n {
            text.push_str(&format!(
                r#"
[[credential]]
id = "svc/key{i}"
schedule = {{ every = "30d" }}
vault = {{ name = "local", path = "svc/key{i}" }}
[credential.rotator]
kind = "http"
base_url = "{url}"
auth = {{ value = {{ file = "{dir}/saas-admin" }} }}
mint = {{ method = "POST", path = "/v1/keys", body = '{{"name": "svc{i} {{{{token}}}}"}}', secret = "/key", id = "/id" }}
verify = {{ path = "/v1/whoami", headers = {{ Authorization = "Bearer {{{{secret}}}}" }} }}
retire = {{ method = "DELETE", path = "/v1/keys/{{{{id}}}}", expect = [204, 404] }}
{list}
"#,
                url = saas.url(),
                dir = dir.display(),
                list = if listed {
                    r#"list = { path = "/v1/keys", items = "/keys", id = "/id", name = "/name", active = "/active" }"#
                } else {
                    ""
                }
            ));
        }
        std::fs::write(&rotor.config, text).unwrap();
        let db = format!("{name}_{}", std::process::id());
        let mut rotor = rotor;
        rotor.use_postgres(server.database(&db));
        Cluster {
            rotor,
            saas,
            server,
            db,
            n,
        }
    }

    /// Starts a replica.
    fn replica(&self, i: usize, lease: &str) -> Replica {
        let log = self.rotor.path(&format!("replica{i}.log"));
        let child = self
            .rotor
            .command(&[
                "run",
                "--lease",
                lease,
                "--poll",
                "1s",
                "--concurrency",
                "8",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica { child, log }
    }

    /// Three replicas started together (the vault's identity made beforehand, as an operator
    /// would), once each has opened the store and the vault.
    fn replicas(&self, lease: &str) -> Vec<Replica> {
        let keygen = require_program("age-keygen", "apt-get install -y age");
        let made = Command::new(keygen)
            .arg("-o")
            .arg(self.rotor.path("vault.key"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let replicas: Vec<Replica> = (0..3).map(|i| self.replica(i, lease)).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, r) in replicas.iter().enumerate() {
            while !r.log().contains("rotor started") {
                assert!(
                    Instant::now() < deadline,
                    "replica {i} did not start:\n{}",
                    r.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        replicas
    }

    fn sql(&self, sql: &str) -> String {
        self.server.psql(&self.db, sql)
    }

    fn completed(&self) -> usize {
        self.sql("SELECT COUNT(*) FROM runs WHERE state = 'completed'")
            .parse()
            .unwrap()
    }

    fn wait_completed(&self, count: usize, timeout: Duration, replicas: &[Replica]) {
        let deadline = Instant::now() + timeout;
        while self.completed() < count {
            let failed =
                self.sql("SELECT COUNT(*) FROM runs WHERE state IN ('rolled_back', 'stuck')");
            assert!(
                Instant::now() < deadline && failed == "0",
                "{} of {count} runs completed ({failed} failed: {}) in {timeout:?}; replica logs:\n{}",
                self.completed(),
                self.sql(
                    "SELECT string_agg(r.credential_id || ' ' || s.step || ' ' || s.outcome || ' by ' || s.worker \
                     || ': ' || COALESCE(s.error, ''), '; ' ORDER BY s.run_id, s.seq) \
                     FROM runs r JOIN run_steps s ON s.run_id = r.id WHERE r.state IN ('rolled_back', 'stuck')"
                ),
                replicas
                    .iter()
                    .map(|r| r
                        .log()
                        .lines()
                        .rev()
                        .filter(|l| !l.contains(" INFO "))
                        .take(40)
                        .collect::<Vec<_>>()
                        .join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every credential rotated exactly once, and what consumers read works at the provider,
    /// with no other key left there.
    fn check_each_rotated_once(&self) {
        let n = self.n;
        assert_eq!(
            self.sql(
                "SELECT COUNT(*), COUNT(DISTINCT credential_id) FROM runs WHERE state = 'completed'"
            ),
            format!("{n}|{n}"),
            "one completed run per credential"
        );
        assert_eq!(
            self.sql("SELECT COUNT(*) FROM runs WHERE state <> 'completed'"),
            "0",
            "no other run"
        );
        assert_eq!(
            self.sql("SELECT COUNT(*) FROM run_steps WHERE step = 'promote' AND outcome = 'ok'"),
            n.to_string(),
            "each credential promoted once: no double rotation"
        );
        let config = rotor::config::load(std::slice::from_ref(&self.rotor.config)).unwrap();
        let mut live = Vec::new();
        block_on(async {
            let vaults = Vaults::open(&config.vaults).await.unwrap();
            let vault = vaults.get("local").unwrap();
            for i in 0..n {
                let doc = vault
                    .read_current(&format!("svc/key{i}"))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("svc/key{i} has a current version: no gap"));
                assert!(
                    vault
                        .read_pending(&format!("svc/key{i}"))
                        .await
                        .unwrap()
                        .is_none(),
                    "svc/key{i}: no orphaned pending version"
                );
                let secret = doc
                    .current
                    .credential
                    .get("value")
                    .unwrap()
                    .expose_secret()
                    .to_owned();
                live.push(secret);
            }
        });
        for (i, secret) in live.iter().enumerate() {
            assert!(
                self.saas.accepts(secret),
                "svc/key{i}: the provider accepts what consumers read"
            );
        }
        assert_eq!(
            self.saas.key_ids().len(),
            n,
            "one key per credential at the provider: nothing orphaned"
        );
    }

    fn workers_of_promotions(&self) -> Vec<String> {
        self.sql("SELECT DISTINCT worker FROM run_steps WHERE step = 'promote' AND outcome = 'ok' ORDER BY worker")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn three_replicas_rotate_a_thousand_due_credentials_each_exactly_once() {
    let cluster = Cluster::new(postgres::shared(), "scale_thousand", 1000, "", false);
    let replicas = cluster.replicas("10s");
    cluster.wait_completed(1000, Duration::from_secs(600), &replicas);
    let mints = cluster
        .saas
        .state
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| *c == "POST /v1/keys")
        .count();
    let logs: Vec<String> = replicas.iter().map(Replica::log).collect();
    for r in replicas {
        r.stop();
    }
    cluster.check_each_rotated_once();
    assert_eq!(mints, 1000, "one key minted per credential");
    assert_eq!(
        cluster.workers_of_promotions().len(),
        3,
        "all three replicas shared the work: {}",
        logs.iter()
            .map(|l| l
                .lines()
                .filter(|l| !l.contains("step done"))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

#[test]
fn a_killed_replicas_runs_are_finished_by_the_others_with_nothing_orphaned() {
    let cluster = Cluster::new(postgres::shared(), "scale_kill", 150, "", true);
    cluster.saas.state.lock().unwrap().mint_delay = Duration::from_millis(300);
    let mut replicas = cluster.replicas("3s");
    cluster.wait_completed(20, Duration::from_secs(120), &replicas);
    let mut victim = replicas.remove(0);
    let worker = victim.worker();
    victim.child.kill().unwrap(); // SIGKILL, mid-run
    victim.child.wait().unwrap();
    let orphaned: usize = cluster
        .sql(&format!(
            "SELECT COUNT(*) FROM runs WHERE lease_owner = '{worker}' AND state <> 'completed'"
        ))
        .parse()
        .unwrap();
    assert!(orphaned > 0, "the replica died holding runs");
    cluster.wait_completed(150, Duration::from_secs(300), &replicas);
    for r in replicas {
        r.stop();
    }
    cluster.check_each_rotated_once();
    let taken_over: usize = cluster
        .sql(&format!(
            "SELECT COUNT(DISTINCT run_id) FROM run_steps s WHERE EXISTS \
             (SELECT 1 FROM run_steps d WHERE d.run_id = s.run_id AND d.worker = '{worker}') \
             AND s.worker <> '{worker}'"
        ))
        .parse()
        .unwrap();
    assert!(
        taken_over > 0,
        "another replica finished the dead one's runs"
    );
}

#[test]
fn a_replica_stopped_past_its_lease_is_fenced_off_and_carries_on() {
    // Enough work that some is left when the stopped replica resumes.
    let cluster = Cluster::new(postgres::shared(), "scale_stop", 240, "", true);
    cluster.saas.state.lock().unwrap().mint_delay = Duration::from_millis(800);
    let replicas = cluster.replicas("2s");
    let stopped = &replicas[0];
    let worker = stopped.worker();
    // Stop it in the middle of a mint.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.sql(&format!(
        "SELECT COUNT(*) FROM run_steps WHERE worker = '{worker}' AND step = 'mint' AND outcome = 'running'"
    )) == "0"
    {
        assert!(Instant::now() < deadline, "the replica never minted");
        std::thread::sleep(Duration::from_millis(20));
    }
    stopped.signal("STOP");
    // Past its lease, and past the server's end of a transaction it may have held open.
    std::thread::sleep(Duration::from_secs(8));
    let taken: usize = cluster
        .sql(&format!(
            "SELECT COUNT(*) FROM runs WHERE lease_owner IS NOT NULL AND lease_owner <> '{worker}'"
        ))
        .parse()
        .unwrap();
    assert!(taken > 0, "the others work on");
    stopped.signal("CONT");
    let resumed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Its late save (or its next step) is refused: another worker owns the run now.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stopped.log().contains("another worker took it over") {
        assert!(
            Instant::now() < deadline,
            "the late step was refused by the fence:\n{}",
            stopped.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_completed(240, Duration::from_secs(300), &replicas);
    for r in replicas {
        r.stop();
    }
    cluster.check_each_rotated_once();
    let later: usize = cluster
        .sql(&format!(
            "SELECT COUNT(*) FROM run_steps WHERE worker = '{worker}' AND outcome = 'ok' AND started_at > {resumed_at}"
        ))
        .parse()
        .unwrap();
    assert!(later > 0, "the fenced replica carried on with fresh work");
}

#[test]
fn replicas_ride_out_a_database_restart_and_finish() {
    let server = postgres::dedicated();
    let cluster = Cluster::new(&server, "scale_restart", 120, "", true);
    cluster.saas.state.lock().unwrap().mint_delay = Duration::from_millis(200);
    let replicas = cluster.replicas("5s");
    cluster.wait_completed(15, Duration::from_secs(120), &replicas);
    server.restart(Duration::from_secs(3));
    cluster.wait_completed(120, Duration::from_secs(300), &replicas);
    let logs: Vec<String> = replicas.iter().map(Replica::log).collect();
    for r in replicas {
        r.stop();
    }
    // Which part of a replica meets the outage first depends on timing: the daemon's loop
    // (when it plans or claims during it) or the connection it listens for work on (always
    // cut). Runs in flight wait for a connection and carry on.
    assert!(
        logs.iter().any(|l| {
            l.contains("store unavailable; waiting, then trying again")
                || l.contains("lost the work notifications; reconnecting")
                || l.contains("the work notifications' connection dropped and is back")
        }),
        "the replicas saw the database go away:\n{}",
        logs.join("\n-----\n")
    );
    cluster.check_each_rotated_once();
}

#[test]
fn provider_limits_hold_for_all_replicas_together() {
    let limits = "[limits.provider.http]\nconcurrency = 3\nper_second = 20\nburst = 3\n";
    let cluster = Cluster::new(postgres::shared(), "scale_limits", 40, limits, false);
    let delay = Duration::from_millis(400);
    cluster.saas.state.lock().unwrap().mint_delay = delay;
    let started = Instant::now();
    let replicas = cluster.replicas("10s");
    cluster.wait_completed(40, Duration::from_secs(300), &replicas);
    for r in replicas {
        r.stop();
    }
    cluster.check_each_rotated_once();
    let state = cluster.saas.state.lock().unwrap();
    let mints: Vec<Instant> = state
        .calls
        .iter()
        .zip(&state.times)
        .filter(|(c, _)| *c == "POST /v1/keys")
        .map(|(_, t)| *t)
        .collect();
    // A key creation is in progress for `delay` after it arrives: count the overlaps.
    let most_at_once = mints
        .iter()
        .map(|t| {
            mints
                .iter()
                .filter(|u| *u <= t && t.duration_since(**u) < delay)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_at_once <= 3,
        "at most 3 runs of the provider at once across the replicas, saw {most_at_once}"
    );
    assert!(
        most_at_once >= 2,
        "the limit, not a lack of work, bounded it"
    );
    // Calls of provider steps in any one second: the rate plus the burst at most.
    let calls: Vec<Instant> = state
        .calls
        .iter()
        .zip(&state.times)
        .filter(|(c, t)| (*c == "POST /v1/keys" || *c == "GET /v1/whoami") && **t >= started)
        .map(|(_, t)| *t)
        .collect();
    let busiest = calls
        .iter()
        .map(|t| {
            calls
                .iter()
                .filter(|u| *u >= t && u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 20 + 3, "{busiest} provider calls in one second");
}

#[test]
fn an_emergency_over_fifty_credentials_in_grace_with_replicas_running() {
    let cluster = Cluster::new(postgres::shared(), "emergency_all", 50, "", false);
    let text = std::fs::read_to_string(&cluster.rotor.config)
        .unwrap()
        .replace("grace = \"0s\"", "grace = \"1h\"");
    std::fs::write(&cluster.rotor.config, text).unwrap();
    let replicas = cluster.replicas("10s");
    // First versions complete at promotion; the second rotation of each is left in its grace.
    cluster.wait_completed(50, Duration::from_secs(120), &replicas);
    cluster.sql("UPDATE credentials SET next_due_at = 0");
    let deadline = Instant::now() + Duration::from_secs(120);
    while cluster.sql("SELECT COUNT(*) FROM runs WHERE state = 'promoted'") != "50" {
        assert!(
            Instant::now() < deadline,
            "the second rotations did not reach grace"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let exposed = cluster.saas.key_ids();
    assert_eq!(
        exposed.len(),
        100,
        "old and new key of each credential live in grace"
    );

    let started = Instant::now();
    let out = cluster.rotor.run(&[
        "rotate",
        "--all",
        "--emergency",
        "--reason",
        "the secrets store's backup leaked",
    ]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{out:?}");
    assert!(stdout.contains("50 of 50 credentials rotated"), "{stdout}");
    eprintln!("rotate --all --emergency over 50 credentials in grace took {took:?}");
    for r in replicas {
        r.stop();
    }

    assert_eq!(
        cluster.sql("SELECT COUNT(*) FROM runs WHERE state NOT IN ('completed', 'rolled_back')"),
        "0",
        "nothing left live"
    );
    assert_eq!(
        cluster.sql("SELECT COUNT(*) FROM runs WHERE state = 'completed' AND reason = 'emergency'"),
        "50"
    );
    let live = cluster.saas.key_ids();
    assert_eq!(live.len(), 50, "one key per credential at the provider");
    assert!(
        live.iter().all(|id| !exposed.contains(id)),
        "no key that was live before the emergency is left"
    );
    let config = rotor::config::load(std::slice::from_ref(&cluster.rotor.config)).unwrap();
    block_on(async {
        let vaults = Vaults::open(&config.vaults).await.unwrap();
        let vault = vaults.get("local").unwrap();
        for i in 0..50 {
            let doc = vault
                .read_current(&format!("svc/key{i}"))
                .await
                .unwrap()
                .unwrap();
            assert!(
                doc.previous.is_none(),
                "svc/key{i} keeps a previous version"
            );
            let secret = doc
                .current
                .credential
                .get("value")
                .unwrap()
                .expose_secret()
                .to_owned();
            assert!(
                cluster.saas.accepts(&secret),
                "svc/key{i}: the current key works"
            );
        }
    });
}

/// A replica whose own clock runs an hour ahead does not take over a run whose lease, by the
/// database's clock, has not run out: leases are timed by PostgreSQL's clock, which the
/// replica measures its own against when it opens the store. (Timed by its own clock it would
/// claim the run at once and verify beside the worker that holds it.)
#[cfg(feature = "failpoints")]
#[test]
fn a_replica_whose_clock_runs_ahead_does_not_take_a_lease_that_has_not_run_out() {
    let cluster = Cluster::new(postgres::shared(), "clock_skew", 1, "", false);
    let rotor = &cluster.rotor;
    rotor.ok(&["rotate", "svc/key0", "--no-wait"]);
    let mut holder = rotor.command(&["run", "--poll", "1s", "--lease", "10s"]);
    holder.env("ROTOR_FAILPOINT", "verify:before");
    let (holder, _) =
        crate::support::spawn_until(holder, "FAILPOINT verify:before", Duration::from_secs(60))
            .expect("the first replica reaches verify and holds the run's lease");
    // Killed when the test ends, however it ends: paused at the failpoint, it never stops.
    let holder = Replica {
        child: holder,
        log: rotor.path("holder.log"),
    };
    let held_by = cluster.sql("SELECT lease_owner FROM runs WHERE state <> 'completed'");

    let ahead = rotor
        .command(&["run", "--once", "--poll", "1s", "--lease", "10s"])
        .env("ROTOR_TEST_HOST_CLOCK_SKEW_MS", "3600000")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&ahead.stderr);
    assert!(ahead.status.success(), "{log}");
    assert_eq!(
        cluster.sql("SELECT lease_owner FROM runs WHERE state <> 'completed'"),
        held_by,
        "the lease stays with the replica that holds it:\n{log}"
    );
    assert_eq!(
        cluster.sql("SELECT COUNT(DISTINCT worker) FROM run_steps"),
        "1",
        "no step of the run was begun by the replica whose clock is ahead:\n{log}"
    );
    assert!(
        log.contains("this host's clock is 3600.0 s ahead of PostgreSQL's"),
        "the skew is measured and reported:\n{log}"
    );
    drop(holder);
}

/// A first start on many credentials logs the first hundred additions a line each and one line
/// for the rest: a million credentials logged a million lines.
#[test]
fn reconcile_logs_a_hundred_additions_and_counts_the_rest() {
    let rotor = Rotor::new(&crate::support::generated_config(130, "0s"));
    let out = rotor.ok(&["run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("credential added").count(), 100, "{log}");
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("and more credentials added"))
        .collect();
    assert_eq!(summary.len(), 1, "{log}");
    assert!(summary[0].contains("more=30"), "{}", summary[0]);
}
