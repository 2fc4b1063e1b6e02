#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, with ASan and UBSan) into $1
# (default build-fuzz). Run one for a minute with:
#   build-fuzz/job_file_fuzz -max_total_time=60 -print_final_stats=1 CORPUS_DIR tests/data/good
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build-fuzz}"
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
       -DMSGPACK_NO_BOOST -DDROVER_VERSION=\"fuzz\" -Iinclude -Iworkers)
toml_lua=$(pkg-config --cflags --libs tomlplusplus lua5.4)
json=$(pkg-config --cflags --libs nlohmann_json)
build() {
  local name=$1; shift
  echo "fuzz: building $out/$name" >&2
  # shellcheck disable=SC2068
  clang++ "${flags[@]}" "$@" -o "$out/$name"
}
# The job-file parser: what meson's drover_jobs library holds.
jobs=(src/job_spec.cc src/toml_reader.cc src/job_graph.cc src/error_list.cc
      src/suggester.cc src/duration.cc src/expression.cc)
build job_file_fuzz fuzz/job_file_fuzz.cc "${jobs[@]}" src/status.cc $toml_lua
build config_fuzz fuzz/config_fuzz.cc src/config.cc "${jobs[@]}" \
  src/status.cc $toml_lua
build frame_fuzz fuzz/frame_fuzz.cc src/protocol.cc src/status.cc
build docker_stream_fuzz fuzz/docker_stream_fuzz.cc workers/docker_client.cc \
  workers/unix_http.cc src/status.cc $json -lpthread
build http_response_fuzz fuzz/http_response_fuzz.cc workers/unix_http.cc \
  src/status.cc
build direct_argv_fuzz fuzz/direct_argv_fuzz.cc workers/process_spawn.cc \
  src/status.cc
zmq=$(pkg-config --cflags --libs libzmq)
sodium=$(pkg-config --cflags --libs libsodium)
build credentials_fuzz fuzz/credentials_fuzz.cc -Isrc src/keys.cc \
  src/allowlist.cc src/zap_handler.cc "${jobs[@]}" src/status.cc \
  $toml_lua $zmq -lspdlog -lfmt -lpthread
build secrets_fuzz fuzz/secrets_fuzz.cc -Isrc src/secret_box.cc src/keys.cc \
  "${jobs[@]}" src/status.cc $toml_lua $zmq $sodium
build policy_fuzz fuzz/policy_fuzz.cc src/policy.cc workers/shell_runtime.cc \
  workers/process_spawn.cc workers/cgroup.cc "${jobs[@]}" src/status.cc \
  $toml_lua
echo "fuzz: targets in $out/: job_file_fuzz config_fuzz frame_fuzz docker_stream_fuzz http_response_fuzz direct_argv_fuzz credentials_fuzz secrets_fuzz policy_fuzz" >&2
