#!/usr/bin/env bash
# SSH benchmark, measured in one run through vigil (recording on), direct to sshd, and through
# OpenSSH ProxyJump: bulk exec throughput, PTY throughput, keystroke echo latency, connection
# setup time, and vigil's RSS per idle session with many concurrent sessions.
#
# Usage: bash benches/ssh.sh [BULK_MB] [IDLE_SESSIONS]    (defaults 500 and 500)
# Needs: sshd (openssh-server), ssh, python3. Starts `vigil demo` on free ports in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
BULK_MB=${1:-500}
IDLE=${2:-500}
cargo build --release --quiet
V=$PWD/target/release/vigil
DIR=$(mktemp -d /tmp/vigil-bench-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
"$V" demo --dir "$DIR" --port "$PORT" > "$DIR/demo.out" 2>&1 &
DEMO=$!
cleanup() { pkill -f "sleep 600" 2>/dev/null || true; kill $DEMO 2>/dev/null || true; wait $DEMO 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$DIR/demo.out" 2>/dev/null && break; sleep 0.1; done
grep -q "demo+local" "$DIR/demo.out" || { cat "$DIR/demo.out"; echo "no sshd target: apt-get install openssh-server"; exit 1; }
TARGET=$(grep -m1 '^address = ' "$DIR/vigil.toml" | cut -d'"' -f2)
TUSER=$(grep -m1 '^user = ' "$DIR/vigil.toml" | cut -d'"' -f2)
TPORT=${TARGET##*:}
common="IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes"
printf 'Host *\n  IdentityFile %s\n  %s\n' "$DIR/state/keys/local" "$common" > "$DIR/ssh_direct"
printf 'Host *\n  IdentityFile %s\n  %s\n' "$DIR/demo_ed25519" "$common" > "$DIR/ssh_vigil"
VIGIL=(ssh -F "$DIR/ssh_vigil" -p "$PORT" demo+local@127.0.0.1)
DIRECT=(ssh -F "$DIR/ssh_direct" -p "$TPORT" "$TUSER@127.0.0.1")
JUMP=(ssh -F "$DIR/ssh_direct" -J "$TUSER@127.0.0.1:$TPORT" -p "$TPORT" "$TUSER@localhost")

now() { python3 -c 'import time; print(time.monotonic())'; }
secs() { local t0 t1; t0=$(now); "$@" > /dev/null; t1=$(now); python3 -c "print($t1-$t0)"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

echo "bulk: ${BULK_MB} MB exec stream; pty: $((BULK_MB / 5)) MB of text through a pty"
declare -A BULK PTY SETUP ECHO
for way in VIGIL DIRECT JUMP; do
  declare -n cmd=$way
  t=$(secs "${cmd[@]}" "head -c ${BULK_MB}M /dev/zero")
  BULK[$way]=$(python3 -c "print(f'{$BULK_MB/$t:.0f}')")
  t=$(secs "${cmd[@]}" -tt "head -c $((BULK_MB / 5))M /dev/zero | tr '\\0' a | fold -w 120")
  PTY[$way]=$(python3 -c "print(f'{($BULK_MB/5)/$t:.0f}')")
  t0=$(now); for _ in $(seq 20); do "${cmd[@]}" true; done; t1=$(now)
  SETUP[$way]=$(python3 -c "print(f'{($t1-$t0)/20*1000:.1f}')")
  ECHO[$way]=$(python3 benches/echo_latency.py 200 -- "${cmd[@]}" -tt)
  echo "  $way: bulk ${BULK[$way]} MB/s, pty ${PTY[$way]} MB/s, setup ${SETUP[$way]} ms, echo p50/p99 ${ECHO[$way]} ms"
done

# RSS per idle session: interactive sessions with a pty, idle.
rss() { awk '/VmRSS/ {print $2}' /proc/$DEMO/status; }
"${VIGIL[@]}" true
before=$(rss)
for i in $(seq "$IDLE"); do
  (sleep 600 | "${VIGIL[@]}" -tt 'sleep 600' > /dev/null 2>&1 &)
  [ $((i % 50)) -eq 0 ] && sleep 1
done
for _ in $(seq 120); do
  n=$(ls "$DIR/state/spool" | grep -c -- - || true)
  [ "$n" -ge "$IDLE" ] && break; sleep 1
done
sleep 2
after=$(rss)
open=$(ls "$DIR/state/spool" | grep -c -- - || true)
per=$(python3 -c "print(f'{($after-$before)/max(1,$open):.0f}')")

echo
echo "| measure | vigil | direct | ProxyJump | ratio | goal |"
echo "|---|---|---|---|---|---|"
echo "| bulk exec throughput (MB/s) | ${BULK[VIGIL]} | ${BULK[DIRECT]} | ${BULK[JUMP]} | $(ratio ${BULK[VIGIL]} ${BULK[JUMP]})x ProxyJump | >= 1.0x ProxyJump |"
echo "| PTY throughput (MB/s) | ${PTY[VIGIL]} | ${PTY[DIRECT]} | ${PTY[JUMP]} | $(ratio ${PTY[VIGIL]} ${PTY[DIRECT]})x direct | >= 0.9x direct |"
echo "| connection setup (ms) | ${SETUP[VIGIL]} | ${SETUP[DIRECT]} | ${SETUP[JUMP]} | $(ratio ${SETUP[VIGIL]} ${SETUP[JUMP]})x ProxyJump | <= 0.8x ProxyJump |"
v50=${ECHO[VIGIL]%% *}; d50=${ECHO[DIRECT]%% *}
echo "| echo latency p50 / p99 (ms) | ${ECHO[VIGIL]} | ${ECHO[DIRECT]} | ${ECHO[JUMP]} | +$(python3 -c "print(f'{$v50-$d50:.3f}')") ms p50 | <= +0.5 ms |"
echo "| RSS per idle session (KiB) | $per ($open sessions) | | | | <= 256 |"
