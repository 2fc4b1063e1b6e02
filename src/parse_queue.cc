#include "parse_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace drover {

ParseQueue::ParseQueue() : event_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (event_fd_ >= 0) {
    thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  }
}

ParseQueue::~ParseQueue() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  if (event_fd_ >= 0) close(event_fd_);
}

void ParseQueue::Add(Item item) {
  ++outstanding_;
  if (event_fd_ < 0) {
    item.result = ParseJobText(item.source, item.file, item.inputs);
    std::lock_guard lock(mu_);
    done_.push_back(std::move(item));
    return;
  }
  {
    std::lock_guard lock(mu_);
    todo_.push_back(std::move(item));
  }
  cv_.notify_all();
}

std::vector<ParseQueue::Item> ParseQueue::Take() {
  // The count first: an item finished after the swap writes it again.
  if (event_fd_ >= 0) {
    uint64_t count;
    (void)!read(event_fd_, &count, sizeof count);
  }
  std::vector<Item> out;
  {
    std::lock_guard lock(mu_);
    out.swap(done_);
  }
  outstanding_ -= out.size();
  return out;
}

std::vector<ParseQueue::Item> ParseQueue::TakeAll() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_.size() == outstanding_; });
  }
  return Take();
}

void ParseQueue::Loop(std::stop_token stop) {
  while (true) {
    Item item;
    {
      std::unique_lock lock(mu_);
      // Stopping waits for nothing more, but what was added is parsed.
      if (!cv_.wait(lock, stop, [&] { return !todo_.empty(); })) return;
      item = std::move(todo_.front());
      todo_.pop_front();
    }
    item.result = ParseJobText(item.source, item.file, item.inputs);
    {
      std::lock_guard lock(mu_);
      done_.push_back(std::move(item));
    }
    cv_.notify_all();  // TakeAll()
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

}  // namespace drover
