// DockerClient: the few Docker Engine API calls the Docker runtime needs,
// over the daemon's unix socket with UnixHttpClient (workers/unix_http.h),
// JSON with nlohmann-json.
//
// Called by DockerRuntime (workers/docker_runtime.h) and by tests. Every
// call opens its own connection, so one client may be used from many
// threads at once; the negotiated API version is the only shared state and
// is guarded by a mutex. No exception escapes: each call returns a Status
// or a Result.
//
// Errors: the daemon cannot be reached (no socket, connection refused, the
// connection dropped, no answer in time, an answer that is not HTTP) ->
// Unavailable("Docker daemon not reachable at PATH: ..."); the daemon
// answered with an HTTP error -> its `message` field, with 400
// InvalidArgument, 401/403 PermissionDenied, 404 NotFound, 409
// FailedPrecondition, anything else IOError; a call cancelled through its
// CancelFn -> Timeout("... cancelled"); a path that cannot be sent as HTTP
// (a space or a newline in an image name) -> InvalidArgument.
#ifndef DROVER_WORKERS_DOCKER_CLIENT_H_
#define DROVER_WORKERS_DOCKER_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "drover/status.h"

namespace drover {

// The highest Engine API version this client speaks (Docker 20.10).
inline constexpr std::string_view kDockerMaxApiVersion = "1.41";

// Sent as X-Registry-Auth on pulls (base64url of the JSON below).
struct RegistryCredentials {
  std::string username;
  std::string password;
  // e.g. "registry.example.com:5000"; empty: send for every registry.
  std::string server_address;
};

// Polled (about once a second, and on every chunk of data) while a long
// call runs; returning true aborts the call.
using CancelFn = std::function<bool()>;
// Receives one chunk of a stream (a log frame's payload, a pull line).
using ChunkFn = std::function<void(std::string_view)>;

struct VolumeMount {
  std::string volume;  // a named volume
  std::string target;  // absolute path in the container
};

// A path of the daemon's host mounted into the container. Sent as a
// HostConfig.Mounts entry of type bind (not HostConfig.Binds), so a source
// the daemon does not have is an error (InvalidArgument naming the path)
// rather than an empty directory made on its side.
struct BindMount {
  std::string source;  // absolute path on the daemon's host
  std::string target;  // absolute path in the container
  bool read_only = false;
};

struct ContainerConfig {
  std::string name;  // empty: the daemon picks one
  std::string image;
  std::vector<std::string> cmd;
  // nullopt: the image's entrypoint; an empty vector: none at all.
  std::optional<std::vector<std::string>> entrypoint;
  std::vector<std::string> env;  // KEY=VALUE
  std::string workdir;
  std::string user;
  std::map<std::string, std::string> labels;
  std::string network_mode = "none";
  int64_t memory_bytes = 0;  // 0: no limit; swap is capped at the same value
  int64_t nano_cpus = 0;     // 0: no limit
  int64_t pids_limit = 0;    // 0: no limit
  bool init = false;         // run the daemon's init (docker-init) as PID 1
  // With `drop_caps`, HostConfig.CapDrop = ALL and CapAdd = `caps`; else
  // the daemon's defaults. Never privileged, no devices either way.
  bool drop_caps = false;
  std::vector<std::string> caps;
  bool no_new_privileges = false;  // SecurityOpt no-new-privileges
  // The json-file log driver, capped at this size (one file); 0: the
  // daemon's default driver.
  int64_t log_max_bytes = 0;
  std::vector<VolumeMount> mounts;
  std::vector<BindMount> binds;
};

struct ContainerState {
  std::string status;  // "created", "running", "exited", ...
  bool running = false;
  bool oom_killed = false;
  int64_t exit_code = -1;
  std::string error;  // State.Error, e.g. why it could not start
};

// A container or a volume as listed, with its labels.
struct DockerObject {
  std::string id;  // container id, or volume name
  std::string name;
  std::map<std::string, std::string> labels;
};

// Splits Docker's multiplexed stream (non-TTY logs and attach): frames of an
// 8-byte header — stream type (0 stdin, 1 stdout, 2 stderr, 3 system
// error), three zero bytes, 4-byte big-endian payload length — then the
// payload. Feed accepts arbitrary pieces: a header or payload split across
// calls is reassembled. Payloads are passed on as they arrive (a large frame
// may be delivered in several pieces), never copied whole.
class StreamDemuxer {
 public:
  // on_system receives type-3 frames (the daemon's own errors).
  StreamDemuxer(ChunkFn on_stdout, ChunkFn on_stderr, ChunkFn on_system = {});
  void Feed(std::string_view data);
  // Whether the stream ended between frames (else it was cut off).
  bool AtFrameBoundary() const { return header_len_ == 0 && remaining_ == 0; }

