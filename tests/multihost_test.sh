#!/usr/bin/env bash
# drover across hosts, for real: droverd, two workers and a client each in
# a network namespace of their own, joined by veth pairs to a bridge in
# the scheduler's namespace (all made here and removed at the end), with
# CURVE over TCP. Checks that an allowed worker runs tasks, an unknown key
# gets nothing, a reader cannot submit, a revoked worker loses its task to
# the other one, and that a capture of everything on the wire (tcpdump on
# the bridge) holds no secret, no job text and no output in the clear,
# while the same capture of a scheduler run --insecure does.
#
#   tests/multihost_test.sh [BUILD_DIR]     (default: build)
#
# Needs root (network namespaces), iproute2 and tcpdump. Without them it
# exits 77 (skipped), except under CI=true, where it fails. Traffic stays in
# the namespaces it makes: 10.123.0.0/24 exists nowhere else.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
[[ -d $build ]] || build=$repo/$build
build=$(cd "$build" && pwd)

skip() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: $* (CI=true: this test must run)" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "ip (iproute2) is missing"
command -v tcpdump >/dev/null || skip "tcpdump is missing"

tmp=$(mktemp -d /tmp/drover-multihost.XXXXXX)
chmod 0755 "$tmp"
tag=dv$$  # names of namespaces and links made here
ns_s=${tag}s ns_w1=${tag}w1 ns_w2=${tag}w2 ns_c=${tag}c
pids=()
made_ns=()

stop_pid() {  # PID: SIGTERM, then SIGKILL after 5 s
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  local ns
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ ${DROVER_KEEP_TEST_DIRS:-} ]]; then
    echo "files kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

passed=0
fail() {
  echo "FAIL: $*" >&2
  local f
  for f in "$tmp"/*.log "$tmp"/out "$tmp"/err; do
    [[ -s $f ]] || continue
    echo "---- ${f##*/} (last 20 lines)" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}
pass() {
  passed=$((passed + 1))
  echo "ok $passed - $*"
}

# ------------------------------------------------------------ the network
# One bridge in the scheduler's namespace; each other namespace has a veth
# whose peer is on the bridge.
ip netns add "$ns_s" || skip "cannot make network namespaces here"
made_ns+=("$ns_s")
ip -n "$ns_s" link set lo up
ip -n "$ns_s" link add br0 type bridge
ip -n "$ns_s" addr add 10.123.0.1/24 dev br0
ip -n "$ns_s" link set br0 up
n=10
for ns in "$ns_w1" "$ns_w2" "$ns_c"; do
  n=$((n + 1))
  ip netns add "$ns"
  made_ns+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "${tag}h$n" netns "$ns" type veth peer name "p$n" netns "$ns_s"
  ip -n "$ns" link set "${tag}h$n" name eth0
  ip -n "$ns" addr add "10.123.0.$n/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns_s" link set "p$n" master br0
  ip -n "$ns_s" link set "p$n" up
done
pass "four namespaces joined by veth pairs and a bridge"

# Everything that crosses the bridge, from now on.
ip netns exec "$ns_s" tcpdump -i br0 -U -s 0 -w "$tmp/wire.pcap" \
  >"$tmp/tcpdump.log" 2>&1 &
tcpdump_pid=$!
pids+=("$tcpdump_pid")
for _ in $(seq 50); do
  grep -q "listening on" "$tmp/tcpdump.log" 2>/dev/null && break
  sleep 0.1
done

# ------------------------------------------------------------- the keys
mkdir -p "$tmp/auth/clients" "$tmp/auth/readers" "$tmp/auth/workers"
for k in w1 w2 alice bob mallory; do
  "$build/drover" keygen "$tmp/$k.key" >/dev/null
done
cp "$tmp/w1.key.pub" "$tmp/auth/workers/w1.pub"
cp "$tmp/w2.key.pub" "$tmp/auth/workers/w2.pub"
cp "$tmp/alice.key.pub" "$tmp/auth/clients/alice.pub"
cp "$tmp/bob.key.pub" "$tmp/auth/readers/bob.pub"

# ---------------------------------------------------------- the daemons
ep=tcp://10.123.0.1
ip netns exec "$ns_s" "$build/droverd" --data-dir "$tmp/data" \
  --auth "$tmp/auth" --api "$ep:7700" --tasks "$ep:7701" \
  --heartbeat "$ep:7702" --heartbeat-interval 200ms >"$tmp/droverd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [[ -s $tmp/auth/server.key.pub ]] && grep -q serving "$tmp/droverd.log" && break
  sleep 0.1
