#include "drover/protocol.h"

#include <algorithm>
#include <memory>

namespace drover {
namespace {

struct Envelope {
  uint32_t v = 0;
  std::string type;
  uint64_t id = 0;
  DROVER_DEFINE_MAP(v, type, id);
};

// Allocation limits for one frame: a hostile peer cannot make us allocate
// more than a small multiple of the frame size.
msgpack::unpack_limit FrameLimits() {
  return msgpack::unpack_limit(/*array=*/1 << 20, /*map=*/1 << 16,
                               /*str=*/kMaxFrameBytes, /*bin=*/kMaxFrameBytes,
                               /*ext=*/1024, /*depth=*/32);
}

}  // namespace

Result<Frame> Frame::Parse(std::string_view bytes) {
  if (bytes.size() > kMaxFrameBytes) {
    return Status::InvalidArgument("frame of " + std::to_string(bytes.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxFrameBytes));
  }
  if (bytes.empty()) return Status::InvalidArgument("empty frame");
  Frame frame;
  try {
    // A zone sized for the message: msgpack-c's default first chunk is
    // 8 KiB, too large for malloc's per-thread cache, and most messages
    // (a result, an ack) are a hundred or two bytes. A message that needs
    // more gets more chunks.
    auto zone = std::make_unique<msgpack::zone>(
        std::min<size_t>(8192, 4 * bytes.size() + 256));
    size_t offset = 0;
    msgpack::object root = msgpack::unpack(*zone, bytes.data(), bytes.size(),
                                           offset, nullptr, nullptr,
                                           FrameLimits());
    auto handle =
        std::make_shared<msgpack::object_handle>(root, std::move(zone));
    if (handle->get().type != msgpack::type::MAP) {
      return Status::InvalidArgument("message is not a msgpack map");
    }
    Envelope env;
    handle->get().convert(env);
    if (env.type.empty()) {
      return Status::InvalidArgument("message has no \"type\"");
    }
    if (env.v != kProtocolVersion) {
      return Status::InvalidArgument(
          "protocol version " + std::to_string(env.v) +
          " is not supported (this side speaks " +
          std::to_string(kProtocolVersion) + ")");
    }
    frame.handle_ = std::move(handle);
    frame.type_ = std::move(env.type);
    frame.id_ = env.id;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("undecodable message: ") +
                                   e.what());
  }
  return frame;
}

WireTask ToWire(const TaskRun& run) {
  WireTask w;
  w.task_name = run.task_name;
  w.image = run.image;
  w.run = run.run;
  w.cmd = run.cmd;
  w.entrypoint = run.entrypoint;
  w.env = run.env;
  w.workdir = run.workdir;
  w.user = run.user;
  w.volumes = run.volumes;
  w.network = run.network;
  w.timeout_ms = static_cast<uint64_t>(run.timeout.count());
  w.cpus = run.cpus;
  w.memory_bytes = run.memory_bytes;
  w.pids = run.pids;
  w.cap_add = run.cap_add;
  for (const auto& p : run.pre) w.pre.push_back(ToWire(p));
  for (const auto& p : run.post) w.post.push_back(ToWire(p));
  return w;
}

TaskRun FromWire(const WireTask& w) {
  TaskRun r;
  r.task_name = w.task_name;
  r.image = w.image;
  r.run = w.run;
  r.cmd = w.cmd;
  r.entrypoint = w.entrypoint;
  r.env = w.env;
  r.workdir = w.workdir;
  r.user = w.user;
  r.volumes = w.volumes;
  r.network = w.network;
  r.timeout = std::chrono::milliseconds(w.timeout_ms);
  r.cpus = w.cpus;
  r.memory_bytes = w.memory_bytes;
  r.pids = w.pids;
  r.cap_add = w.cap_add;
  for (const auto& p : w.pre) r.pre.push_back(FromWire(p));
  for (const auto& p : w.post) r.post.push_back(FromWire(p));
  return r;
}

}  // namespace drover
