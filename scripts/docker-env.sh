#!/usr/bin/env bash
# The Docker test environment: a daemon, local test images and a local
# registry, with no network beyond loopback. Used by `make test` (through
# scripts/run-tests.sh) and by developers.
#
#   scripts/docker-env.sh start   ensure packages, a daemon, images, registry
#   scripts/docker-env.sh stop    stop what the last `start` started (by the
#                                 PIDs it recorded); what it found running
#                                 stays up
#   scripts/docker-env.sh stop --all
#                                 stop every daemon/registry this harness
#                                 started (never one it did not start)
#   scripts/docker-env.sh status  say what is running
#   scripts/docker-env.sh env     print `export` lines for the tests
#   scripts/docker-env.sh run CMD...
#                                 start, run CMD with that environment, then
#                                 stop what this call started (a daemon or
#                                 registry that was already up stays up);
#                                 exits with CMD's status
#   source scripts/docker-env.sh  same as `start`, exporting into the shell
#
# What `start` does, idempotently (a second run only checks):
#   1. installs docker.io, busybox-static, docker-registry if missing;
#   2. if no daemon answers on $DOCKER_HOST (unix:// only) or
#      /var/run/docker.sock, starts `dockerd --bridge=none --iptables=false`
#      with its data, exec root, pid file and log under the state dir, and
#      records the PID it started in $STATE/dockerd.started-pid — `stop`
#      stops only that process, never a daemon someone else runs;
#   3. builds drover-test/busybox:latest (and drover-test/entrypoint:latest,
#      whose ENTRYPOINT prints a marker) with `docker import` from a rootfs
#      of the static busybox and its applet links;
#   4. starts Debian's docker-registry on 127.0.0.1:<free port> with storage
#      under the state dir, pushes the image there as
#      127.0.0.1:PORT/drover-test/busybox:pushed and removes the local tag,
#      so the tests must pull it; the address goes to $STATE/registry.addr
#      and DROVER_TEST_REGISTRY.
#
# Environment: DROVER_DOCKER_STATE (default /tmp/drover-docker) is the state
# dir. With CI=true a daemon that cannot be had is a loud failure (exit 1);
# otherwise too, start exits non-zero — the Docker tests never skip silently.
# Everything it does is reported on stderr; stdout is kept for `env`.

_dde_state="${DROVER_DOCKER_STATE:-/tmp/drover-docker}"
_dde_image="drover-test/busybox:latest"
_dde_entry_image="drover-test/entrypoint:latest"
_dde_pushed_repo="drover-test/busybox"
_dde_pushed_tag="pushed"

_dde_say() { echo "docker-env: $*" >&2; }

# The daemon's socket path; only unix sockets are supported.
_dde_socket() {
  local host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
  case "$host" in
    unix://*) echo "${host#unix://}" ;;
    *) _dde_say "DOCKER_HOST=$host is not a unix:// socket; unsupported"
       return 1 ;;
  esac
}

_dde_answers() {
  local sock
  sock="$(_dde_socket)" || return 1
  [[ -S "$sock" ]] || return 1
  curl -sf --max-time 3 --unix-socket "$sock" http://localhost/_ping \
    >/dev/null 2>&1
}

_dde_docker() {
  local sock
  sock="$(_dde_socket)" || return 1
  DOCKER_HOST="unix://$sock" docker "$@"
}

_dde_install() {
  local want=(docker.io busybox-static docker-registry curl) missing=() p
  for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  _dde_say "installing ${missing[*]}"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
}

# Whether the PID recorded in FILE is alive and still the program NAME with
# ARG on its command line (guards against a reused PID).
_dde_ours_alive() {
  local file="$1" name="$2" arg="$3" pid
  [[ -f "$file" ]] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
  [[ "$cmd" == *"$name"* && "$cmd" == *"$arg"* ]]
}

# Starts "$@" in the background in a session of its own (so a Ctrl-C or
# hang-up of the caller does not reach it) and writes its exact PID to FILE:
# the inner shell records its own PID, then execs the program.
_dde_spawn() {
  local file="$1" log="$2" i
  shift 2
  rm -f "$file"
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$file" "$@" >>"$log" 2>&1 </dev/null &
  for i in $(seq 1 50); do
    [[ -s "$file" ]] && return 0
    sleep 0.1
  done
  _dde_say "could not start $1"
  return 1
}

