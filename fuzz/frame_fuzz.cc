// Fuzz target: every frame a peer can send. Frame::Parse must refuse or
// accept without crashing, and every message type must convert or refuse.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "drover/protocol.h"

namespace {

template <typename M>
void Try(const drover::Frame& f) {
  auto m = f.As<M>();
  if (m.ok()) (void)drover::Encode(*m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto frame = drover::Frame::Parse(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!frame.ok()) return 0;
  using namespace drover;  // NOLINT
  Try<SubmitRequest>(*frame);
  Try<StatusRequest>(*frame);
  Try<StatusReply>(*frame);
  Try<ListRequest>(*frame);
  Try<ListReply>(*frame);
  Try<LogsRequest>(*frame);
  Try<LogsReply>(*frame);
  Try<CancelRequest>(*frame);
  Try<WorkersReply>(*frame);
  Try<ErrorReply>(*frame);
  Try<Hello>(*frame);
  Try<Welcome>(*frame);
  Try<Assign>(*frame);
  Try<Started>(*frame);
  Try<LogData>(*frame);
  Try<TaskResult>(*frame);
  Try<ResultAck>(*frame);
  Try<Stop>(*frame);
  Try<Reject>(*frame);
  Try<Goodbye>(*frame);
  Try<WorkerHeartbeat>(*frame);
  Try<SchedulerHeartbeat>(*frame);
  return 0;
}