done
grep -q serving "$tmp/droverd.log" || fail "droverd did not start"

start_worker() {  # NAME NAMESPACE KEY [FLAGS...]
  local name=$1 ns=$2 key=$3
  shift 3
  ip netns exec "$ns" "$build/drover-worker" --name "$name" \
    --runtime shell --queue default:1 --work-dir "$tmp/work-$name" \
    --tasks "$ep:7701" --heartbeat "$ep:7702" --heartbeat-interval 200ms \
    --key "$tmp/$key.key" --server-key "$tmp/auth/server.key.pub" "$@" \
    >"$tmp/worker-$name.log" 2>&1 &
  pids+=($!)
}
start_worker w1 "$ns_w1" w1
start_worker w2 "$ns_w2" w2

# The client, from its namespace, as KEY.
client() {  # KEY ARGS...
  local key=$1
  shift
  rc=0
  ip netns exec "$ns_c" timeout 60 "$build/drover" --api "$ep:7700" \
    --key "$tmp/$key.key" --server-key "$tmp/auth/server.key.pub" "$@" \
    >"$tmp/out" 2>"$tmp/err" || rc=$?
}
for _ in $(seq 100); do
  client alice workers
  [[ $(grep -c ' ready ' "$tmp/out") -eq 2 ]] && break
  sleep 0.1
done
[[ $(grep -c ' ready ' "$tmp/out") -eq 2 ]] || fail "the two workers did not join"
pass "droverd with --auth, two workers with keys on other hosts"

# --------------------------------------------------- an allowed worker
cat >"$tmp/job.toml" <<'EOF'
name = "JOBTEXT-7c1d-payroll"
[secrets]
TOKEN = "SECRET-e5f2-hunter2"
[[tasks]]
name = "greet"
run = "echo OUTPUT-9a4b-from-the-task; echo token=$TOKEN; echo -n RESULT-3d8e > $DROVER_OUTPUT"
env = { TOKEN = "{{ secrets.TOKEN }}" }
EOF
client alice submit "$tmp/job.toml" --wait --json
[[ $rc -eq 0 ]] || fail "the job did not complete (exit $rc)"
grep -q '"output": "RESULT-3d8e"' "$tmp/out" || fail "the job's output is not there"
id=$(sed -n 's/^  "id": "\(.*\)",$/\1/p' "$tmp/out")
client alice logs "$id"
grep -q OUTPUT-9a4b-from-the-task "$tmp/out" || fail "the task's log is not there"
grep -q "token=\[redacted\]" "$tmp/out" || fail "the secret is not masked in the log"
pass "an allowed worker ran the job; its output and log came back"

# ------------------------------------------------------ an unknown key
ip netns exec "$ns_c" "$build/drover-worker" --name mallory --runtime shell \
  --queue default:64 --work-dir "$tmp/work-mallory" --tasks "$ep:7701" \
  --heartbeat "$ep:7702" --key "$tmp/mallory.key" \
  --server-key "$tmp/auth/server.key.pub" >"$tmp/worker-mallory.log" 2>&1 &
mallory_pid=$!
pids+=("$mallory_pid")
for _ in $(seq 50); do
  grep -q "refused this key" "$tmp/worker-mallory.log" && break
  sleep 0.1
done
grep -q "refused this key" "$tmp/worker-mallory.log" ||
  fail "the unknown worker was not told it is refused"
client alice submit "$tmp/job.toml" --wait
[[ $rc -eq 0 ]] || fail "a job did not complete beside the unknown worker"
client alice workers
grep -q mallory "$tmp/out" && fail "the unknown worker joined"
client mallory list
[[ $rc -eq 4 ]] || fail "an unknown client was not refused (exit $rc)"
grep -q "authentication refused" "$tmp/err" || fail "the refusal does not say so"
stop_pid "$mallory_pid"
pass "an unknown key gets nothing, as a worker or a client"

# ---------------------------------------------------------- a reader
client bob list
[[ $rc -eq 0 ]] || fail "a reader cannot list (exit $rc)"
client bob submit "$tmp/job.toml"
[[ $rc -eq 4 ]] || fail "a reader could submit (exit $rc)"
grep -q "may only read" "$tmp/err" || fail "the reader's refusal does not say why"
pass "a reader reads and cannot submit"

