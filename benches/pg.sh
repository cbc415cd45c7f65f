#!/usr/bin/env bash
# Postgres benchmark, measured in one run with pgbench against the same PostgreSQL 15 (1) directly,
# (2) through vigil (SCRAM login, recording on, a deny rule and a masked column in force),
# (3) through pgbouncer (pool_mode = session, the peer) and (4) through the relay floor
# (examples/relay_floor.rs: a tokio relay that only copies bytes, what any tokio proxy pays
# here before doing work of its own): select-only in simple and prepared protocol, the default
# TPC-B-like mix in simple and prepared protocol, each with 1 client and with CLIENTS clients,
# and connection setup rate (a new connection per transaction). Prints TPS, the proxy's CPU per
# statement (user + system time of the vigil, pgbouncer or relay process over the run, divided
# by the statements pgbench completed) and the ratios vigil/direct, vigil/pgbouncer and
# relay/pgbouncer in one table, vigil's RSS, and vigil's RSS per idle client with IDLE clients
# connected at once.
# Each configuration runs ROUNDS times, the four endpoints one after the other in an order that
# turns each round (so that none always runs first, on a cooler or warmer machine); the table
# shows each endpoint's median TPS, latency and CPU, and the ratios of the medians. Single runs
# on this 2-core machine move 10-20% from one to the next.
#
# Usage: bash benches/pg.sh [SECONDS] [CLIENTS] [THREADS] [CONNECT_SECONDS] [IDLE] [ROUNDS]
#        (defaults 15 8 2 5 1000 3)
# Needs: PostgreSQL 15 server binaries (postgresql-15), psql, python3, pgbouncer (installed with
# apt-get when missing). Everything runs on 127.0.0.1 at free ports in a temp dir that is removed
# at exit, with every process the script started.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
CLIENTS=${2:-8}
THREADS=${3:-2}
CSECS=${4:-5}
IDLE=${5:-1000}
ROUNDS=${6:-3}
SCALE=10
PG_BIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer

die() { echo "benches/pg.sh: $*" >&2; exit 1; }

# Prerequisites.
for b in initdb postgres pgbench pg_isready; do
  [ -x "$PG_BIN/$b" ] || die "missing $PG_BIN/$b: apt-get install -y postgresql-15"
done
command -v psql > /dev/null || die "missing psql: apt-get install -y postgresql-client-15"
command -v python3 > /dev/null || die "missing python3: apt-get install -y python3"
command -v cargo > /dev/null || die "missing cargo (the Rust toolchain)"
if [ ! -x "$PGBOUNCER" ]; then
  [ "$(id -u)" -eq 0 ] || die "missing $PGBOUNCER and not root: apt-get install -y pgbouncer"
  echo "pgbouncer is missing: installing it with apt-get install -y pgbouncer"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer > /dev/null
  fi
  [ -x "$PGBOUNCER" ] || die "apt-get install -y pgbouncer did not install $PGBOUNCER"
fi
# PostgreSQL and pgbouncer refuse to run as root: as root they run as nobody.
if [ "$(id -u)" -eq 0 ]; then
  command -v setpriv > /dev/null || die "missing setpriv (util-linux), needed to run postgres as nobody"
  AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  OWNER=nobody:nogroup
else
  AS=()
  OWNER=
fi

cargo build --release --quiet --bin vigil --example relay_floor
V=$PWD/target/release/vigil
RELAY=$PWD/target/release/examples/relay_floor
PGBENCH=$PG_BIN/pgbench

DIR=$(mktemp -d /tmp/vigil-pgbench-XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
  done
  case "$DIR" in /tmp/vigil-pgbench-*) rm -rf -- "$DIR" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 755 "$DIR"
# Whether a psql login with conninfo $1 and password $2 succeeds within 10 s.
accepts_login() {
  local _
  for _ in $(seq 100); do
    if PGPASSWORD=$2 psql -X -At "$1" -c "select 1" > /dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
VIGIL_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
APP_PW=app-secret
BENCH_PW=bench-pw
export PGSSLMODE=disable PGCONNECT_TIMEOUT=10

# PostgreSQL 15: initdb, SCRAM for every connection, role app owning database appdb.
mkdir -p "$DIR/pg" "$DIR/bouncer"
echo "postgres-secret" > "$DIR/pg/pwfile"
[ -z "$OWNER" ] || chown -R "$OWNER" "$DIR/pg" "$DIR/bouncer"
"${AS[@]}" "$PG_BIN/initdb" -D "$DIR/pg/data" --no-sync -A scram-sha-256 --pwfile="$DIR/pg/pwfile" \
  -U postgres -E UTF8 --locale=C > "$DIR/pg/initdb.log" 2>&1 || { cat "$DIR/pg/initdb.log"; die "initdb failed"; }
# Durability off (fsync, synchronous_commit, full_page_writes): a throwaway database, so that
# the TPC-B figures measure the paths to PostgreSQL, not the disk.
"${AS[@]}" "$PG_BIN/postgres" -D "$DIR/pg/data" -c listen_addresses=127.0.0.1 -c port="$PG_PORT" \
  -c unix_socket_directories="$DIR/pg" -c max_connections=$((IDLE + 100)) -c shared_buffers=256MB \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off > "$DIR/pg/postgres.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$DIR/pg/postgres.log"; die "postgres did not start"; }
