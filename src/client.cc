#include "drover/client.h"

namespace drover {

Code CodeFromName(std::string_view name) {
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c) {
    if (CodeName(static_cast<Code>(c)) == name) return static_cast<Code>(c);
  }
  return Code::kInternal;
}

Client::Client(std::string endpoint, std::chrono::milliseconds timeout,
               std::optional<ClientKeys> keys)
    : endpoint_(std::move(endpoint)),
      timeout_(timeout),
      keys_(std::move(keys)),
      ctx_(1) {
  Reconnect();
}

Client::~Client() = default;

void Client::Reconnect() {
  monitor_.reset();  // before the socket it watches
  socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  // Queue nothing for a scheduler that is not there yet: a request sent
  // while it is down fails by timeout instead of arriving much later.
  socket_->set(zmq::sockopt::immediate, 1);
  if (keys_) UseClientKeys(*socket_, *keys_);
  monitor_ = std::make_unique<SocketMonitor>(
      ctx_, *socket_,
      ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
          ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
  socket_->connect(endpoint_);
}

std::optional<Status> Client::HandshakeFailure() {
  while (auto e = monitor_->Next()) {
    if (e->handshake_failed()) {
      return Status::PermissionDenied("authentication refused: " +
                                      SocketMonitor::Describe(*e, keys_.has_value()) + " (" +
                                      endpoint_ + ")");
    }
  }
  return std::nullopt;
}

Result<Frame> Client::Exchange(const std::string& body, uint64_t id) {
  details_.clear();
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  try {
    // A refused handshake shows on the monitor: the request is never sent
    // (nothing is queued before a connection is made), so say so at once.
    auto refused = [&]() -> std::optional<Status> {
      std::optional<Status> failure = HandshakeFailure();
      if (failure) Reconnect();
      return failure;
    };
    bool sent = false;
    while (!sent) {
      zmq_pollitem_t out[] = {{socket_->handle(), 0, ZMQ_POLLOUT, 0},
                              {monitor_->events().handle(), 0, ZMQ_POLLIN, 0}};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq_poll(out, 2, std::min<long>(left.count(), 100));
      if (out[1].revents & ZMQ_POLLIN) {
        if (auto failure = refused()) return *failure;
      }
      if (out[0].revents & ZMQ_POLLOUT) {
        sent = socket_->send(zmq::buffer(body), zmq::send_flags::dontwait)
                   .has_value();
      }
    }
    if (!sent) {
      Reconnect();
      return Status::Unavailable("the scheduler at " + endpoint_ +
                                 " cannot be reached");
    }
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq_pollitem_t in[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                             {monitor_->events().handle(), 0, ZMQ_POLLIN, 0}};
      zmq_poll(in, 2, left.count());
      if (in[1].revents & ZMQ_POLLIN) {
        if (auto failure = refused()) return *failure;
      }
      if (!(in[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t msg;
      if (!socket_->recv(msg, zmq::recv_flags::dontwait)) continue;
      auto frame = Frame::Parse(msg.to_string());
      if (!frame.ok()) return frame.status();
      if (frame->id() != id && frame->id() != 0) continue;  // a stale reply
      if (frame->type() == ErrorReply::kType) {
        auto e = frame->As<ErrorReply>();
        if (!e.ok()) return e.status();
        details_ = e->details;
        return Status(CodeFromName(e->code), e->message);
      }
      return frame;
    }
  } catch (const zmq::error_t& e) {
    Reconnect();
    return Status::Unavailable("the scheduler at " + endpoint_ + ": " +
                               e.what());
  }
  Reconnect();  // drop the unanswered request
  return Status::Timeout("the scheduler at " + endpoint_ +
                         " did not answer within " +
                         std::to_string(timeout_.count()) + " ms");
}

}  // namespace drover
