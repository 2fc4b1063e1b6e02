#include "committer.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace drover {

Committer::Committer(Store* store)
    : store_(store), event_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (event_fd_ >= 0) {
    thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  }
}

Committer::~Committer() {
  if (busy_) (void)Wait();
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  if (event_fd_ >= 0) close(event_fd_);
}

void Committer::Start(PreparedWrite write) {
  busy_ = true;
  if (event_fd_ < 0) {
    done_ = store_->Write(write);
    return;
  }
  {
    std::lock_guard lock(mu_);
    pending_ = std::move(write);
  }
  cv_.notify_one();
}

std::optional<Status> Committer::Finish() {
  if (!busy_) return std::nullopt;
  std::optional<Status> out;
  {
    std::lock_guard lock(mu_);
    if (!done_) return std::nullopt;
    out = std::move(done_);
    done_.reset();
  }
  if (event_fd_ >= 0) {
    uint64_t count;
    (void)!read(event_fd_, &count, sizeof count);
  }
  busy_ = false;
  return out;
}

Status Committer::Wait() {
  if (!busy_) return Status::Ok();
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_.has_value(); });
  }
  return *Finish();
}

void Committer::Loop(std::stop_token stop) {
  while (true) {
    PreparedWrite batch;
    {
      std::unique_lock lock(mu_);
      if (!cv_.wait(lock, stop, [&] { return pending_.has_value(); })) {
        return;  // stop requested with nothing to write
      }
      batch = std::move(*pending_);
      pending_.reset();
    }
    Status s = store_->Write(batch);
    {
      std::lock_guard lock(mu_);
      done_ = std::move(s);
    }
    cv_.notify_all();  // Wait()
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

}  // namespace drover