# ------------------------------------------------- a revoked worker
cat >"$tmp/long.toml" <<'EOF'
name = "long"
[[tasks]]
name = "slow"
run = "sleep 2; echo -n done-by-$DROVER_ATTEMPT > $DROVER_OUTPUT"
EOF
client alice submit "$tmp/long.toml"
long=$(cat "$tmp/out")
runner=""
for _ in $(seq 100); do
  client alice status "$long" --json
  runner=$(sed -n 's/^ *"worker": "\(w[12]\)",\{0,1\}$/\1/p' "$tmp/out")
  grep -q '"state": "RUNNING"' "$tmp/out" && [[ -n $runner ]] && break
  sleep 0.1
done
[[ -n $runner ]] || fail "the long task did not start"
other=w1
[[ $runner == w1 ]] && other=w2
rm "$tmp/auth/workers/$runner.pub"
client alice wait "$long"
[[ $rc -eq 0 ]] || fail "the long job did not complete after $runner was revoked"
client alice status "$long" --json
grep -q "\"worker\": \"$other\"" "$tmp/out" || fail "the task did not move to $other"
grep -q '"output": "done-by-2"' "$tmp/out" || fail "the second attempt did not run it"
grep -q "$runner lost its key" "$tmp/out" || fail "the status does not say why it moved"
client alice workers
grep -q "^$runner *revoked" "$tmp/out" || fail "$runner is not shown revoked"
pass "a revoked worker lost its task to the other one"

# --------------------------------------------------- the control run
# The same job through a scheduler without keys (--insecure): the capture
# method must see what CURVE hides.
ip netns exec "$ns_s" "$build/droverd" --data-dir "$tmp/data-plain" \
  --insecure --api "$ep:7710" --tasks "$ep:7711" --heartbeat "$ep:7712" \
  >"$tmp/droverd-plain.log" 2>&1 &
pids+=($!)
ip netns exec "$ns_w1" "$build/drover-worker" --name plain --runtime shell \
  --work-dir "$tmp/work-plain" --tasks "$ep:7711" --heartbeat "$ep:7712" \
  >"$tmp/worker-plain.log" 2>&1 &
pids+=($!)
sed -e 's/JOBTEXT-7c1d-payroll/CONTROL-JOBTEXT-0b6e/' \
  -e 's/SECRET-e5f2-hunter2/CONTROL-SECRET-41aa/' \
  -e 's/OUTPUT-9a4b/CONTROL-OUTPUT-77f0/' -e 's/RESULT-3d8e/CONTROL-RESULT-5c5c/' \
  "$tmp/job.toml" >"$tmp/control.toml"
rc=0
ip netns exec "$ns_c" timeout 60 "$build/drover" --api "$ep:7710" \
  submit "$tmp/control.toml" --wait >"$tmp/out" 2>"$tmp/err" || rc=$?
[[ $rc -eq 0 ]] || fail "the control job did not complete (exit $rc)"

# --------------------------------------------------------- the capture
# What is in flight reaches the file (the control run's last word first).
for _ in $(seq 50); do
  grep -aq CONTROL-RESULT-5c5c "$tmp/wire.pcap" && break
  sleep 0.1
done
sleep 0.2
stop_pid "$tcpdump_pid"
packets=$(tcpdump -nn -r "$tmp/wire.pcap" 'tcp port 7701' 2>/dev/null | wc -l)
[[ $packets -gt 20 ]] || fail "the capture holds only $packets packets of the worker channel"
for plain in CONTROL-JOBTEXT-0b6e CONTROL-SECRET-41aa CONTROL-OUTPUT-77f0 \
    CONTROL-RESULT-5c5c; do
  grep -aq "$plain" "$tmp/wire.pcap" || fail "the control run's $plain is not in the capture"
done
for secret in JOBTEXT-7c1d SECRET-e5f2 OUTPUT-9a4b RESULT-3d8e hunter2 payroll; do
  grep -aq "$secret" "$tmp/wire.pcap" && fail "'$secret' crossed the wire in the clear"
done
pass "the wire ($packets packets on the worker channel) holds no secret, job text or output in the clear; a plaintext run's does"

echo "$passed passed, 0 failed"
