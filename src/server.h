// Server: droverd's one event loop. It owns the store, the Plan and the
// three ZeroMQ sockets (client API, worker channel, heartbeat channel),
// polls them and its timers, feeds each event to the Plan, persists what
// changed in one batch per loop turn (group commit), and only then sends
// replies and assignments.
//
// Thread-compatible: Run() is called once, on the thread that made the
// Server; RequestStop() is async-signal-safe and may be called from any
// thread or a signal handler.
#ifndef DROVER_SERVER_H_
#define DROVER_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "drover/clock.h"
#include "drover/store.h"
#include "plan.h"
#include "watcher.h"

namespace drover {

struct ServerOptions {
  std::string data_dir = "./var/drover";
  std::string api = "tcp://127.0.0.1:7700";
  std::string tasks = "tcp://127.0.0.1:7701";
  std::string heartbeat = "tcp://127.0.0.1:7702";
  std::string watch_dir;  // "" : none
  Millis heartbeat_interval{1000};
  uint32_t heartbeat_liveness = 3;
};

class Server {
 public:
  Server(ServerOptions options, std::unique_ptr<Store> store,
         const Clock& clock);
  ~Server();

  // Binds the sockets and loads unfinished jobs. Errors say which endpoint
  // or job failed.
  Status Start();
  // Serves until RequestStop. Returns OK on a requested stop.
  Status Run();
  void RequestStop() { stop_.store(true); }

  // Called once the server serves (after Start), for readiness reports.
  void set_ready_callback(std::function<void()> cb) { on_ready_ = std::move(cb); }
  // Called from the loop every `period` or a little later (first right
  // after the ready callback), e.g. to ping systemd's watchdog: a loop that
  // hangs stops calling it.
  void set_tick_callback(Millis period, std::function<void()> cb) {
    tick_period_ = period;
    on_tick_ = std::move(cb);
  }
  // A line for status reports, e.g. "3 jobs running, 2 workers".
  std::string StatusLine() const;

 private:
  // The refusal of any change once a write has failed.
  Status ReadOnlyError() const;

 public:

 private:
  struct Reply {
    std::vector<std::string> envelope;  // routing frames to send first
    std::string body;
    uint64_t request_id = 0;
    bool needs_commit = false;  // an acknowledgement: only once durable
  };

  void HandleApi(std::vector<std::string> frames, Effects& fx);
  void HandleWorker(std::vector<std::string> frames, Effects& fx);
  void HandleHeartbeat(const std::string& frame, Effects& fx);
  // Answers one client request; *acknowledges is set when the answer may
  // only go out once this turn's batch is durable.
  std::string HandleRequest(const std::string& body, Effects& fx,
                            bool* acknowledges, uint64_t* request_id);
  std::string Submit(uint64_t id, const SubmitRequest& req, Effects& fx);
  // Validates a job file and adds the new job to this turn's batch (with
  // `marker`, when not empty). The job id, or InvalidArgument with the
  // validation errors in *errors.
  Result<std::string> Accept(const std::string& source,
                             const std::string& file,
                             const std::map<std::string, std::string>& inputs,
                             const std::string& marker, Effects& fx,
                             std::vector<Diagnostic>* errors);
  void HandleWatched(const WatchedFile& f, Effects& fx);
  void FinishWatched(const WatchedFile& f, const std::string& marker,
                     const std::string& job_id);
  Result<JobView> View(const std::string& job_id, bool with_tasks) const;
  // Persists batch_ and fx in one commit; false if it failed.
  bool Persist(Effects& fx);
  void SendReplies(bool committed);
  void SendToWorkers(Effects& fx);
  void PublishHeartbeat();
  void LogWorkerChanges();
  // One line per job that reached a terminal state and per note the Plan
  // wrote for a task (requeues, retries, skips): journald's view of jobs.
  void LogEvents(const Effects& fx);
  void LoadUnfinished();

  ServerOptions options_;
  std::unique_ptr<Store> store_;
  const Clock& clock_;
  std::string instance_;  // changes at every start; workers watch it
  Plan plan_;
  zmq::context_t ctx_;
  zmq::socket_t api_;
  zmq::socket_t tasks_;
  zmq::socket_t heartbeat_;
  std::vector<Reply> replies_;
  std::unique_ptr<Watcher> watcher_;
  // Done once this turn's batch is durable (moving watched files).
  std::vector<std::function<void()>> after_commit_;
  std::unique_ptr<Batch> batch_;  // new jobs of this loop turn
  std::atomic<bool> stop_{false};
  std::function<void()> on_ready_;
  std::function<void()> on_tick_;
  Millis tick_period_{1000};
  TimeMs next_tick_ = 0;
  // Worker name -> state at the last tick, to log changes the Plan makes
  // silently (a worker declared dead, degraded, gone).
  std::map<std::string, std::string> worker_states_;
  TimeMs next_heartbeat_ = 0;
  bool read_only_ = false;  // a write failed: accept no more changes
};

}  // namespace drover

#endif  // DROVER_SERVER_H_
