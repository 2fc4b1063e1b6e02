#include "task_threads.h"

#include <algorithm>

namespace drover {

TaskThreads::JobId TaskThreads::Run(const std::string& group, uint32_t limit,
                                    std::function<void()> job) {
  std::lock_guard lock(mu_);
  Group& g = groups_[group];
  g.limit = limit;
  Job j{next_id_++, group, std::move(job)};
  const JobId id = j.id;
  if (limit != 0 && (g.running >= limit || !g.waiting.empty())) {
    g.waiting.push_back(std::move(j));
  } else {
    ++g.running;
    Dispatch(std::move(j));
  }
  return id;
}

void TaskThreads::Dispatch(Job job) {
  ready_.push_back(std::move(job));
  // Each waiting thread takes one ready job; start a thread for the rest.
  if (waiting_ >= ready_.size()) {
    work_.notify_one();
  } else {
    threads_.emplace_back([this] { Loop(); });
  }
}

bool TaskThreads::Cancel(JobId id) {
  std::lock_guard lock(mu_);
  auto is_it = [id](const Job& j) { return j.id == id; };
  for (auto& [name, g] : groups_) {
    auto it = std::find_if(g.waiting.begin(), g.waiting.end(), is_it);
    if (it != g.waiting.end()) {
      g.waiting.erase(it);
      if (Idle()) done_.notify_all();
      return true;
    }
  }
  auto it = std::find_if(ready_.begin(), ready_.end(), is_it);
  if (it == ready_.end()) return false;
  Group& g = groups_[it->group];
  ready_.erase(it);
  --g.running;
  // The slot it would have taken goes to the next job of its group.
  if (!g.waiting.empty()) {
    ++g.running;
    Job next = std::move(g.waiting.front());
    g.waiting.pop_front();
    Dispatch(std::move(next));
  }
  if (Idle()) done_.notify_all();
  return true;
}

size_t TaskThreads::Waiting(const std::string& group) {
  std::lock_guard lock(mu_);
  auto g = groups_.find(group);
  return g == groups_.end() ? 0 : g->second.waiting.size();
}

bool TaskThreads::Idle() const {
  if (busy_ != 0 || !ready_.empty()) return false;
  return std::all_of(groups_.begin(), groups_.end(),
                     [](const auto& g) { return g.second.waiting.empty(); });
}

void TaskThreads::Loop() {
  std::unique_lock lock(mu_);
  while (true) {
    ++waiting_;
    work_.wait(lock, [this] { return !ready_.empty() || exiting_; });
    --waiting_;
    if (ready_.empty()) return;  // exiting, with nothing left to run
    Job job = std::move(ready_.front());
    ready_.pop_front();
    ++busy_;
    while (true) {
      lock.unlock();
      job.fn();
      job.fn = nullptr;  // what it holds goes before the job counts as done
      lock.lock();
      Group& g = groups_[job.group];
      if (g.waiting.empty()) {
        --g.running;
        break;
      }
      // The slot passes to the group's next job, on this thread.
      job = std::move(g.waiting.front());
      g.waiting.pop_front();
    }
    --busy_;
    if (Idle()) done_.notify_all();
  }
}

void TaskThreads::WaitIdle() {
  std::unique_lock lock(mu_);
  done_.wait(lock, [this] { return Idle(); });
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