_dde_start_daemon() {
  if _dde_answers; then
    _dde_say "a daemon answers on $(_dde_socket); using it"
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    _dde_say "no daemon answers on $(_dde_socket) and starting one needs root"
    return 1
  fi
  local sock i
  sock="$(_dde_socket)" || return 1
  if _dde_ours_alive "$_dde_state/dockerd.started-pid" dockerd "$_dde_state"; then
    # Ours, still starting up (or stuck): wait instead of starting another.
    _dde_say "dockerd (pid $(cat "$_dde_state/dockerd.started-pid")) is" \
      "running but not answering yet; waiting"
    for i in $(seq 1 60); do
      _dde_answers && return 0
      sleep 0.5
    done
    _dde_say "dockerd does not answer; see $_dde_state/dockerd.log"
    return 1
  fi
  mkdir -p "$_dde_state/data" "$_dde_state/exec"
  # A stale socket from a killed daemon would make dockerd refuse to start.
  if [[ -S "$sock" ]]; then
    _dde_say "removing stale socket $sock"
    rm -f "$sock"
  fi
  _dde_say "starting dockerd (state in $_dde_state, socket $sock)"
  # --bridge=none/--iptables=false: no network setup is needed (or possible
  # in a sandbox); tasks default to network none anyway.
  _dde_spawn "$_dde_state/dockerd.started-pid" "$_dde_state/dockerd.log" \
    dockerd --bridge=none --iptables=false \
    --data-root "$_dde_state/data" --exec-root "$_dde_state/exec" \
    --pidfile "$_dde_state/dockerd.pid" -H "unix://$sock" || return 1
  _dde_started_daemon=1
  echo dockerd >>"$_dde_state/last-start"
  for i in $(seq 1 60); do
    if _dde_answers; then
      _dde_say "dockerd (pid $(cat "$_dde_state/dockerd.started-pid")) answers"
      return 0
    fi
    if ! kill -0 "$(cat "$_dde_state/dockerd.started-pid")" 2>/dev/null; then
      _dde_say "dockerd exited; last lines of $_dde_state/dockerd.log:"
      tail -n 20 "$_dde_state/dockerd.log" >&2
      return 1
    fi
    sleep 0.5
  done
  _dde_say "dockerd did not answer within 30 s; see $_dde_state/dockerd.log"
  return 1
}

_dde_make_images() {
  if _dde_docker image inspect "$_dde_image" >/dev/null 2>&1 &&
    _dde_docker image inspect "$_dde_entry_image" >/dev/null 2>&1; then
    return 0
  fi
  local busybox
  busybox="$(command -v busybox || true)"
  [[ -x /bin/busybox ]] && busybox=/bin/busybox
  # ldd succeeds only on a dynamic executable, which an image without libc
  # could not run.
  if [[ -z "$busybox" ]] || ldd "$busybox" >/dev/null 2>&1; then
    _dde_say "need a static busybox (package busybox-static)"
    return 1
  fi
  local root
  root="$(mktemp -d)"
  # mktemp makes it 0700, which the image's / would keep (with the vfs
  # storage driver): no user but root could run anything in it.
  chmod 0755 "$root"
  mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,home}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  _dde_say "building $_dde_image and $_dde_entry_image from $busybox"
  tar -C "$root" -c . | _dde_docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$_dde_image" \
    >/dev/null &&
    tar -C "$root" -c . | _dde_docker import \
      --change 'ENV PATH=/bin' \
      --change 'ENTRYPOINT ["/bin/echo", "image-entrypoint"]' \
      - "$_dde_entry_image" >/dev/null
  local rc=$?
  rm -rf "$root"
  return $rc
}

_dde_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' \
      2>/dev/null && return 0
  fi
  local port
  for port in $(seq 35000 35999); do
    if ! ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

_dde_start_registry() {
  local addr=""
  [[ -f "$_dde_state/registry.addr" ]] && addr="$(cat "$_dde_state/registry.addr")"
  if [[ -n "$addr" ]] &&
    _dde_ours_alive "$_dde_state/registry.pid" docker-registry "$_dde_state" &&
    curl -sf --max-time 3 "http://$addr/v2/" >/dev/null 2>&1; then
    :
  else
    local port
    port="$(_dde_free_port)" || { _dde_say "no free port"; return 1; }
    addr="127.0.0.1:$port"
    mkdir -p "$_dde_state/registry-storage"
    cat >"$_dde_state/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $_dde_state/registry-storage
  delete:
    enabled: true
http:
  addr: $addr
EOF
    _dde_say "starting docker-registry on $addr"
    _dde_spawn "$_dde_state/registry.pid" "$_dde_state/registry.log" \
      docker-registry serve "$_dde_state/registry.yml" || return 1
    _dde_started_registry=1
    echo registry >>"$_dde_state/last-start"
    local i ok=0
    for i in $(seq 1 40); do
      if curl -sf --max-time 2 "http://$addr/v2/" >/dev/null 2>&1; then
        ok=1
        break
      fi
      sleep 0.25
    done
    if [[ $ok -ne 1 ]]; then
      _dde_say "docker-registry did not answer; see $_dde_state/registry.log"
      return 1
    fi
    echo "$addr" >"$_dde_state/registry.addr"
  fi
  local ref="$addr/$_dde_pushed_repo:$_dde_pushed_tag"
  # The registry's storage outlives a restart on another port; only push
  # when it does not hold the image yet.
  if ! curl -sf --max-time 5 -o /dev/null \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$addr/v2/$_dde_pushed_repo/manifests/$_dde_pushed_tag"; then
    _dde_say "pushing $ref"
    _dde_docker tag "$_dde_image" "$ref" &&
      _dde_docker push "$ref" >/dev/null || return 1
  fi
  # Loopback registries are insecure-allowed by default, and the tests must
  # pull: drop any local copy.
  _dde_docker image rm "$ref" >/dev/null 2>&1 || true
  return 0
}

