#!/usr/bin/env bash
# Runs drover's benchmark (bench/drover_bench.cc): `make bench` and
# `make bench-quick` call it as
#
#   scripts/run-bench.sh BUILD full|quick [drover_bench flags...]
#
# It builds drover_bench, droverd and drover-worker in BUILD if needed,
# makes a Docker daemon and the local test image available
# (scripts/docker-env.sh start; stopped again at the end only if this call
# started it), prints how loaded the machine is, and runs the tool, which
# prints one figure a line as `name value unit` (`#` lines give context).
#
# The figures in docs/PERFORMANCE.md come from a release build:
#   meson setup build-bench --buildtype=release
#   scripts/run-bench.sh build-bench full
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
mode="${2:-quick}"
shift $(( $# > 2 ? 2 : $# ))
case "$mode" in
  full|quick) ;;
  *) echo "usage: $0 BUILD full|quick [drover_bench flags...]" >&2; exit 2 ;;
esac

if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" >&2 || exit 1
fi
ninja -C "$build" drover_bench droverd drover-worker >&2 || exit 1

if scripts/docker-env.sh start; then
  eval "$(scripts/docker-env.sh env)"
  trap 'scripts/docker-env.sh stop' EXIT
else
  echo "run-bench: no Docker daemon; the docker workload will report" \
       "that it could not run" >&2
fi

# Write back what the set-up wrote (Docker's image import, its state) now,
# so that it does not compete with the workloads' own syncs.
sync

echo "# $(uname -sr), $(nproc) cores; load average before the run:" \
     "$(cut -d' ' -f1-3 /proc/loadavg)"
"$build/drover_bench" --mode "$mode" "$@"
rc=$?
echo "# load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
