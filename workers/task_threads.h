// TaskThreads: the threads that run a worker's attempts. A thread that has
// finished an attempt waits for the next one instead of exiting, so a
// worker running many short tasks does not start and tear down a thread for
// each (a clone, a new stack and its release: on a virtual machine, with its
// costly page-table changes, a visible share of a short task's cost).
//
// Jobs come in groups (a worker's queues), each with a limit on how many of
// its jobs run at once (the queue's slots). A job over the limit waits, in
// order, and the thread that ends a job of its group runs it next at once:
// no other thread has to wake up between two attempts of a busy queue.
//
// There are never more threads than jobs that once ran at the same time,
// that is at most the worker's slots (and one more for a moment, when a job
// starts while the thread of one that just ended is returning).
#ifndef DROVER_WORKERS_TASK_THREADS_H_
#define DROVER_WORKERS_TASK_THREADS_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace drover {

class TaskThreads {
 public:
  using JobId = uint64_t;

  TaskThreads() = default;
  TaskThreads(const TaskThreads&) = delete;
  TaskThreads& operator=(const TaskThreads&) = delete;
  ~TaskThreads() { JoinAll(); }

  // Runs `job` on an idle thread, or on a new one if none is idle.
  void Run(std::function<void()> job) { Run("", 0, std::move(job)); }
  // Runs `job` once fewer than `limit` jobs of `group` are running (0: no
  // limit), after the group's jobs queued before it.
  JobId Run(const std::string& group, uint32_t limit,
            std::function<void()> job);
  // Drops a job that has not started yet; false if it has started.
  bool Cancel(JobId id);
  // Jobs of `group` waiting for a slot (a job of the group that is about
  // to end is still running: the first of them starts after it).
  size_t Waiting(const std::string& group);
  // Returns once no job is queued or running.
  void WaitIdle();
  // Waits for every job, then ends the threads. Run must not be called
  // after this.
  void JoinAll();
  // Threads started so far (for tests).
  size_t thread_count();

 private:
  struct Job {
    JobId id = 0;
    std::string group;
    std::function<void()> fn;
  };
  struct Group {
    uint32_t limit = 0;
    uint32_t running = 0;  // started, or handed to a thread to start
    std::deque<Job> waiting;
  };
  void Loop();
  // Hands `job` to an idle thread, or to a new one. Locked.
  void Dispatch(Job job);
  bool Idle() const;  // locked

  std::mutex mu_;
  std::condition_variable work_;   // a job is ready, or exiting_
  std::condition_variable done_;   // the last job has ended
  std::deque<Job> ready_;          // may start: waiting for a thread
  std::map<std::string, Group> groups_;
  JobId next_id_ = 1;
  size_t waiting_ = 0;  // threads waiting for a job
  size_t busy_ = 0;     // threads running a job
  bool exiting_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace drover

#endif  // DROVER_WORKERS_TASK_THREADS_H_