_dde_env() {
  local sock
  sock="$(_dde_socket)" || return 1
  echo "export DOCKER_HOST=unix://$sock"
  echo "export DROVER_DOCKER_STATE=$_dde_state"
  [[ -f "$_dde_state/registry.addr" ]] &&
    echo "export DROVER_TEST_REGISTRY=$(cat "$_dde_state/registry.addr")"
  return 0
}

_dde_fail() {
  if [[ "${CI:-}" == "true" ]]; then
    _dde_say "FATAL (CI=true): $* — the Docker tests cannot run"
  else
    _dde_say "ERROR: $* — the Docker tests cannot run" \
      "(set DROVER_ALLOW_NO_DOCKER=1 to let them report a skip)"
  fi
  return 1
}

_dde_start() {
  mkdir -p "$_dde_state" || { _dde_fail "cannot create $_dde_state"; return 1; }
  : >"$_dde_state/last-start"
  _dde_install || { _dde_fail "installing packages failed"; return 1; }
  _dde_start_daemon || { _dde_fail "no working Docker daemon"; return 1; }
  _dde_make_images || { _dde_fail "building test images failed"; return 1; }
  _dde_start_registry || { _dde_fail "local registry failed"; return 1; }
  _dde_say "ready: $(_dde_env | tr '\n' ' ')"
}

_dde_stop_pid() {
  local file="$1" name="$2" pid i
  if ! _dde_ours_alive "$file" "$name" "$_dde_state"; then
    rm -f "$file"
    return 0
  fi
  pid="$(cat "$file")"
  _dde_say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    _dde_say "$name (pid $pid) ignored SIGTERM for 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$file"
}

# Stops what the last `start` started (recorded in $STATE/last-start), or,
# with --all, whatever this harness started and is still running. A daemon
# or registry that the last `start` found already running stays up: someone
# else's tests may be using it.
_dde_stop() {
  local what
  if [[ "${1:-}" == "--all" ]]; then
    what="dockerd registry"
  else
    what="$(cat "$_dde_state/last-start" 2>/dev/null)"
    [[ -n "$what" ]] || _dde_say "the last start started nothing;" \
      "leaving the daemon and registry up (stop --all stops them)"
  fi
  if [[ "$what" == *registry* ]]; then
    _dde_stop_pid "$_dde_state/registry.pid" docker-registry
    rm -f "$_dde_state/registry.addr"
  fi
  if [[ "$what" == *dockerd* ]]; then
    _dde_stop_pid "$_dde_state/dockerd.started-pid" dockerd
  fi
  [[ -d "$_dde_state" ]] && : >"$_dde_state/last-start"
  return 0
}

_dde_status() {
  local rc=0
  if _dde_answers; then
    _dde_say "daemon answers on $(_dde_socket)"
  else
    _dde_say "no daemon answers on $(_dde_socket)"
    rc=1
  fi
  if _dde_ours_alive "$_dde_state/dockerd.started-pid" dockerd "$_dde_state"; then
    _dde_say "started by this harness: dockerd pid" \
      "$(cat "$_dde_state/dockerd.started-pid")"
  fi
  if _dde_ours_alive "$_dde_state/registry.pid" docker-registry "$_dde_state"; then
    _dde_say "registry pid $(cat "$_dde_state/registry.pid") on" \
      "$(cat "$_dde_state/registry.addr" 2>/dev/null)"
  else
    _dde_say "no registry"
    rc=1
  fi
  return $rc
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: start and export into the caller's shell; never `exit` it.
  if _dde_start; then
    eval "$(_dde_env)"
  else
    return 1
  fi
else
  set -uo pipefail
  case "${1:-start}" in
    start) _dde_start ;;
    stop) _dde_stop "${2:-}" ;;
    status) _dde_status ;;
    env) _dde_env ;;
    run)
      shift
      [[ $# -gt 0 ]] || { echo "usage: $0 run CMD [ARG]..." >&2; exit 2; }
      _dde_started_daemon=0
      _dde_started_registry=0
      _dde_start || exit 1
      eval "$(_dde_env)"
      "$@"
      rc=$?
      if [[ $_dde_started_registry -eq 1 ]]; then
        _dde_stop_pid "$_dde_state/registry.pid" docker-registry
        rm -f "$_dde_state/registry.addr"
      fi
      if [[ $_dde_started_daemon -eq 1 ]]; then
        _dde_stop_pid "$_dde_state/dockerd.started-pid" dockerd
      fi
      exit $rc
      ;;
    *) echo "usage: $0 start|stop [--all]|status|env|run CMD..." >&2; exit 2 ;;
  esac
fi
