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
// the end (EAGAIN) since. The caller says Dirty() after a send; ReadAll()
// keeps track of the reads.
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
  // Waits up to `timeout_ms` (0: not at all) until a socket may have a
  // message or one of `fds` polls ready (a negative fd is ignored; their
  // `revents` are filled in). Returns false if poll(2) failed other than
  // by EINTR.
  bool Wait(long timeout_ms, pollfd* fds = nullptr, size_t n_fds = 0);
  // After Wait: if socket `i` may hold messages, calls `read_one` (which
  // reads one message and returns false if there was none) until the
  // socket is empty or `limit` messages were read, and records which.
  // An exception from `read_one` leaves the socket Dirty and propagates.
  template <typename ReadOne>
  void ReadAll(size_t i, int limit, ReadOne read_one) {
    if (!readable_[i]) return;
    Dirty(i);  // until it is found empty: more may wait
    for (int k = 0; k < limit; ++k) {
      // Found empty: its descriptor announces the next message, whatever
      // was sent on it before.
      if (!read_one()) {
        dirty_[i] = false;
        return;
      }
    }
  }

 private:
  std::vector<zmq::socket_t*> sockets_;
  std::vector<bool> dirty_;
  std::vector<bool> readable_;
  std::vector<pollfd> pollfds_;
};

}  // namespace drover

#endif  // DROVER_SOCKET_WAIT_H_
