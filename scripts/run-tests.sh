#!/usr/bin/env bash
# Runs every test of the build dir given as $1 (default: build): makes a
# Docker daemon, local images and a local registry available first
# (scripts/docker-env.sh), stops again only what that started, and ends with
# one line "N passed, M failed" counting test cases across all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"

if ! scripts/docker-env.sh start; then
  echo "run-tests: the Docker test environment could not be started" >&2
  exit 1
fi
eval "$(scripts/docker-env.sh env)"
trap 'scripts/docker-env.sh stop' EXIT

meson test -C "$build" --print-errorlogs --num-processes 2
rc=$?

# Count test cases: doctest suites report theirs, shell suites print
# "N passed, M failed"; anything else counts as one.
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout", "") or ""
    m = re.search(r"test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed", out)
    s = re.search(r"^(\d+) passed, (\d+) failed", out, re.M)
    if m:
        p, f = int(m.group(2)), int(m.group(3))
    elif s:
        p, f = int(s.group(1)), int(s.group(2))
    else:
        p, f = (1, 0) if t.get("result") == "OK" else (0, 1)
    if t.get("result") != "OK" and f == 0:
        f = 1
    passed += p
    failed += f
print(f"{passed} passed, {failed} failed")
PY
exit $rc
