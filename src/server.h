// Server: droverd's one event loop. It owns the store, the Plan and the
// three ZeroMQ sockets (client API, worker channel, heartbeat channel),
// polls them and its timers, feeds each event to the Plan, persists what
// changed in one batch (group commit), and only then sends replies and
// assignments. The batch is written and synced by a Committer thread while
// the loop goes on with the next turns, whose changes form the next batch.
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
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "drover/clock.h"
#include "drover/socket_wait.h"
#include "auth_dir.h"
#include "committer.h"
#include "drover/store.h"
#include "plan.h"
#include "secret_box.h"
#include "watcher.h"
#include "zap_handler.h"

namespace drover {

struct ServerOptions {
  std::string data_dir = "./var/drover";
  std::string api = "tcp://127.0.0.1:7700";
  std::string tasks = "tcp://127.0.0.1:7701";
  std::string heartbeat = "tcp://127.0.0.1:7702";
  std::string watch_dir;  // "" : none
  // --auth: CURVE on every socket, keys and allowlists from this directory
  // (auth_dir.h); "" : none.
  std::string auth_dir;
  // The key that seals job secrets in the store (secret_box.h); "" : the
  // default, secrets.key in auth_dir, or else in data_dir.
  std::string secrets_key;
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
  // With --auth: starts the ZAP handler and makes the sockets CURVE
  // servers; before any of them binds.
  Status SetUpAuth();
  // Whether `key` may send a request of `type` (with --auth; anything goes
  // without): PermissionDenied saying why not.
  Status Authorize(std::string_view type, const std::string& key) const;
  // Whether `key` is a worker key now (always, without --auth).
  bool IsWorkerKey(const std::string& key) const;
  // The allowlists changed: workers whose key is gone lose their tasks.
  void OnAuthChange(Effects& fx);

 public:

 private:
  struct Reply {
    std::vector<std::string> envelope;  // routing frames to send first
    std::string body;
    uint64_t request_id = 0;
    bool needs_commit = false;  // an acknowledgement: only once durable
  };

  void HandleApi(std::vector<std::string> frames, const std::string& key,
                 Effects& fx);
  // `key`: the CURVE key of the message's connection ("" without --auth).
  void HandleWorker(const std::vector<std::string>& frames,
                    const std::string& key, Effects& fx);
  void HandleHeartbeat(const std::string& frame, const std::string& key,
                       Effects& fx);
  // Sends at once to a worker channel connection (an error, an announce).
  void SendToLink(const std::string& link, const std::string& body);
  // Answers one client request; *acknowledges is set when the answer may
  // only go out once this turn's batch is durable.
  std::string HandleRequest(const std::string& body, const std::string& key,
                            Effects& fx, bool* acknowledges,
                            uint64_t* request_id);
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
  // One group commit: the changes of the loop turns since the last write
  // was handed over, and what may go out only once they are durable.
  struct Group {
    std::vector<Reply> replies;
    std::vector<std::function<void()>> after_commit;
    Effects fx;  // messages to workers; records and notes for LogEvents
  };
  // Adds this turn's records to batch_, and its replies, messages and
  // after-commit actions to open_.
  void Stage(Effects& fx);
  // Unless a write is in flight: hands batch_ to the committer, with open_
  // waiting for it (or, with nothing to write, sends open_ at once). After
  // a `quiet` turn, a small batch_ is written on this thread instead and
  // open_ sent after it.
  void HandOver(bool quiet = false);
  // Writes everything staged, waiting for it; before the loop returns.
  void Drain();
  // Sends what waited for a write (or refuses the acknowledgements in it
  // if the write failed, and accepts no more changes).
  void FinishGroup(Group& group, const Status& written);
  void SendReplies(std::vector<Reply>& replies, bool committed);
  void SendToWorkers(Effects& fx);
  void PublishHeartbeat();
  void LogWorkerChanges();
  // One line per job that reached a terminal state and per note the Plan
  // wrote for a task (requeues, retries, skips): journald's view of jobs.
  void LogEvents(const Effects& fx);
  void LoadUnfinished();

  ServerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SecretBox> box_;  // made by Start
  const Clock& clock_;
  std::string instance_;  // changes at every start; workers watch it
  Plan plan_;
  zmq::context_t ctx_;
  zmq::socket_t api_;
  zmq::socket_t tasks_;
  zmq::socket_t heartbeat_;
  enum : size_t { kApiSocket, kTasksSocket, kHeartbeatSocket };
  SocketWait wait_;  // for the three sockets above, in that order
  std::unique_ptr<AuthDir> auth_;    // with --auth
  std::unique_ptr<ZapHandler> zap_;  // with --auth; before ctx_ goes
  std::vector<Reply> replies_;  // this loop turn's
  std::unique_ptr<Watcher> watcher_;
  // Done once this turn's batch is durable (moving watched files).
  std::vector<std::function<void()>> after_commit_;
  // The changes of the turns since the last hand-over to committer_.
  std::unique_ptr<Batch> batch_;
  Group open_;       // what waits for batch_
  Group in_flight_;  // what waits for the write committer_ is doing
  std::unique_ptr<Committer> committer_;
  std::atomic<bool> stop_{false};
  std::function<void()> on_ready_;
  std::function<void()> on_tick_;
  Millis tick_period_{1000};
  TimeMs next_tick_ = 0;
  // Worker name -> state at the last tick, to log changes the Plan makes
  // silently (a worker declared dead, degraded, gone).
  std::map<std::string, std::string> worker_states_;
  TimeMs next_heartbeat_ = 0;
  // Worker channel connections (ROUTER routing ids) and the worker each
  // said hello as: messages from a connection count for that worker only.
  std::unordered_map<std::string, std::string> link_worker_;
  std::unordered_map<std::string, std::string> worker_link_;
  std::unordered_map<std::string, std::string> link_key_;  // its CURVE key
  // Bounded: when a connection without a hello was last asked for one, and
  // when a refused worker name was last logged.
  std::unordered_map<std::string, TimeMs> announced_links_;
  std::unordered_map<std::string, TimeMs> refusals_logged_;
  bool read_only_ = false;  // a write failed: accept no more changes
};

}  // namespace drover

#endif  // DROVER_SERVER_H_