PGPASSWORD=postgres-secret psql -q -X -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" \
  -c "create role app login password '$APP_PW'" -c "create database appdb owner app" > /dev/null
DIRECT_CONN="host=127.0.0.1 port=$PG_PORT user=app dbname=appdb"
echo "pgbench -i -s $SCALE (direct, as app over TCP)"
PGPASSWORD=$APP_PW "$PGBENCH" -i -q -s "$SCALE" "$DIRECT_CONN" > "$DIR/init.log" 2>&1 || { cat "$DIR/init.log"; die "pgbench -i failed"; }

# vigil: the target appdb, a deny rule, a mask on the column pgbench's selects read, and two users
# (SCRAM verifiers from `vigil passwd`): bench, to whom the mask applies, and bench-rw, whose role
# is exempt from it. The TPC-B-like mix runs as bench-rw (figures comparable with earlier runs);
# one transaction of it as bench shows what vigil answers a masked user (it runs since vigil
# allows `SET abalance = abalance + ...`: a value written back to the column it came from).
MASKED=public.pgbench_accounts.abalance
mkdir -p "$DIR/vigil"
RCPT=$("$V" keygen --out "$DIR/vigil/auditor.key")
VERIFIER=$(echo "$BENCH_PW" | "$V" passwd)
cat > "$DIR/vigil/vigil.toml" << EOF
[listen]
postgres = "127.0.0.1:$VIGIL_PORT"
[server]
host_key = "state/host_ed25519"
[recording]
store = "store"
recipients = ["$RCPT"]
spool = "state/spool"
flush_interval = "2s"
[[user]]
name = "bench"
roles = ["engineer"]
password = "$VERIFIER"
[[user]]
name = "bench-rw"
roles = ["writer"]
password = "$VERIFIER"
[[target]]
name = "appdb"
protocol = "postgres"
address = "127.0.0.1:$PG_PORT"
database = "appdb"
user = "app"
password_env = "APPDB_PASSWORD"
[[role]]
name = "engineer"
targets = ["appdb"]
[[role]]
name = "writer"
targets = ["appdb"]
[[rule]]
name = "no-drop"
targets = ["appdb"]
sql = ["DROP"]
action = "deny"
message = "DROP is blocked"
[[mask]]
target = "appdb"
columns = ["$MASKED"]
method = "redact"
except_roles = ["writer"]
EOF
export APPDB_PASSWORD=$APP_PW
"$V" check --config "$DIR/vigil/vigil.toml" > /dev/null
"$V" serve --config "$DIR/vigil/vigil.toml" > "$DIR/vigil/vigil.log" 2>&1 &
VIGIL_PID=$!
PIDS+=($VIGIL_PID)
VIGIL_CONN="host=127.0.0.1 port=$VIGIL_PORT user=bench dbname=appdb"
accepts_login "$VIGIL_CONN" "$BENCH_PW" || { cat "$DIR/vigil/vigil.log"; die "vigil did not accept a psql login on port $VIGIL_PORT"; }
# The policy and the mask are in force (and the figures below pay for them).
out=$(PGPASSWORD=$BENCH_PW psql -X -At "$VIGIL_CONN" -c "drop table pgbench_history" 2>&1) \
  && die "vigil let DROP through: $out"
case "$out" in *"DROP is blocked"*) ;; *) die "unexpected refusal text for DROP: $out" ;; esac
out=$(PGPASSWORD=$BENCH_PW psql -X -At "$VIGIL_CONN" -c "select aid, abalance from pgbench_accounts where aid = 1" 2>&1)
[ "$out" = "1|" ] || die "abalance is not masked (NULL) through vigil: $out"
out=$(PGPASSWORD=$BENCH_PW psql -X -At "host=127.0.0.1 port=$VIGIL_PORT user=bench-rw dbname=appdb" \
  -c "select aid, abalance from pgbench_accounts where aid = 1" 2>&1)
