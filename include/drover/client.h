// Client: one request/reply conversation with droverd's client API, used
// by the `drover` CLI and the tests. See docs/PROTOCOL.md.
//
// Thread-compatible: one Client per thread.
#ifndef DROVER_CLIENT_H_
#define DROVER_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "drover/protocol.h"
#include "drover/status.h"

namespace drover {

class Client {
 public:
  // `endpoint` is the scheduler's --api; `timeout` bounds each call.
  explicit Client(std::string endpoint,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~Client();

  // Sends `request` (its id is set here) and waits for the reply of type
  // Reply. Errors: Timeout/Unavailable when the scheduler does not answer;
  // the scheduler's own error (its code and message) otherwise, with its
  // detail lines in last_details().
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

  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> socket_;
  uint64_t next_id_ = 0;
  std::vector<std::string> details_;
};

// The Code named by an error reply's "code" ("NotFound", …).
Code CodeFromName(std::string_view name);

}  // namespace drover

#endif  // DROVER_CLIENT_H_