 private:
  ChunkFn on_stdout_;
  ChunkFn on_stderr_;
  ChunkFn on_system_;
  unsigned char header_[8] = {};
  size_t header_len_ = 0;
  uint32_t remaining_ = 0;  // payload bytes of the current frame still due
  unsigned char type_ = 0;
};

// Reads the first regular file out of a tar stream (what GET
// /containers/{id}/archive returns for a file): 512-byte headers, octal (or
// base-256) sizes; PAX and GNU long-name entries are skipped. Keeps at most
// `max_bytes` of the contents; `truncated` says whether there were more.
class TarFileReader {
 public:
  explicit TarFileReader(size_t max_bytes) : max_bytes_(max_bytes) {}
  // Returns false once the file has been read (or max_bytes reached), so a
  // caller may stop the transfer.
  bool Feed(std::string_view data);
  bool found() const { return found_; }
  bool complete() const { return done_; }
  bool truncated() const { return truncated_; }
  const std::string& contents() const { return contents_; }
  // Set when the stream is not a tar archive.
  const std::string& error() const { return error_; }

 private:
  size_t max_bytes_;
  std::string header_;       // the header block being assembled
  uint64_t entry_left_ = 0;  // bytes of the current entry still due
  bool in_file_ = false;     // the current entry is the file we want
  bool found_ = false;
  bool done_ = false;
  bool truncated_ = false;
  std::string contents_;
  std::string error_;
};

// A one-file tar archive holding `dir/` (mode dir_mode) and `dir/file`
// (mode file_mode, the given contents), owned by root — for PUT archive.
std::string MakeTarWithFile(std::string_view dir, uint32_t dir_mode,
                            std::string_view file, uint32_t file_mode,
                            std::string_view contents);

class DockerClient {
 public:
  explicit DockerClient(std::string socket_path);

  const std::string& socket_path() const { return socket_path_; }

  // GET /_ping: whether the daemon answers.
  Status Ping();
  // The API version in use: min(kDockerMaxApiVersion, the daemon's), found
  // once with GET /version and kept until a call fails to connect.
  Result<std::string> ApiVersion();

  // Whether `image` is present locally.
  Result<bool> ImageExists(const std::string& image);
  // POST /images/create: pulls `image` (tag "latest" unless given). Each
  // progress line of the stream goes to `progress` as JSON text; an error
  // reported inside the stream (HTTP 200) is returned as an error.
  Status ImagePull(const std::string& image,
                   const std::optional<RegistryCredentials>& credentials,
                   const ChunkFn& progress, const CancelFn& cancel);
  Status ImageRemove(const std::string& image);

  // Returns the new container's id.
  Result<std::string> ContainerCreate(const ContainerConfig& config);
  Status ContainerStart(const std::string& id);
  // Follows the container's stdout and stderr until it stops (or `cancel`).
  Status ContainerLogs(const std::string& id, const ChunkFn& on_stdout,
                       const ChunkFn& on_stderr, const CancelFn& cancel);
  // Blocks until the container is not running; returns its exit code.
  Result<int64_t> ContainerWait(const std::string& id, const CancelFn& cancel);
  Result<ContainerState> ContainerInspect(const std::string& id);
  // Sends `signal` (e.g. "SIGTERM"); a container that is not running is OK.
  Status ContainerKill(const std::string& id, std::string_view signal);
  // SIGTERM (or the image's stop signal), SIGKILL after `grace_seconds`.
  Status ContainerStop(const std::string& id, int grace_seconds);
  // Force-removes the container and its anonymous volumes; a container that
  // is already gone is OK.
  Status ContainerRemove(const std::string& id);
  // Every container (running or not) carrying the label "KEY=VALUE" (or
  // just "KEY").
  Result<std::vector<DockerObject>> ContainerList(std::string_view label);

  Status VolumeCreate(const std::string& name,
                      const std::map<std::string, std::string>& labels);
  // A volume that is already gone is OK.
  Status VolumeRemove(const std::string& name);
  Result<std::vector<DockerObject>> VolumeList(std::string_view label);

  // PUT /containers/{id}/archive?path=: extracts `tar` under `path`.
  Status PutArchive(const std::string& id, const std::string& path,
                    std::string tar);
  // GET /containers/{id}/archive?path=: the contents of one regular file,
  // at most max_bytes of it. NotFound when the file does not exist.
  Result<std::string> ReadFile(const std::string& id, const std::string& path,
                               size_t max_bytes);

 private:
  struct Request;
  struct Response {
    long http_status = 0;
    std::string body;
  };
  // Performs one request. `sink`, when set, receives the body as it
  // arrives instead of Response::body and may return false to stop the
  // transfer (reported as success).
  Result<Response> Perform(Request& request);
  Result<Response> Call(std::string method, std::string path,
                        std::string body = {}, bool versioned = true);
  // Call, then parse the answer as JSON.
  Result<nlohmann::json> CallJson(std::string method, std::string path,
                                  std::string body = {}, bool versioned = true);
  Status Unreachable(std::string_view why) const;
  // The request target: `path`, under /vX.Y/ when versioned.
  std::string Target(std::string_view path, bool versioned);

  std::string socket_path_;
  std::mutex mu_;
  std::string api_version_;  // guarded by mu_; empty until negotiated
};

// Splits "repo[:tag][@digest]" into what POST /images/create wants:
// fromImage and tag ("latest" when absent; the digest when given).
std::pair<std::string, std::string> SplitImageReference(std::string_view image);

}  // namespace drover

#endif  // DROVER_WORKERS_DOCKER_CLIENT_H_