[ "$out" = "1|0" ] || die "bench-rw should see abalance unmasked through vigil: $out"
RSS_IDLE=$(awk '/VmRSS/ {print $2}' "/proc/$VIGIL_PID/status")

# pgbouncer, session pooling, its own SCRAM user, the same upstream credentials as vigil.
cat > "$DIR/bouncer/pgbouncer.ini" << EOF
[databases]
appdb = host=127.0.0.1 port=$PG_PORT dbname=appdb user=app password=$APP_PW
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DIR/bouncer/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
logfile = $DIR/bouncer/pgbouncer.log
EOF
echo "\"bench\" \"$BENCH_PW\"" > "$DIR/bouncer/userlist.txt"
[ -z "$OWNER" ] || chown -R "$OWNER" "$DIR/bouncer"
"${AS[@]}" "$PGBOUNCER" "$DIR/bouncer/pgbouncer.ini" > "$DIR/bouncer/stdout.log" 2>&1 &
BOUNCER_PID=$!
PIDS+=($BOUNCER_PID)
BOUNCER_CONN="host=127.0.0.1 port=$BOUNCER_PORT user=bench dbname=appdb"
accepts_login "$BOUNCER_CONN" "$BENCH_PW" || { cat "$DIR/bouncer/stdout.log" "$DIR/bouncer/pgbouncer.log" 2> /dev/null; die "pgbouncer did not accept a login"; }

# The floor: a tokio relay that only copies bytes (examples/relay_floor.rs), the client logging
# in to PostgreSQL itself as app. What it costs is what any tokio proxy pays here before doing
# any work of its own.
RELAY_PORT=$(free_port)
"$RELAY" "127.0.0.1:$RELAY_PORT" "127.0.0.1:$PG_PORT" > "$DIR/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=($RELAY_PID)
RELAY_CONN="host=127.0.0.1 port=$RELAY_PORT user=app dbname=appdb"
accepts_login "$RELAY_CONN" "$APP_PW" || { cat "$DIR/relay.log"; die "the relay floor did not pass a login through"; }
declare -A CONN PW
CONN[direct]=$DIRECT_CONN; PW[direct]=$APP_PW
CONN[vigil]=$VIGIL_CONN; PW[vigil]=$BENCH_PW
CONN[vigil-rw]="host=127.0.0.1 port=$VIGIL_PORT user=bench-rw dbname=appdb"; PW[vigil-rw]=$BENCH_PW
CONN[pgbouncer]=$BOUNCER_CONN; PW[pgbouncer]=$BENCH_PW
CONN[relay]=$RELAY_CONN; PW[relay]=$APP_PW
declare -A PROC
PROC[vigil]=$VIGIL_PID
PROC[pgbouncer]=$BOUNCER_PID
PROC[relay]=$RELAY_PID
ENDPOINTS=(direct vigil pgbouncer relay)
MODES=(select-simple select-prepared tpcb-simple tpcb-prepared connect)
declare -A ARGS LABEL STMTS
ARGS[select-simple]="-S -M simple -T $SECS"
ARGS[select-prepared]="-S -M prepared -T $SECS"
ARGS[tpcb-simple]="-M simple -T $SECS"
ARGS[tpcb-prepared]="-M prepared -T $SECS"
ARGS[connect]="-C -S -M simple -T $CSECS"
LABEL[select-simple]="select-only, simple (-S)"
LABEL[select-prepared]="select-only, prepared (-S -M prepared)"
LABEL[tpcb-simple]="TPC-B-like mix, simple (vigil as bench-rw)"
LABEL[tpcb-prepared]="TPC-B-like mix, prepared (vigil as bench-rw)"
LABEL[connect]="connection setup (-C -S), connections/s"
# Statements per pgbench transaction: the mix is BEGIN, 3 UPDATEs, a SELECT, an INSERT, END.
STMTS[select-simple]=1; STMTS[select-prepared]=1; STMTS[tpcb-simple]=7; STMTS[tpcb-prepared]=7; STMTS[connect]=1

