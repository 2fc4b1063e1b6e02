#include "task_threads.h"

namespace drover {

void TaskThreads::Run(std::function<void()> job) {
  std::lock_guard lock(mu_);
  jobs_.push_back(std::move(job));
  // Each waiting thread takes one queued job; start a thread for the rest.
  if (waiting_ >= jobs_.size()) {
    work_.notify_one();
  } else {
    threads_.emplace_back([this] { Loop(); });
  }
}

void TaskThreads::Loop() {
  std::unique_lock lock(mu_);
  while (true) {
    ++waiting_;
    work_.wait(lock, [this] { return !jobs_.empty() || exiting_; });
    --waiting_;
    if (jobs_.empty()) return;  // exiting, with nothing left to run
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    ++busy_;
    lock.unlock();
    job();
    job = nullptr;  // what it holds goes before the job counts as done
    lock.lock();
    --busy_;
    if (busy_ == 0 && jobs_.empty()) done_.notify_all();
  }
}

void TaskThreads::WaitIdle() {
  std::unique_lock lock(mu_);
  done_.wait(lock, [this] { return busy_ == 0 && jobs_.empty(); });
}

void TaskThreads::JoinAll() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    exiting_ = true;
    threads.swap(threads_);
  }
  work_.notify_all();
  for (std::thread& t : threads) t.join();
}

size_t TaskThreads::thread_count() {
  std::lock_guard lock(mu_);
  return threads_.size();
}

}  // namespace drover
