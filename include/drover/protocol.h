// The wire protocol: msgpack messages over ZeroMQ between the client, the
// scheduler and the workers. Each message type is declared once here; its
// field list serves both encoding and decoding. docs/PROTOCOL.md is the
// reference for implementers in other languages.
//
// Every message is one ZeroMQ frame holding a msgpack map with at least
// "v" (kProtocolVersion) and "type"; unknown keys are ignored and missing
// ones take their defaults, so fields can be added without a version bump.
//
// Thread-safety: pure functions and plain structs.
#ifndef DROVER_PROTOCOL_H_
#define DROVER_PROTOCOL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

// How every message below declares its fields: MSGPACK_DEFINE_MAP's
// encoder, with a faster decoder. msgpack-c's own decoder builds a
// std::map (a std::string per key) of every map it converts into a
// struct, nested ones included, which made decoding most of what a
// message cost droverd. This one finds each field by a scan of the map's
// (few) pairs, with the same rules: every key must be a str (else
// msgpack::type_error), the first of duplicate keys counts, a missing
// field keeps its default, and each value converts as msgpack's decoder
// converts it.
#define DROVER_DEFINE_MAP(...)                                              \
  template <typename Packer>                                                \
  void msgpack_pack(Packer& msgpack_pk) const {                             \
    msgpack::type::make_define_map MSGPACK_DEFINE_MAP_IMPL(__VA_ARGS__)     \
        .msgpack_pack(msgpack_pk);                                          \
  }                                                                         \
  void msgpack_unpack(msgpack::object const& msgpack_o) {                   \
    ::drover::wire_internal::MakeFieldMap MSGPACK_DEFINE_MAP_IMPL(         \
        __VA_ARGS__)                                                        \
        .Unpack(msgpack_o);                                                 \
  }                                                                         \
  template <typename MSGPACK_OBJECT>                                        \
  void msgpack_object(MSGPACK_OBJECT* msgpack_o, msgpack::zone& msgpack_z)  \
      const {                                                               \
    msgpack::type::make_define_map MSGPACK_DEFINE_MAP_IMPL(__VA_ARGS__)     \
        .msgpack_object(msgpack_o, msgpack_z);                              \
  }

namespace wire_internal {

template <typename... Args>
class FieldMap {
 public:
  explicit FieldMap(Args&... args) : fields_(args...) {}
  void Unpack(const msgpack::object& o) const {
    if (o.type != msgpack::type::MAP) throw msgpack::type_error();
    const msgpack::object_kv* kv = o.via.map.ptr;
    const uint32_t n = o.via.map.size;
    for (uint32_t i = 0; i < n; ++i) {
      if (kv[i].key.type != msgpack::type::STR) throw msgpack::type_error();
    }
    std::apply([&](auto&... f) { Fields(kv, n, f...); }, fields_);
  }

 private:
  template <typename Name, typename T, typename... Rest>
  static void Fields(const msgpack::object_kv* kv, uint32_t n,
                     const Name& name, T& field, Rest&... rest) {
    const std::string_view want(name);
    for (uint32_t i = 0; i < n; ++i) {
      if (std::string_view(kv[i].key.via.str.ptr, kv[i].key.via.str.size) ==
          want) {
        msgpack::v1::type::convert_helper(kv[i].val, field);
        break;
      }
    }
    if constexpr (sizeof...(Rest) > 0) Fields(kv, n, rest...);
  }

  std::tuple<Args&...> fields_;
};

template <typename... Args>
FieldMap<Args...> MakeFieldMap(Args&... args) {
  return FieldMap<Args...>(args...);
}

}  // namespace wire_internal

inline constexpr uint32_t kProtocolVersion = 1;
// Frames larger than this are refused before they are decoded.
inline constexpr size_t kMaxFrameBytes = 4 << 20;
// A job file sent with `submit` may be at most this large.
inline constexpr size_t kMaxJobFileBytes = 1 << 20;

// ---------------------------------------------------------------- client API
// DEALER (or REQ) -> the scheduler's ROUTER at --api. Every request has an
// "id" chosen by the client, echoed in the reply.

struct SubmitRequest {
  static constexpr std::string_view kType = "submit";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string source;     // the job file's TOML text
  std::string file_name;  // for error messages
  std::map<std::string, std::string> inputs;  // --input overrides
  DROVER_DEFINE_MAP(v, type, id, source, file_name, inputs);
};

