#!/usr/bin/env bash
# `make install`, checked: runs `meson install` of the build dir $1 into a
# temp DESTDIR and checks that the executables, the systemd units (naming
# the installed executables), the example configs and the docs land where
# docs/DEPLOY.md says, and that nothing is written to /etc.
# Arguments: BUILD_DIR PREFIX BINDIR DATADIR (meson's options).
# Prints "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
build="$1"
prefix="$2"
bindir="$3"
datadir="$4"

passed=0
failed=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $what" >&2
  fi
}

dest="$(mktemp -d /tmp/drover-install-XXXXXX)"
trap 'rm -rf "$dest"' EXIT

# --no-rebuild: the test's dependencies are built already, and a ninja run
# inside `meson test` would compete with it.
if ! meson install -C "$build" --no-rebuild --destdir "$dest" --quiet \
  >"$dest.log" 2>&1; then
  cat "$dest.log" >&2
  failed=$((failed + 1))
fi
rm -f "$dest.log"

root="$dest$prefix"
bin="$root/$bindir"
doc="$root/$datadir/doc/drover"
units="$root/lib/systemd/system"

for exe in droverd drover-worker drover; do
  check "$exe is installed and executable" test -x "$bin/$exe"
  check "$exe --version runs" "$bin/$exe" --version
done >/dev/null

for unit in droverd.service drover-worker@.service; do
  check "unit $unit installed" test -f "$units/$unit"
done
check "droverd.service runs the installed droverd" \
  grep -qx "ExecStart=$prefix/$bindir/droverd --config /etc/drover/droverd.toml" \
  "$units/droverd.service"
check "drover-worker@.service runs the installed worker" \
  grep -qx "ExecStart=$prefix/$bindir/drover-worker --config /etc/drover/worker-%i.toml" \
  "$units/drover-worker@.service"
check "units point at the installed DEPLOY.md" \
  grep -qx "Documentation=file:$prefix/$datadir/doc/drover/DEPLOY.md" \
  "$units/droverd.service"
check "the unit has no build-tree paths" \
  bash -c "! grep -q '$build' '$units/droverd.service'"

for f in droverd.toml worker.toml demo.toml; do
  check "example $f installed" test -f "$doc/examples/$f"
  check "example $f identical to the source's" \
    cmp -s "$doc/examples/$f" "$(dirname "$0")/../$( [ "$f" = demo.toml ] && echo examples || echo config)/$f"
done
for f in README.md DEPLOY.md JOBS.md PROTOCOL.md STORE.md DOCKER.md SECURITY.md; do
  check "doc $f installed" test -s "$doc/$f"
done

check "nothing written to /etc" test ! -e "$dest/etc"
check "nothing written to $prefix/etc" test ! -e "$root/etc"
# The installed example configs load: droverd refuses a bad config with
# exit 2 before doing anything, so --help after --config proves nothing;
# start it for real on temp endpoints and stop it.
run="$(mktemp -d /tmp/drover-install-run-XXXXXX)"
"$bin/droverd" --config "$doc/examples/droverd.toml" --data-dir "$run/data" \
  --api "ipc://$run/api" --tasks "ipc://$run/tasks" \
  --heartbeat "ipc://$run/hb" >"$run/log" 2>&1 &
pid=$!
served=false
for _ in $(seq 100); do
  if DROVER_API="ipc://$run/api" "$bin/drover" workers >/dev/null 2>&1; then
    served=true
    break
  fi
  sleep 0.1
done
check "installed droverd serves with the installed example config" $served
kill -TERM "$pid"
wait "$pid"
check "installed droverd exits 0 on SIGTERM" test $? -eq 0
rm -rf "$run"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