declare -A TPS LAT CPU
FAILS=0
rss_sample() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# User + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
echo "postgres 127.0.0.1:$PG_PORT, vigil :$VIGIL_PORT, pgbouncer :$BOUNCER_PORT (pool_mode = session)"
echo "vigil: recording on, rule 'no-drop' (sql = [\"DROP\"], deny), mask $MASKED (redact: NULL for an int),"
echo "       which every -S select and the mix's select read"
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); 1 and $CLIENTS clients, $THREADS threads, ${SECS} s per run (-C: ${CSECS} s), -n (no vacuum by pgbench), $ROUNDS rounds (medians below)"
echo
# The median of a list of numbers (the lower middle one of an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
declare -A R_TPS R_LAT R_CPU
RUNS=()
for mode in "${MODES[@]}"; do
  counts=(1 "$CLIENTS")
  if [ "$mode" = connect ]; then counts=("$CLIENTS"); fi
  for c in "${counts[@]}"; do
    RUNS+=("$mode,$c")
    for round in $(seq "$ROUNDS"); do
      # Round 1: direct, vigil, pgbouncer, relay; round 2: vigil, pgbouncer, relay, direct; ...
      order=()
      n=${#ENDPOINTS[@]}
      for i in $(seq 0 $((n - 1))); do order+=("${ENDPOINTS[$(((i + round - 1) % n))]}"); done
      for ep in "${order[@]}"; do
        case "$mode" in tpcb-*)
          # What pgbench does itself without -n, done directly so every endpoint starts alike.
          PGPASSWORD=$APP_PW psql -q -X -v ON_ERROR_STOP=1 "$DIRECT_CONN" \
            -c "truncate pgbench_history" -c "vacuum analyze pgbench_branches, pgbench_tellers" > /dev/null ;;
        esac
        log=$DIR/$mode-$c-$ep-$round.log
        who=$ep
        case "$mode,$ep" in tpcb-*,vigil) who=vigil-rw ;; esac
        j=$THREADS
        if [ "$c" -lt "$j" ]; then j=$c; fi
        proc=${PROC[$ep]:-}
        if [ -n "$proc" ]; then t0=$(cpu_ticks "$proc"); fi
        # shellcheck disable=SC2086
        PGPASSWORD=${PW[$who]} "$PGBENCH" -n ${ARGS[$mode]} -c "$c" -j "$j" "${CONN[$who]}" > "$log" 2>&1 &
        bench=$!
        if [ "$mode,$c,$round" = "select-simple,$CLIENTS,1" ]; then
          sleep $((SECS / 2))
          if [ "$ep" = vigil ]; then RSS_LOAD=$(rss_sample "$VIGIL_PID"); fi
          if [ "$ep" = pgbouncer ]; then RSS_BOUNCER=$(rss_sample "$BOUNCER_PID"); fi
        fi
        k=$mode,$c,$ep
        if wait $bench && grep -q '^tps = ' "$log"; then
          tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$log")
          lat=$(awk '/^latency average = / {printf "%.2f", $4; exit}' "$log")
          cpu=-
          if [ -n "$proc" ]; then
            t1=$(cpu_ticks "$proc")
            n=$(awk '/^number of transactions actually processed/ {split($NF, a, "/"); print a[1]; exit}' "$log")
            cpu=$(python3 -c "print(f'{($t1 - $t0) / $TICK * 1e6 / ($n * ${STMTS[$mode]}):.1f}')")
            R_CPU[$k]="${R_CPU[$k]:-} $cpu"
          fi
          R_TPS[$k]="${R_TPS[$k]:-} $tps"
          R_LAT[$k]="${R_LAT[$k]:-} $lat"
          echo "  $mode -c $c via $ep, round $round: $tps tps, latency average $lat ms, proxy CPU $cpu us/statement"
        else
          FAILS=$((FAILS + 1))
          R_TPS[$k]="${R_TPS[$k]:-} FAIL"
          echo "  $mode -c $c via $ep, round $round: FAILED: PGPASSWORD=... $PGBENCH -n ${ARGS[$mode]} -c $c -j $j '${CONN[$who]}'"
          { grep -iE 'error|abort|fatal|fail' "$log" || true; } | head -5 | sed 's/^/      /'
          if [ "$ep" = vigil ]; then tail -5 "$DIR/vigil/vigil.log" | sed 's/^/      vigil.log: /'; fi
        fi
      done
    done
    for ep in "${ENDPOINTS[@]}"; do
      k=$mode,$c,$ep
      # shellcheck disable=SC2086
      case "${R_TPS[$k]}" in
        *FAIL*) TPS[$k]=FAIL; LAT[$k]=-; CPU[$k]=- ;;
        *)
          TPS[$k]=$(median ${R_TPS[$k]})
          LAT[$k]=$(median ${R_LAT[$k]})
          if [ -n "${R_CPU[$k]:-}" ]; then CPU[$k]=$(median ${R_CPU[$k]}); else CPU[$k]=-; fi ;;
      esac
    done
  done
