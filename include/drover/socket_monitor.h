// SocketMonitor: the connection events of one ZeroMQ socket, through
// libzmq's zmq_socket_monitor, read without blocking. The worker uses it to
// say hello again after every (re)connection and to report a scheduler
// that refuses its key; the client, to fail at once when the scheduler
// refuses its key instead of waiting for a timeout.
//
// Thread-compatible: it belongs to the thread that owns the monitored
// socket, and must be destroyed before that socket is closed.
#ifndef DROVER_SOCKET_MONITOR_H_
#define DROVER_SOCKET_MONITOR_H_

#include <cstdint>
#include <optional>
#include <string>

#include <zmq.hpp>

namespace drover {

class SocketMonitor {
 public:
  struct Event {
    uint16_t event = 0;  // a ZMQ_EVENT_* value
    uint32_t value = 0;  // its value: a ZAP status, a protocol error code
    std::string endpoint;
    bool handshake_failed() const;
  };

  // Monitors `socket` for the events in `mask` (ZMQ_EVENT_*). `ctx` must be
  // the socket's context. Throws zmq::error_t if libzmq refuses.
  SocketMonitor(zmq::context_t& ctx, zmq::socket_t& socket, int mask);
  ~SocketMonitor();
  SocketMonitor(const SocketMonitor&) = delete;
  SocketMonitor& operator=(const SocketMonitor&) = delete;

  // The socket the events arrive on, to poll for input.
  zmq::socket_t& events() { return pair_; }
  // The next event, or nullopt when none is waiting.
  std::optional<Event> Next();

  // What a failed handshake means, for a person: e.g. "the scheduler
  // refused this key" or "the scheduler requires CURVE keys". `with_keys`:
  // whether this side connected with CURVE keys.
  static std::string Describe(const Event& e, bool with_keys);

 private:
  zmq::socket_t& socket_;
  zmq::socket_t pair_;
};

}  // namespace drover

#endif  // DROVER_SOCKET_MONITOR_H_
