#!/usr/bin/env bash
# `make demo`: starts a scheduler and a worker on the built-in defaults
# (tcp://127.0.0.1:7700-7702, data in ./var/drover), runs examples/demo.toml
# — whose tasks run in Docker containers — to its end, shows its status and
# logs, checks that no container or volume of the job is left, and stops
# what it started.
#
#   scripts/demo.sh [BUILD_DIR]     (default: build)
#
# The Docker daemon and the test image come from scripts/docker-env.sh: the
# demo runs inside `docker-env.sh run`, which starts a daemon only if none
# answers and afterwards stops only what that call started, so a daemon
# someone else is using stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"

if [[ "${DROVER_DEMO_IN_DOCKER_ENV:-}" != 1 ]]; then
  export DROVER_DEMO_IN_DOCKER_ENV=1
  exec scripts/docker-env.sh run "$0" "$build"
fi

say() { echo "== $*"; }
die() {
  echo "demo: $*" >&2
  exit 1
}

for exe in droverd drover-worker drover; do
  [[ -x "$build/$exe" ]] || die "$build/$exe is missing: run make first"
done
# The defaults are fixed ports; a scheduler already there would get our job.
for port in 7700 7701 7702; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$port (another droverd?);" \
      "stop it and run the demo again"
  fi
done
socket="${DOCKER_HOST#unix://}"
mkdir -p var

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say "starting droverd (log: var/demo-droverd.log)"
"$build/droverd" >var/demo-droverd.log 2>&1 &
droverd_pid=$!
pids+=("$droverd_pid")
say "starting drover-worker with the docker and shell runtimes on $socket" \
  "(log: var/demo-worker.log)"
"$build/drover-worker" --name demo-worker --runtime docker --runtime shell \
  --docker-socket "$socket" >var/demo-worker.log 2>&1 &
worker_pid=$!
pids+=("$worker_pid")

ready=0
for _ in $(seq 150); do
  kill -0 "$droverd_pid" 2>/dev/null ||
    die "droverd exited; see var/demo-droverd.log: $(tail -n 3 var/demo-droverd.log)"
  kill -0 "$worker_pid" 2>/dev/null ||
    die "drover-worker exited; see var/demo-worker.log: $(tail -n 3 var/demo-worker.log)"
  if "$build/drover" workers --json 2>/dev/null | python3 -c '
import json, sys
ws = json.load(sys.stdin)
sys.exit(0 if any(w["name"] == "demo-worker" and w["state"] == "ready"
                  for w in ws) else 1)' 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
"$build/drover" workers
[[ $ready -eq 1 ]] || die "the worker did not become ready; see var/demo-worker.log"

say "drover submit examples/demo.toml"
job=$("$build/drover" submit examples/demo.toml)
echo "$job"
say "drover wait $job"
rc=0
"$build/drover" wait "$job" --timeout 120s || rc=$?
say "drover status $job"
"$build/drover" status "$job"
say "drover logs $job"
"$build/drover" logs "$job"

# The worker removes every container and volume of an attempt when it ends.
left=""
for _ in $(seq 50); do
  left="$(docker -H "$DOCKER_HOST" ps -aq --filter "label=drover.job=$job")$(
    docker -H "$DOCKER_HOST" volume ls -q --filter "label=drover.job=$job")"
  [[ -z "$left" ]] && break
  sleep 0.1
done
if [[ -n "$left" ]]; then
  echo "demo: containers or volumes of job $job are left: $left" >&2
  rc=1
else
  say "no container or volume of job $job is left"
fi
exit $rc