struct SubmitReply {
  static constexpr std::string_view kType = "submitted";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string job_id;
  DROVER_DEFINE_MAP(v, type, id, job_id);
};

// One task as `drover status` shows it.
struct TaskView {
  std::string name;
  std::string state;
  uint32_t attempts = 0;
  std::optional<std::string> worker;
  std::optional<int32_t> exit_code;
  std::optional<std::string> output;
  std::optional<std::string> error;
  std::optional<std::string> started_at;   // RFC 3339
  std::optional<std::string> finished_at;
  std::vector<std::string> errors;  // every attempt's error, oldest first
  DROVER_DEFINE_MAP(name, state, attempts, worker, exit_code, output, error,
                    started_at, finished_at, errors);
};

struct JobView {
  std::string id;
  std::string name;
  std::string state;
  std::optional<std::string> created_at;
  std::optional<std::string> started_at;
  std::optional<std::string> finished_at;
  std::optional<std::string> error;
  std::map<std::string, std::string> inputs;
  std::vector<TaskView> tasks;  // empty in list replies
  DROVER_DEFINE_MAP(id, name, state, created_at, started_at, finished_at,
                    error, inputs, tasks);
};

struct StatusRequest {
  static constexpr std::string_view kType = "status";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string job_id;
  DROVER_DEFINE_MAP(v, type, id, job_id);
};

struct StatusReply {
  static constexpr std::string_view kType = "job";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  JobView job;
  DROVER_DEFINE_MAP(v, type, id, job);
};

struct ListRequest {
  static constexpr std::string_view kType = "list";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string state;     // "" for all
  uint32_t limit = 100;
  DROVER_DEFINE_MAP(v, type, id, state, limit);
};

struct ListReply {
  static constexpr std::string_view kType = "jobs";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::vector<JobView> jobs;
  DROVER_DEFINE_MAP(v, type, id, jobs);
};

struct LogsRequest {
  static constexpr std::string_view kType = "logs";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string job_id;
  std::string task;    // "" for every task
  uint64_t after = 0;  // only chunks with a greater seq
  DROVER_DEFINE_MAP(v, type, id, job_id, task, after);
};

struct LogLine {
  std::string task;
  uint32_t attempt = 0;
  std::string stream;  // "stdout", "stderr" or "drover"
  std::string data;
  uint64_t seq = 0;
  DROVER_DEFINE_MAP(task, attempt, stream, data, seq);
};

struct LogsReply {
  static constexpr std::string_view kType = "log";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::vector<LogLine> chunks;
  uint64_t last = 0;          // the cursor for the next request's "after"
  bool job_finished = false;  // no more output will come
  DROVER_DEFINE_MAP(v, type, id, chunks, last, job_finished);
};

struct CancelRequest {
  static constexpr std::string_view kType = "cancel";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string job_id;
  DROVER_DEFINE_MAP(v, type, id, job_id);
};

struct WorkerView {
  std::string name;
  std::string state;  // "ready", "degraded", "draining", "dead", "gone"
  std::map<std::string, uint32_t> queues;
  std::vector<std::string> runtimes;
  uint32_t running = 0;  // attempts running on it
  uint32_t held = 0;     // assigned beyond its slots, waiting for one
  std::optional<std::string> last_heartbeat;
  DROVER_DEFINE_MAP(name, state, queues, runtimes, running, held,
                    last_heartbeat);
};

struct WorkersRequest {
  static constexpr std::string_view kType = "workers";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  DROVER_DEFINE_MAP(v, type, id);
};

struct WorkersReply {
  static constexpr std::string_view kType = "workers_list";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::vector<WorkerView> workers;
  DROVER_DEFINE_MAP(v, type, id, workers);
};

// The reply to any request that failed, and what a daemon answers to a
// frame it cannot decode (then with id 0).
struct ErrorReply {
  static constexpr std::string_view kType = "error";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  uint64_t id = 0;
  std::string code;     // a Code name, e.g. "InvalidArgument", "NotFound"
  std::string message;
  std::vector<std::string> details;  // e.g. one line per validation error
  DROVER_DEFINE_MAP(v, type, id, code, message, details);
};

// ------------------------------------------------------------ worker channel
// The worker's DEALER (routing id = its name) -> the scheduler's ROUTER at
// --tasks.

