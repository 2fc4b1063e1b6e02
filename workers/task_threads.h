// TaskThreads: the threads that run a worker's attempts. A thread that has
// finished an attempt waits for the next one instead of exiting, so a
// worker running many short tasks does not start and tear down a thread for
// each (a clone, a new stack and its release: on a virtual machine, with its
// costly page-table changes, a visible share of a short task's cost).
//
// There are never more threads than attempts that once ran at the same
// time, that is at most the worker's slots (and one more for a moment, when
// an attempt starts while the thread of one that just ended is returning).
#ifndef DROVER_WORKERS_TASK_THREADS_H_
#define DROVER_WORKERS_TASK_THREADS_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace drover {

class TaskThreads {
 public:
  TaskThreads() = default;
  TaskThreads(const TaskThreads&) = delete;
  TaskThreads& operator=(const TaskThreads&) = delete;
  ~TaskThreads() { JoinAll(); }

  // Runs `job` on an idle thread, or on a new one if none is idle.
  void Run(std::function<void()> job);
  // Returns once no job is queued or running.
  void WaitIdle();
  // Waits for every job, then ends the threads. Run must not be called
  // after this.
  void JoinAll();
  // Threads started so far (for tests).
  size_t thread_count();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable work_;   // a job is queued, or exiting_
  std::condition_variable done_;   // the last running job has ended
  std::deque<std::function<void()>> jobs_;
  size_t waiting_ = 0;  // threads waiting for a job
  size_t busy_ = 0;     // threads running a job
  bool exiting_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace drover

#endif  // DROVER_WORKERS_TASK_THREADS_H_
