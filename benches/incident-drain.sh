#!/usr/bin/env bash
# Incident drain: how long `rotor rotate --emergency --select '*'` takes to replace every
# credential of an installation, each in its grace-free emergency path (live runs stopped, a
# new version promoted, the old one retired at once). N `generated` credentials (default
# 10,000) in the file vault, each with a current version first; the SQLite store, or a fresh
# PostgreSQL database per run with ROTOR_BENCH_PG=postgres://USER@HOST:PORT (a role that may
# CREATE DATABASE; its password in PGPASSWORD).
#
#   benches/incident-drain.sh                                  # 10,000 credentials, 3 runs
#   ROTOR_BENCH_PARALLEL="8 64" ROTOR_BENCH_RUNS=5 benches/incident-drain.sh
#   ROTOR_BENCH_PG=postgres://postgres@127.0.0.1:5432 benches/incident-drain.sh
#   ROTOR_BENCH_BIN=../a/target/release/rotor benches/incident-drain.sh   # a binary built elsewhere
#
# Prints, per `--parallel` value, the median wall time of the emergency over all credentials
# and the rate, after checking that every credential ended idle on a new version.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${ROTOR_BENCH_N:-10000}
runs=${ROTOR_BENCH_RUNS:-3}
parallels=${ROTOR_BENCH_PARALLEL:-"8 32 128"}
# ROTOR_BENCH_BIN: a rotor built elsewhere (an A/B of two commits, each from its own worktree).
if [ -n "${ROTOR_BENCH_BIN:-}" ]; then
  rotor=$(realpath "$ROTOR_BENCH_BIN")
  build="binary $ROTOR_BENCH_BIN"
else
  cargo build --release --quiet --locked
  rotor=$(realpath "${CARGO_TARGET_DIR:-target}/release/rotor")
  build="commit $(git rev-parse --short HEAD)"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/rotor-drain.XXXXXX")
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# One installation in $1, its store at $2: the shared tables, then the credentials.
install() {
  local dir=$1 url=$2
  mkdir -p "$dir"
  # A PostgreSQL store needs its integrity key outside the database.
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/store.key")
  {
    printf '[store]\nurl = "%s"\n' "$url"
    [[ $url == postgres* ]] && printf 'key = { file = "%s/store.key" }\n' "$dir"
    printf '\n[vaults.local]\nkind = "file"\ndir = "%s/vault"\nidentity = { file = "%s/vault.key" }\n' "$dir" "$dir"
    awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "\n[[credential]]\nid = \"svc%d/key%d\"\nschedule = { every = \"30d\" }\ngrace = \"1h\"\nvault = { name = \"local\", path = \"svc%d/key%d\" }\nrotator = { kind = \"generated\", length = 32 }\n", i % 100, i, i % 100, i }'
  } >"$dir/rotor.toml"
}

store=SQLite
[ -n "${ROTOR_BENCH_PG:-}" ] && store=PostgreSQL
echo "rotor incident drain: $n generated credentials, file vault, $store store, $build, $(date -u +%F)"
printf '%-12s %12s %12s\n' parallel "median s" "per second"
for p in $parallels; do
  times=()
  for r in $(seq "$runs"); do
    dir="$work/p$p-r$r"
    url="sqlite://$dir/rotor.db"
    if [ -n "${ROTOR_BENCH_PG:-}" ]; then
      db="rotor_drain_${p}_${r}_$$"
      psql -qX "$ROTOR_BENCH_PG/postgres" -c "CREATE DATABASE $db" >/dev/null
      url="$ROTOR_BENCH_PG/$db"
    fi
    install "$dir" "$url"
    # Every credential gets its first version (a new credential is due at once).
    "$rotor" --config "$dir/rotor.toml" run --once --concurrency 128 2>/dev/null
    "$rotor" --config "$dir/rotor.toml" status --json 2>/dev/null >"$dir/before.json"
    start=$(date +%s.%N)
    "$rotor" --config "$dir/rotor.toml" rotate --emergency --select '*' --parallel "$p" \
      --reason "incident drain benchmark" >/dev/null 2>&1
    end=$(date +%s.%N)
    # Every credential idle on a version other than the one it had before the emergency.
    replaced=$("$rotor" --config "$dir/rotor.toml" status --json 2>/dev/null | python3 -c '
import json, sys
before = {c["id"]: c.get("current_version") for c in json.load(open(sys.argv[1]))}
after = json.load(sys.stdin)
print(sum(1 for c in after if c["state"] == "idle" and before.get(c["id"]) and c.get("current_version") not in (None, before[c["id"]])))
' "$dir/before.json")
    [ "$replaced" = "$n" ] || { echo "only $replaced of $n credentials ended idle on a new version" >&2; exit 1; }
    times+=("$(echo "$end - $start" | bc -l)")
    if [ -n "${ROTOR_BENCH_PG:-}" ]; then
      psql -qX "$ROTOR_BENCH_PG/postgres" -c "DROP DATABASE $db" >/dev/null
    fi
    rm -rf "$dir"
  done
  m=$(printf '%s\n' "${times[@]}" | median)
  printf '%-12s %12.2f %12.0f\n' "$p" "$m" "$(echo "$n / $m" | bc -l)"
done
