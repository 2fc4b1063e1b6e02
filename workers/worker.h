// Worker: drover-worker's event loop. Connects to the scheduler's worker
// channel (DEALER, routing id = its name) and heartbeat channel (XSUB),
// announces its queues, slots and runtimes, runs each assigned attempt on a
// task thread (TaskThreads) through a Runtime, and reports what happened.
// Attempts beyond a queue's slots (up to its prefetch) wait for a slot and
// start on the thread of the attempt that ends, without a round trip to
// the scheduler.
//
// Results are kept until the scheduler acknowledges them, and sent again
// after a reconnect, so a scheduler restart loses none. A `started` report
// is held back for kStartedHold: an attempt that ends within it is reported
// by its result alone (which carries its start time), saving the scheduler
// a durable write and a round trip for every short task. When the scheduler's
// heartbeat shows a new instance, the worker says hello again, naming the
// attempts it is still running so they are adopted, not rerun.
//
// A result is held back (for at most kResultHold) while its queue still
// has enough attempts waiting for a slot to stay busy without the
// scheduler: results that end close together then go out as one burst,
// which the scheduler writes with one sync and answers with one burst of
// new attempts, instead of a round trip and a sync for each.
//
// Threads: the loop owns every ZeroMQ socket; task threads hand their
// messages to it through a locked queue and an eventfd. RequestStop is
// async-signal-safe.
#ifndef DROVER_WORKERS_WORKER_H_
#define DROVER_WORKERS_WORKER_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "drover/clock.h"
#include "drover/keys.h"
#include "drover/protocol.h"
#include "drover/runtime.h"
#include "drover/socket_monitor.h"
#include "drover/socket_wait.h"
#include "drover/status.h"
#include "task_threads.h"

namespace drover {

struct WorkerOptions {
  std::string tasks = "tcp://127.0.0.1:7701";
  std::string heartbeat = "tcp://127.0.0.1:7702";
  std::string name;                         // default: hostname-pid
  // With keys, both channels are CURVE-encrypted and the scheduler's key
  // is pinned; without, they are plain (a local scheduler only).
  std::optional<ClientKeys> keys;
  // What Docker tasks may ask for (drover/policy.h), sent in the hello and
  // enforced on every attempt; its max_log_bytes bounds every attempt's
  // output, shell ones too.
  ContainerPolicy policy;
  std::map<std::string, uint32_t> queues;   // default: {"default": cores}
  // Per queue, at most this many attempts taken beyond the slots; each
  // starts as soon as a slot frees, so a slot does not wait for the
  // scheduler between two short tasks. The scheduler sends only as many
  // as the worker runs in about 20 ms (docs/PROTOCOL.md, `hello`).
  // Default: kPrefetchPerSlot for each of the queue's slots.
  std::optional<uint32_t> prefetch;
  static constexpr uint32_t kPrefetchPerSlot = 16;
  uint32_t PrefetchFor(uint32_t slots) const {
    return prefetch.value_or(slots * kPrefetchPerSlot);
  }
  std::chrono::milliseconds heartbeat_interval{1000};
  // SIGTERM: how long running tasks may finish before they are handed back.
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(30)};
};

// How long a `started` report waits for the attempt's result before it is
// sent on its own (docs/PROTOCOL.md).
inline constexpr std::chrono::milliseconds kStartedHold{20};
// The longest a result waits to go out with others (docs/PROTOCOL.md).
inline constexpr std::chrono::milliseconds kResultHold{5};

class Worker {
 public:
  // `runtimes` by name ("docker", "shell"); at least one.
  Worker(WorkerOptions options,
         std::map<std::string, std::unique_ptr<Runtime>> runtimes);
  ~Worker();

  Status Start();
  // Serves until RequestStop, then drains (see WorkerOptions).
  Status Run();
  void RequestStop() { stop_.store(true); }
  bool stopping() const { return stop_.load(); }

  // Called once, from the loop, when the scheduler first welcomes this
  // worker: from then on it takes tasks (systemd's READY=1).
  void set_ready_callback(std::function<void()> cb) {
    on_ready_ = std::move(cb);
  }
  // Called from the loop every `period` or a little later, while serving
  // and while draining, e.g. to ping systemd's watchdog.
  void set_tick_callback(std::chrono::milliseconds period,
                         std::function<void()> cb) {
    tick_period_ = period;
    on_tick_ = std::move(cb);
  }
  // A line for status reports, e.g. "2 tasks running, connected to the
  // scheduler at tcp://10.0.0.1:7701". Loop thread only.
  std::string StatusLine() const;

 private:
  struct Attempt;

