// Client: one request/reply conversation with droverd's client API, used
// by the `drover` CLI and the tests. See docs/PROTOCOL.md.
//
// Thread-compatible: one Client per thread.
#ifndef DROVER_CLIENT_H_
#define DROVER_CLIENT_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "drover/keys.h"
#include "drover/protocol.h"
#include "drover/socket_monitor.h"
#include "drover/status.h"

namespace drover {

class Client {
 public:
  // `endpoint` is the scheduler's --api; `timeout` bounds each call.
  // With `keys`, the connection is CURVE-encrypted and pins the scheduler's
  // key.
  explicit Client(std::string endpoint,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10),
                  std::optional<ClientKeys> keys = std::nullopt);
  ~Client();

  // Sends `request` (its id is set here) and waits for the reply of type
  // Reply. Errors: Timeout/Unavailable when the scheduler does not answer;
  // PermissionDenied ("authentication refused: ...") as soon as the
  // connection's handshake fails (a key the scheduler does not allow, keys
  // on one side only, another scheduler key); the scheduler's own error
  // (its code and message) otherwise, with its detail lines in
  // last_details().
  template <typename Reply, typename Request>
  Result<Reply> Call(Request request) {
    request.id = ++next_id_;
    auto frame = Exchange(Encode(request), request.id);
    if (!frame.ok()) return frame.status();
    if (frame->type() != Reply::kType) {
      return Status::Internal("unexpected reply '" + frame->type() + "'");
    }
    return frame->template As<Reply>();
  }

  const std::vector<std::string>& last_details() const { return details_; }

 private:
  Result<Frame> Exchange(const std::string& body, uint64_t id);
  void Reconnect();

  // A failed handshake reported by the monitor, as the error to return.
  std::optional<Status> HandshakeFailure();

  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  std::optional<ClientKeys> keys_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::unique_ptr<SocketMonitor> monitor_;  // of socket_
  uint64_t next_id_ = 0;
  std::vector<std::string> details_;
};

// The Code named by an error reply's "code" ("NotFound", …).
Code CodeFromName(std::string_view name);

}  // namespace drover

#endif  // DROVER_CLIENT_H_
