#!/usr/bin/env bash
# Integration test of examples/python_client.py, the client written from
# docs/PROTOCOL.md alone: it runs against a real droverd and a real
# drover-worker (shell runtime) on ipc:// endpoints in a temp dir.
#
#   tests/python_client_test.sh [BUILD_DIR]     (default: build)
#
# Needs /usr/bin/python3 with python3-zmq and python3-msgpack (or $PYTHON);
# exits 77 (skipped) without them. Prints "N passed, 0 failed", or stops at
# the first failure with a message and the daemons' logs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
if [[ -d $build ]]; then
  build=$(cd "$build" && pwd)
elif [[ -d $repo/$build ]]; then
  build=$(cd "$repo/$build" && pwd)
else
  echo "FAIL: build dir '$build' not found" >&2
  exit 1
fi
client=$repo/examples/python_client.py
python=${PYTHON:-/usr/bin/python3}

for exe in droverd drover-worker; do
  if [[ ! -x $build/$exe ]]; then
    echo "FAIL: $build/$exe is missing; build it first" >&2
    exit 1
  fi
done
if ! "$python" -c 'import zmq, msgpack' 2>/dev/null; then
  echo "SKIP: $python lacks the zmq and msgpack modules" \
       "(Debian: python3-zmq python3-msgpack)" >&2
  exit 77
fi

tmp=$(mktemp -d /tmp/drover-pyclient.XXXXXX)
api=ipc://$tmp/api.sock
daemon_pid=""
worker_pid=""

stop_process() {  # PID: SIGTERM, then SIGKILL after 5 s
  local pid=$1
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_process "$worker_pid"
  stop_process "$daemon_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0

fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/out "$tmp"/err "$tmp"/droverd.log "$tmp"/worker.log; do
    if [[ -s $f ]]; then
      echo "---- ${f##*/} (last 30 lines)" >&2
      tail -n 30 "$f" >&2
    fi
  done
  exit 1
}

pass() {
  passed=$((passed + 1))
  echo "ok $passed - $*"
}

# Runs the client with a wall-clock guard; sets $rc, output in $tmp/out|err.
run_client() {
  rc=0
  timeout 60 "$python" "$client" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [[ $rc -eq 124 ]]; then fail "python_client.py $* ran for over 60 s"; fi
}

# Asserts with Python over the JSON the client printed: CHECK is an
# expression over `job`.
check_json() {
  local what=$1 check=$2
  "$python" - "$tmp/out" "$check" <<'EOF' || fail "$what"
import json, sys
with open(sys.argv[1]) as f:
    job = json.load(f)
if not eval(sys.argv[2], {"job": job}):
    sys.exit(f"assertion failed: {sys.argv[2]}\njob: {json.dumps(job)}")
EOF
}

# ---------------------------------------------------------------- daemons
"$build/droverd" --data-dir "$tmp/data" --api "$api" \
  --tasks "ipc://$tmp/tasks.sock" --heartbeat "ipc://$tmp/heartbeat.sock" \
  >"$tmp/droverd.log" 2>&1 &
daemon_pid=$!
"$build/drover-worker" --tasks "ipc://$tmp/tasks.sock" \
  --heartbeat "ipc://$tmp/heartbeat.sock" --runtime shell \
  --queue default:2 --name "pyclient-test-$$" --work-dir "$tmp/work" \
  >"$tmp/worker.log" 2>&1 &
worker_pid=$!

for _ in $(seq 100); do
  [[ -S $tmp/api.sock ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || fail "droverd exited at start-up"
  sleep 0.1
done
[[ -S $tmp/api.sock ]] || fail "droverd did not listen on $api within 10 s"

# ---------------------------------------------------------------- a job that completes
cat >"$tmp/ok.toml" <<'EOF'
name = "python client test"

[inputs]
greeting = "hello"

[[tasks]]
name = "make"
run = 'printf "%s from python" "$GREETING" > "$DROVER_OUTPUT"'
env = { GREETING = "{{ inputs.greeting }}" }
var = "made"

[[tasks]]
name = "check"
run = 'test "$MADE" = "howdy from python" && echo "got: $MADE"'
env = { MADE = "{{ tasks.made }}" }
EOF
run_client --api "$api" "$tmp/ok.toml" --input greeting=howdy --timeout 10
[[ $rc -eq 0 ]] || fail "a completing job: exit $rc, expected 0"
check_json "a completing job is COMPLETED" 'job["state"] == "COMPLETED"'
check_json "both tasks are COMPLETED, in file order" \
  '[(t["name"], t["state"]) for t in job["tasks"]] == [("make", "COMPLETED"), ("check", "COMPLETED")]'
check_json "the first task's output is what it wrote to \$DROVER_OUTPUT" \
  'job["tasks"][0]["output"] == "howdy from python"'
check_json "the input override is recorded" \
  'job["inputs"] == {"greeting": "howdy"}'
check_json "every task ran once on the test worker" \
  'all(t["attempts"] == 1 and t["worker"].startswith("pyclient-test-") and t["exit_code"] == 0 for t in job["tasks"])'
pass "a 2-task shell job completes: exit 0, state COMPLETED, output returned"

# ---------------------------------------------------------------- a job that fails
cat >"$tmp/fails.toml" <<'EOF'
name = "python client failing test"

[[tasks]]
name = "boom"
run = "echo about to fail; exit 3"
EOF
run_client --api "$api" "$tmp/fails.toml" --timeout 10
[[ $rc -eq 1 ]] || fail "a failing job: exit $rc, expected 1"
check_json "a failing job is FAILED" \
  'job["state"] == "FAILED" and job["tasks"][0]["exit_code"] == 3'
pass "a failing job: exit 1, state FAILED, exit code 3"

# ---------------------------------------------------------------- validation errors
cat >"$tmp/bad.toml" <<'EOF'
name = "python client invalid test"

[[tasks]]
name = "a"
run = "true"
colour = "blue"
EOF
run_client --api "$api" "$tmp/bad.toml" --timeout 10
[[ $rc -eq 2 ]] || fail "an invalid job file: exit $rc, expected 2"
grep -Eq "bad\.toml:[0-9]+:[0-9]+: error: " "$tmp/err" ||
  fail "an invalid job file: no FILE:LINE:COL: error: line on stderr"
[[ ! -s $tmp/out ]] || fail "an invalid job file: something was printed on stdout"
pass "an invalid job file: exit 2 with FILE:LINE:COL: error: lines"

# ---------------------------------------------------------------- nobody answers
start=$(date +%s)
run_client --api "ipc://$tmp/nobody.sock" "$tmp/ok.toml" --timeout 1
elapsed=$(($(date +%s) - start))
[[ $rc -eq 3 ]] || fail "an endpoint nobody serves: exit $rc, expected 3"
[[ $elapsed -le 10 ]] || fail "an endpoint nobody serves: took ${elapsed}s with --timeout 1"
pass "an endpoint nobody serves: exit 3 after --timeout 1"

echo "$passed passed, 0 failed"
