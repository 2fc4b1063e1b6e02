#include "drover/socket_wait.h"

#include <cerrno>

namespace drover {

SocketWait::SocketWait(std::vector<zmq::socket_t*> sockets)
    : sockets_(std::move(sockets)),
      dirty_(sockets_.size(), true),  // nothing is known at first
      readable_(sockets_.size(), false) {
  for (zmq::socket_t* s : sockets_) {
    pollfds_.push_back({s->get(zmq::sockopt::fd), POLLIN, 0});
  }
}

bool SocketWait::Wait(long timeout_ms, pollfd* fds, size_t n_fds) {
  const size_t n = sockets_.size();
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    readable_[i] = false;
    if (!dirty_[i]) continue;
    dirty_[i] = false;
    // Processes the mailbox, so the descriptor is quiet again afterwards.
    if (sockets_[i]->get(zmq::sockopt::events) & ZMQ_POLLIN) {
      readable_[i] = any = true;
    }
  }
  pollfds_.resize(n);
  for (size_t k = 0; k < n_fds; ++k) pollfds_.push_back(fds[k]);
  for (pollfd& p : pollfds_) p.revents = 0;
  if (poll(pollfds_.data(), pollfds_.size(),
           static_cast<int>(any ? 0 : timeout_ms)) < 0 &&
      errno != EINTR) {
    return false;
  }
  for (size_t i = 0; i < n; ++i) {
    // News in the mailbox: perhaps a message, perhaps only commands. The
    // caller's read finds out (and quiets the descriptor).
    if (pollfds_[i].revents != 0) readable_[i] = true;
  }
  for (size_t k = 0; k < n_fds; ++k) fds[k].revents = pollfds_[n + k].revents;
  return true;
}

}  // namespace drover