  void OnSchedulerMessage(const std::string& body);
  // A connection event of the worker channel: a new connection says hello
  // (the scheduler knows connections, not names); a refused one is logged.
  void OnConnectionEvent(const SocketMonitor::Event& e);
  // The scheduler no longer allows this worker's key: everything it runs
  // is stopped (the scheduler has requeued it), and both channels
  // reconnect, so the worker is back once its key is allowed again.
  void OnRevoked(const std::string& why);
  // Logs at error level at most once a minute per `what`.
  void LogRefusal(const std::string& what, const std::string& line);
  void OnHeartbeatMessage(const std::string& body);
  void OnAssign(const Assign& a);
  // Attempts of `queue` running or waiting for a slot.
  uint32_t InQueue(const std::string& queue) const;
  // Those of them waiting for a slot.
  uint32_t Waiting(const std::string& queue) const;
  // Drops an attempt that has not started; false if it has.
  bool DropWaiting(const AttemptRef& ref);
  // Reports a dropped attempt as a stopped one is: a cancelled result.
  void ReportDropped(const AttemptRef& ref, const std::string& why);
  // Reports an attempt that this worker's policy forbids as failed.
  void ReportRefused(const AttemptRef& ref, const std::string& why);
  void SayHello();
  void SendHeartbeat();
  void Send(const std::string& body);
  // What a task thread hands to the loop.
  struct Outgoing {
    enum class Kind { kLog, kResult };
    Kind kind;
    AttemptRef ref;
    std::string frame;
    TimeMs at = 0;  // when it was posted
  };
  void DrainOutbox();
  // `wake`: wakes the loop for it; otherwise it is read at the loop's next
  // turn, within kResultHold (a result that may be held anyway).
  void Post(Outgoing message, bool wake = true);
  // Sends the held `started` reports due by `now` (all of them if `now` is
  // nullopt); returns when the next one is due, or 0.
  TimeMs SendHeldStarted(std::optional<TimeMs> now);
  std::string State();
  // Whether the held results may wait for more: every queue they came from
  // still has at least half as many attempts waiting for a slot as it had
  // since results were last sent (and one), and the oldest has waited less
  // than kResultHold.
  bool MayHoldResults(TimeMs now);
  void SendHeldResults();

  WorkerOptions options_;
  std::map<std::string, std::unique_ptr<Runtime>> runtimes_;
  std::string instance_;
  zmq::context_t ctx_;
  zmq::socket_t dealer_;
  zmq::socket_t heartbeat_;
  SocketMonitor monitor_;  // of dealer_
  enum : size_t { kDealerSocket, kHeartbeatSocket, kMonitorSocket };
  SocketWait wait_;  // for dealer_, heartbeat_ and monitor_, in that order
  std::map<std::string, TimeMs> refusals_logged_;  // what -> when
  int event_fd_ = -1;
  std::atomic<bool> stop_{false};

  std::mutex mu_;                    // guards outbox_
  std::deque<Outgoing> outbox_;      // from task threads; a result also
                                     // means the attempt's thread has ended

  std::map<AttemptRef, std::unique_ptr<Attempt>> running_;
  std::map<AttemptRef, std::string> unacked_;  // result frames
  // Results not sent yet (their frames are in unacked_), with the queue
  // each attempt ran on; since when the first of them waits.
  std::vector<std::pair<AttemptRef, std::string>> held_results_;
  TimeMs results_held_since_ = 0;
  // Per queue: the most attempts that waited for a slot at once since
  // results were last sent, and how many must still wait for its results
  // to be held: half that, and at least one. The thresholds are read by
  // the task threads, which wake the loop only for a result it sends.
  std::map<std::string, uint32_t> peak_waiting_;
  std::map<std::string, std::atomic<uint32_t>> hold_threshold_;
  void SetPeakWaiting(const std::string& queue, uint32_t peak);
  // Attempts whose `started` is held back until due (kStartedHold after
  // they start), or that wait for a slot.
  std::set<AttemptRef> held_started_;
  std::string scheduler_;  // instance id of the scheduler we said hello to
  std::string last_state_;  // as last sent in a heartbeat
  bool welcomed_ = false;
  TimeMs last_hello_ = 0;
  TimeMs next_heartbeat_ = 0;
  TimeMs next_resend_ = 0;
  std::function<void()> on_ready_;
  bool ready_reported_ = false;
  std::function<void()> on_tick_;
  std::chrono::milliseconds tick_period_{1000};
  TimeMs next_tick_ = 0;
  SystemClock clock_;
  // Last: its threads use the members above until they are joined.
  TaskThreads threads_;
};

}  // namespace drover

#endif  // DROVER_WORKERS_WORKER_H_