done
# The mix as bench, to whom the mask applies: one transaction, to show what vigil answers.
PGPASSWORD=$APP_PW psql -q -X "$DIRECT_CONN" -c "truncate pgbench_history" > /dev/null
if PGPASSWORD=$BENCH_PW "$PGBENCH" -n -M simple -t 1 -c 1 "$VIGIL_CONN" > "$DIR/tpcb-masked.log" 2>&1; then
  TPCB_MASKED="runs"
else
  TPCB_MASKED="refused: $(grep -m1 -o 'ERROR: .*' "$DIR/tpcb-masked.log" || tail -1 "$DIR/tpcb-masked.log")"
fi
RSS_AFTER=$(rss_sample "$VIGIL_PID")
RSS_PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$VIGIL_PID/status")
kill -0 "$VIGIL_PID" 2> /dev/null || echo "vigil is no longer running: $(tail -5 "$DIR/vigil/vigil.log")"

# RSS per idle client: IDLE pgbench clients log in through vigil at once (each has its own session
# and upstream connection) and sleep; vigil's RSS is sampled while they are all connected.
printf '\\sleep %s s\n' "$((IDLE / 50 + 10))" > "$DIR/idle.sql"
RSS_BASE=$(rss_sample "$VIGIL_PID")
PGPASSWORD=$BENCH_PW "$PGBENCH" -n -c "$IDLE" -j "$THREADS" -t 1 -f "$DIR/idle.sql" "$VIGIL_CONN" > "$DIR/idle.log" 2>&1 &
idle=$!
RSS_IDLE_ALL=
for _ in $(seq $((IDLE / 5 + 60))); do
  sleep 0.5
  n=$(PGPASSWORD=$APP_PW psql -X -At "$DIRECT_CONN" -c "select count(*) from pg_stat_activity where usename = 'app' and state = 'idle'" 2> /dev/null || echo 0)
  if [ "$n" -ge "$IDLE" ]; then
    sleep 1
    RSS_IDLE_ALL=$(rss_sample "$VIGIL_PID")
    break
  fi
done
wait $idle || { FAILS=$((FAILS + 1)); echo "  $IDLE idle clients via vigil: FAILED"; grep -iE 'error|fatal' "$DIR/idle.log" | head -3; }

ratio() {
  case "$1$2" in *FAIL*) echo "-" ;; *) python3 -c "print(f'{$1/$2:.2f}x')" ;; esac
}
echo
echo "Medians of $ROUNDS rounds (ratios are of the medians):"
echo "| mode | clients | direct TPS | vigil TPS | pgbouncer TPS | relay floor TPS | vigil/direct | vigil/pgbouncer | relay floor/pgbouncer | proxy CPU us/statement vigil / pgbouncer / relay floor | latency avg ms direct / vigil / pgbouncer / relay floor |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for run in "${RUNS[@]}"; do
  mode=${run%,*}; c=${run#*,}
  d=${TPS[$run,direct]}; v=${TPS[$run,vigil]}; b=${TPS[$run,pgbouncer]}; r=${TPS[$run,relay]}
  echo "| ${LABEL[$mode]} | $c | $d | $v | $b | $r | $(ratio "$v" "$d") | $(ratio "$v" "$b") | $(ratio "$r" "$b") | ${CPU[$run,vigil]} / ${CPU[$run,pgbouncer]} / ${CPU[$run,relay]} | ${LAT[$run,direct]} / ${LAT[$run,vigil]} / ${LAT[$run,pgbouncer]} / ${LAT[$run,relay]} |"
done
echo
echo "vigil RSS: ${RSS_IDLE} KiB idle after start, ${RSS_LOAD:-?} KiB during $CLIENTS-client select-only, ${RSS_AFTER} KiB after the runs, peak (VmHWM) ${RSS_PEAK} KiB"
if [ -n "$RSS_IDLE_ALL" ]; then
  echo "vigil RSS with $IDLE idle clients: ${RSS_IDLE_ALL} KiB (from ${RSS_BASE} KiB): $(python3 -c "print(f'{($RSS_IDLE_ALL - $RSS_BASE) / $IDLE:.1f}')") KiB per idle client"
else
  echo "vigil RSS with $IDLE idle clients: not measured (they did not all connect in time)"
  FAILS=$((FAILS + 1))
fi
echo "pgbouncer RSS during $CLIENTS-client select-only: ${RSS_BOUNCER:-?} KiB"
echo "recordings written: $(find "$DIR/vigil/store" -type f | wc -l) objects, $(du -sk "$DIR/vigil/store" | cut -f1) KiB"
echo "TPC-B-like mix through vigil as bench (masked user): $TPCB_MASKED"
if [ "$FAILS" -gt 0 ]; then
  echo "$FAILS run(s) failed; see above" >&2
  exit 1
fi
