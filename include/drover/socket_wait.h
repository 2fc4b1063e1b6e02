// SocketWait: waits for ZeroMQ sockets and plain descriptors with one
// poll(2), on the sockets' ZMQ_FD.
//
// zmq_poll asks every socket for its state (ZMQ_EVENTS: a getpid and a
// poll of its mailbox each) once before it sleeps and again after, whether
// the socket saw traffic or not: about fifteen system calls a wake-up for
// three sockets, which on a virtual machine cost more than the message
// they wake for. A socket's ZMQ_FD is readable when its mailbox has news
// for it (a peer's pipe became readable), so only two kinds of socket need
// asking: those whose descriptor fired, and those that may hold messages
// their descriptor will not announce again — that the caller sent on (a
// send may process the mailbox and swallow the news) or did not read to
// the end (EAGAIN) since. The caller says so with Dirty(), and ReadToEnd()
// when a read found a socket empty, which makes it clean again.
#ifndef DROVER_SOCKET_WAIT_H_
#define DROVER_SOCKET_WAIT_H_

#include <poll.h>

#include <cstddef>
#include <vector>

#include <zmq.hpp>

namespace drover {

class SocketWait {
 public:
  // The sockets are watched for input, in this order, for the waiter's life.
  explicit SocketWait(std::vector<zmq::socket_t*> sockets);

  // Socket `i` may hold messages its descriptor will not announce: it was
  // sent on, or not read to its end.
  void Dirty(size_t i) { dirty_[i] = true; }
  // A read of socket `i` found it empty: its descriptor announces the next
  // message, whatever was sent on it before.
  void ReadToEnd(size_t i) { dirty_[i] = false; }
  // Waits up to `timeout_ms` (0: not at all) until a socket may have a
  // message or one of `fds` polls ready (a negative fd is ignored; their
  // `revents` are filled in). Returns false if poll(2) failed other than
  // by EINTR.
  bool Wait(long timeout_ms, pollfd* fds = nullptr, size_t n_fds = 0);
  // After Wait: read socket `i` until it has nothing (ReadToEnd), or mark
  // it Dirty. May be true when there turns out to be nothing to read.
  bool readable(size_t i) const { return readable_[i]; }

 private:
  std::vector<zmq::socket_t*> sockets_;
  std::vector<bool> dirty_;
  std::vector<bool> readable_;
  std::vector<pollfd> pollfds_;
};

}  // namespace drover

#endif  // DROVER_SOCKET_WAIT_H_