// A task attempt, named.
struct AttemptRef {
  std::string job_id;
  uint32_t task = 0;  // index in the job file
  uint32_t attempt = 0;
  DROVER_DEFINE_MAP(job_id, task, attempt);
  bool operator<(const AttemptRef& o) const {
    return std::tie(job_id, task, attempt) <
           std::tie(o.job_id, o.task, o.attempt);
  }
  bool operator==(const AttemptRef& o) const = default;
};

// Resource limits of a container; 0: none.
struct WireLimits {
  double cpus = 0;
  int64_t memory_bytes = 0;
  int64_t pids = 0;
  DROVER_DEFINE_MAP(cpus, memory_bytes, pids);
  bool operator==(const WireLimits&) const = default;
};

// What a worker lets its Docker tasks ask for (docs/SECURITY.md): its
// config keys of the same names. Sent in its hello, so that droverd
// dispatches to it only what it allows; checks are in drover/policy.h.
struct ContainerPolicy {
  std::vector<std::string> allowed_images{"*"};  // glob patterns
  std::vector<std::string> allowed_networks{"none", "bridge"};
  bool allow_root = true;  // false: root or no user runs as 65534:65534
  WireLimits default_limits{0, int64_t{1} << 30, 1024};
  WireLimits max_limits;   // 0s: no bound
  std::vector<std::string> cap_add_allowed;  // as NET_ADMIN
  int64_t max_log_bytes = 16 << 20;          // per attempt
  DROVER_DEFINE_MAP(allowed_images, allowed_networks, allow_root,
                    default_limits, max_limits, cap_add_allowed,
                    max_log_bytes);
};

struct Hello {
  static constexpr std::string_view kType = "hello";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  std::string name;
  std::string instance;  // random per worker process start
  std::map<std::string, uint32_t> queues;  // queue -> slots
  std::vector<std::string> runtimes;
  std::vector<AttemptRef> running;  // attempts still running here
  // queue -> attempts taken beyond its slots, held until one frees
  std::map<std::string, uint32_t> prefetch;
  // What it lets Docker tasks ask for; absent: droverd assumes anything.
  std::optional<ContainerPolicy> policy;
  DROVER_DEFINE_MAP(v, type, name, instance, queues, runtimes, running,
                    prefetch, policy);
};

struct Welcome {
  static constexpr std::string_view kType = "welcome";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  std::string scheduler;  // the scheduler's instance id
  uint32_t heartbeat_interval_ms = 1000;
  std::vector<AttemptRef> abandon;  // attempts in `running` to stop at once
  DROVER_DEFINE_MAP(v, type, scheduler, heartbeat_interval_ms, abandon);
};

// The scheduler does not know this worker (it restarted, or declared the
// worker dead): the worker must say hello again.
struct Announce {
  static constexpr std::string_view kType = "announce";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  DROVER_DEFINE_MAP(v, type);
};

// A task resolved for one attempt. Pre/post tasks travel inside `task`.
struct WireTask {
  std::string task_name;
  std::string image;
  std::string run;
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::map<std::string, std::string> env;
  std::string workdir;
  std::string user;
  std::vector<std::string> volumes;
  std::string network = "none";
  uint64_t timeout_ms = 0;
  double cpus = 0;
  int64_t memory_bytes = 0;
  int64_t pids = 0;
  std::vector<std::string> cap_add;
  std::vector<WireTask> pre;
  std::vector<WireTask> post;
  DROVER_DEFINE_MAP(task_name, image, run, cmd, entrypoint, env, workdir,
                    user, volumes, network, timeout_ms, cpus, memory_bytes,
                    pids, cap_add, pre, post);
};

struct Assign {
  static constexpr std::string_view kType = "assign";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  std::string queue;
  std::string runtime;  // "docker" or "shell"
  WireTask task;
  std::vector<std::string> redact;  // secret values to mask in logs/output
  DROVER_DEFINE_MAP(v, type, ref, queue, runtime, task, redact);
};

struct Started {
  static constexpr std::string_view kType = "started";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  int64_t at_ms = 0;
  DROVER_DEFINE_MAP(v, type, ref, at_ms);
};

struct LogData {
  static constexpr std::string_view kType = "logdata";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  std::string stream;  // "o", "e" or "s"
  std::string data;
  DROVER_DEFINE_MAP(v, type, ref, stream, data);
};

