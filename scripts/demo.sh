#!/usr/bin/env bash
# `make demo`: starts a scheduler and a worker on the built-in defaults
# (tcp://127.0.0.1:7700-7702, data in ./var/drover), runs examples/demo.toml
# to its end, shows its status and logs, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
mkdir -p var

scripts/docker-env.sh start
eval "$(scripts/docker-env.sh env)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/docker-env.sh stop
}
trap cleanup EXIT

echo "== starting droverd (log: var/demo-droverd.log)"
"$build/droverd" >var/demo-droverd.log 2>&1 &
pids+=($!)
echo "== starting drover-worker with the docker and shell runtimes (log: var/demo-worker.log)"
"$build/drover-worker" --name demo-worker --runtime docker --runtime shell \
  >var/demo-worker.log 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  if "$build/drover" workers 2>/dev/null | grep -q demo-worker; then break; fi
  sleep 0.1
done
"$build/drover" workers

echo "== drover submit examples/demo.toml --wait"
job=$("$build/drover" submit examples/demo.toml)
echo "$job"
rc=0
"$build/drover" wait "$job" --timeout 120s || rc=$?
echo "== drover status $job"
"$build/drover" status "$job"
echo "== drover logs $job"
"$build/drover" logs "$job"
exit $rc
