#include "drover/socket_monitor.h"

#include <atomic>
#include <cstring>

namespace drover {
namespace {

std::string MonitorEndpoint() {
  static std::atomic<uint64_t> next{0};
  return "inproc://drover-monitor-" + std::to_string(next++);
}

}  // namespace

bool SocketMonitor::Event::handshake_failed() const {
  return event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
         event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
         event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
}

SocketMonitor::SocketMonitor(zmq::context_t& ctx, zmq::socket_t& socket,
                             int mask)
    : socket_(socket), pair_(ctx, zmq::socket_type::pair) {
  const std::string endpoint = MonitorEndpoint();
  if (zmq_socket_monitor(socket_.handle(), endpoint.c_str(), mask) != 0) {
    throw zmq::error_t();
  }
  pair_.set(zmq::sockopt::linger, 0);
  pair_.connect(endpoint);
}

SocketMonitor::~SocketMonitor() {
  zmq_socket_monitor(socket_.handle(), nullptr, 0);
}

std::optional<SocketMonitor::Event> SocketMonitor::Next() {
  try {
    // Two frames: 6 bytes (uint16 event, uint32 value, host order), then
    // the endpoint.
    zmq::message_t head;
    if (!pair_.recv(head, zmq::recv_flags::dontwait)) return std::nullopt;
    Event e;
    if (head.size() >= 6) {
      std::memcpy(&e.event, head.data(), 2);
      std::memcpy(&e.value, static_cast<const char*>(head.data()) + 2, 4);
    }
    if (head.more()) {
      zmq::message_t endpoint;
      if (pair_.recv(endpoint, zmq::recv_flags::dontwait)) {
        e.endpoint = endpoint.to_string();
      }
    }
    return e;
  } catch (const zmq::error_t&) {
    return std::nullopt;
  }
}

std::string SocketMonitor::Describe(const Event& e, bool with_keys) {
  switch (e.event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      return "the scheduler refused this key (ZAP status " +
             std::to_string(e.value) + ")";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      // The scheduler closes a handshake it cannot accept without a word
      // of why; what this side knows says which mismatch it is.
      if (!with_keys) {
        return "the scheduler requires CURVE keys: give --key and "
               "--server-key (or $DROVER_KEY and $DROVER_SERVER_KEY)";
      }
      if (e.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
          e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        return "the scheduler does not use CURVE keys (it runs without "
               "--auth)";
      }
      return "the CURVE handshake failed: the scheduler's key is not the "
             "one in --server-key, or the scheduler runs without --auth";
    default:
      return "event " + std::to_string(e.event);
  }
}

}  // namespace drover