struct TaskResult {
  static constexpr std::string_view kType = "result";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  int32_t exit_code = -1;
  std::string output;
  std::string error;
  bool timed_out = false;
  bool cancelled = false;
  bool infrastructure = false;
  int64_t started_at_ms = 0;
  int64_t finished_at_ms = 0;
  DROVER_DEFINE_MAP(v, type, ref, exit_code, output, error, timed_out,
                    cancelled, infrastructure, started_at_ms, finished_at_ms);
};

// The scheduler has durably recorded (or discarded) a result.
struct ResultAck {
  static constexpr std::string_view kType = "ack";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  DROVER_DEFINE_MAP(v, type, ref);
};

// Stop an attempt (cancel, or it was given up on).
struct Stop {
  static constexpr std::string_view kType = "stop";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  std::string reason;
  DROVER_DEFINE_MAP(v, type, ref, reason);
};

// The worker could not take an assignment (no slot, no runtime, draining).
struct Reject {
  static constexpr std::string_view kType = "reject";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  AttemptRef ref;
  std::string reason;
  DROVER_DEFINE_MAP(v, type, ref, reason);
};

// The worker is leaving; `returned` are attempts it gives back unfinished.
struct Goodbye {
  static constexpr std::string_view kType = "goodbye";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  std::vector<AttemptRef> returned;
  DROVER_DEFINE_MAP(v, type, returned);
};

// --------------------------------------------------------- heartbeat channel
// The scheduler binds an XPUB socket at --heartbeat; each worker connects an
// XSUB socket, subscribes to everything (a frame holding the byte 0x01), and
// sends its heartbeats upstream on the same socket. The scheduler publishes
// its own heartbeat to every worker.

struct WorkerHeartbeat {
  static constexpr std::string_view kType = "heartbeat";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  std::string name;
  std::string instance;
  std::string state;  // "ready", "degraded", "draining"
  uint32_t running = 0;
  int64_t at_ms = 0;
  // Attempts this worker holds: running, or finished with the result not
  // yet acknowledged. The scheduler requeues an attempt it assigned here
  // that is missing from this list (the assignment was lost on the way).
  std::vector<AttemptRef> attempts;
  DROVER_DEFINE_MAP(v, type, name, instance, state, running, at_ms,
                    attempts);
};

struct SchedulerHeartbeat {
  static constexpr std::string_view kType = "scheduler";
  uint32_t v = kProtocolVersion;
  std::string type{kType};
  std::string instance;  // changes when the scheduler restarts
  int64_t at_ms = 0;
  DROVER_DEFINE_MAP(v, type, instance, at_ms);
};

// ------------------------------------------------------------------- codec

namespace wire_internal {
// A msgpack output buffer that appends to a std::string, so encoding a
// message costs neither sbuffer's 8 KiB allocation nor a copy out of it.
struct StringSink {
  std::string* out;
  void write(const char* data, size_t size) { out->append(data, size); }
};
}  // namespace wire_internal

// Serialises a message.
template <typename M>
std::string Encode(const M& message) {
  std::string out;
  out.reserve(256);
  wire_internal::StringSink sink{&out};
  msgpack::pack(sink, message);
  return out;
}

// A decoded frame: its type, and the object to convert into the struct.
class Frame {
 public:
  // Checks size, unpacks with allocation limits, reads "v" and "type".
  // InvalidArgument when the frame is too large, not msgpack, not a map,
  // lacks a type or speaks another protocol version.
  static Result<Frame> Parse(std::string_view bytes);

  const std::string& type() const { return type_; }
  uint64_t id() const { return id_; }  // request id, 0 when absent

  // Converts into M; InvalidArgument naming the type when a field has the
  // wrong type.
  template <typename M>
  Result<M> As() const {
    try {
      M m;
      handle_->get().convert(m);
      return m;
    } catch (const std::exception& e) {
      return Status::InvalidArgument("malformed '" + type_ +
                                     "' message: " + e.what());
    }
  }

 private:
  std::shared_ptr<msgpack::object_handle> handle_;
  std::string type_;
  uint64_t id_ = 0;
};

WireTask ToWire(const TaskRun& run);
TaskRun FromWire(const WireTask& wire);

}  // namespace drover

#endif  // DROVER_PROTOCOL_H_
