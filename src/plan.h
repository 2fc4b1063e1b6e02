// Plan: drover's scheduling core. Given the unfinished jobs, the connected
// workers and one event at a time, it decides which tasks change state,
// which to dispatch to which worker, and which to requeue or stop.
//
// Pure, in the manner of ninja's Plan: no sockets, threads, clock or
// storage. Time comes in as an argument; what must be persisted and sent
// goes out in Effects. The daemon (Server) persists Effects::records in one
// batch and only then sends Effects::messages, so nothing is announced
// before it is durable.
//
// Thread-compatible: one thread (the daemon's event loop) owns a Plan.
#ifndef DROVER_PLAN_H_
#define DROVER_PLAN_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "drover/job_spec.h"
#include "drover/protocol.h"
#include "drover/store.h"

namespace drover {

// What an event changed: records to persist, frames to send to workers.
struct Effects {
  std::vector<JobRecord> jobs;
  std::vector<TaskRecord> tasks;
  std::vector<std::pair<std::string, LogChunk>> logs;         // (job id, chunk)
  std::vector<std::pair<std::string, std::string>> messages;  // (worker, frame)
  bool empty() const {
    return jobs.empty() && tasks.empty() && logs.empty() && messages.empty();
  }
};

struct PlanOptions {
  std::string instance;  // the scheduler's id for this start, in welcomes
  Millis heartbeat_interval{1000};
  uint32_t heartbeat_liveness = 3;
  // After a restart, how long attempts that were running may wait for
  // their worker to say hello before they are requeued.
  Millis adopt_grace{0};  // 0: interval × (liveness + 1)
  size_t max_log_bytes_per_attempt = 1 << 20;
  // A busy worker is given attempts to hold for a slot (up to its
  // prefetch) only as many as it runs in this long, judged by how long its
  // attempts of that queue ran lately: short tasks keep its slots busy
  // between two round trips, a long one is never held back behind another.
  Millis hold_horizon{20};
};

// The records of a job just accepted: the job PENDING, its tasks CREATED.
struct NewJobRecords {
  JobRecord job;
  std::vector<TaskRecord> tasks;
};
NewJobRecords MakeJobRecords(std::string id, const JobSpec& spec,
                             std::string source, std::string source_name,
                             TimeMs now);

class Plan {
 public:
  Plan(PlanOptions options, uint64_t seed);
  ~Plan();

  // A job just submitted: its records as stored (job PENDING, tasks
  // CREATED) and its spec. Roots become PENDING (or SKIPPED).
  void AddJob(JobRecord job, JobSpec spec, std::vector<TaskRecord> tasks,
              TimeMs now, Effects& fx);
  // A stored unfinished job found at start-up. Attempts that were SCHEDULED
  // or RUNNING wait adopt_grace for their worker to claim them.
  void RecoverJob(JobRecord job, JobSpec spec, std::vector<TaskRecord> tasks,
                  TimeMs now, Effects& fx);
  // A job whose stored spec no longer parses: it is failed with `error`.
  void FailUnloadable(JobRecord job, std::vector<TaskRecord> tasks,
                      const std::string& error, TimeMs now, Effects& fx);

  // Worker channel. `key` is the CURVE public key the message's connection
  // authenticated with ("" without --auth): a worker is bound to the key
  // of its first hello.
  //
  // A hello under the name of a worker that is alive is accepted only from
  // the same life (its instance) or, with keys, from the same key (a
  // restart); otherwise AlreadyExists, and nothing changes: a second worker
  // never takes over the first one's name.
  Status OnHello(const Hello& hello, const std::string& key, TimeMs now,
                 Effects& fx);
  // A heartbeat whose key is not the named worker's is ignored.
  void OnHeartbeat(const WorkerHeartbeat& hb, const std::string& key,
                   TimeMs now, Effects& fx);
  void OnStarted(const std::string& worker, const Started& m, TimeMs now,
                 Effects& fx);
  void OnLog(const std::string& worker, const LogData& m, Effects& fx);
  void OnResult(const std::string& worker, const TaskResult& m, TimeMs now,
                Effects& fx);
  void OnReject(const std::string& worker, const Reject& m, TimeMs now,
                Effects& fx);
  void OnGoodbye(const std::string& worker, const Goodbye& m, TimeMs now,
                 Effects& fx);

  // The worker's key was taken off the allowlist: it is "revoked", and
  // its attempts are requeued.
  void Revoke(const std::string& worker, TimeMs now, Effects& fx);

  // Client: cancel. FailedPrecondition when the job has already ended,
  // NotFound when it is not an unfinished job here.
  Status Cancel(const std::string& job_id, TimeMs now, Effects& fx);

  // Time passes: dead workers, backoff timers, adoption grace; then
  // dispatch whatever can run.
  void Tick(TimeMs now, Effects& fx);
  // Assigns ready tasks to free slots.
  void Dispatch(TimeMs now, Effects& fx);

  // When Tick next has something to do (earliest timer), or nullopt.
  std::optional<TimeMs> NextDeadline() const;

  // Read-only views for the API.
  bool HasJob(const std::string& job_id) const;
  std::vector<WorkerView> Workers() const;
  size_t running_jobs() const { return jobs_.size(); }
  size_t live_workers() const;
  // Why no connected worker would run `task` (a Docker task), naming the
  // policy key of the first that forbids it; "" if one allows it or none
  // serves its queue (it then waits for one, as any task does).
  std::string PolicyRefusal(const TaskSpec& task) const;
  // Secret values of an unfinished job (for redaction), longest first, or
  // empty.
  std::vector<std::string> Secrets(const std::string& job_id) const;

 private:
  struct Job;
  struct Worker;
  struct TaskKey {
    std::string job_id;
    uint32_t index = 0;
    bool operator<(const TaskKey& o) const {
      return std::tie(job_id, index) < std::tie(o.job_id, o.index);
    }
  };

  Job* FindJob(const std::string& id);
  TaskRecord* FindAttempt(const AttemptRef& ref, Job** job_out);
  void Admit(std::unique_ptr<Job> job, TimeMs now, Effects& fx);
  void MakeReady(Job& job, uint32_t index, TimeMs now, Effects& fx);
  void OnTaskDone(Job& job, uint32_t index, TimeMs now, Effects& fx);
  void Requeue(Job& job, uint32_t index, const std::string& why, TimeMs now,
               Effects& fx);
  void FailTask(Job& job, uint32_t index, const std::string& error, TimeMs now,
                Effects& fx);
  void FinishIfDone(Job& job, TimeMs now, Effects& fx);
  void ReleaseSlot(const std::string& worker, const AttemptRef& ref);
  // How many attempts of `queue` the busy worker `w` may hold beyond its
  // `slots`: PlanOptions::hold_horizon's worth, at most its prefetch.
  uint32_t HoldFor(const Worker& w, const std::string& queue,
                   uint32_t slots) const;
  // Requeues what `w` runs, noting that the worker `why` (e.g. "stopped
  // responding").
  void DeclareDead(Worker& w, TimeMs now, Effects& fx,
                   std::string_view why = "stopped responding");
  bool TryAssign(Job& job, uint32_t index, TimeMs now, Effects& fx);
  void Note(Job& job, uint32_t index, const std::string& text, Effects& fx);
  std::string Redact(const Job& job, std::string text) const;
  Millis Backoff(const RetryPolicy& p, uint32_t failures);

  PlanOptions options_;
  std::mt19937_64 rng_;
  std::unordered_map<std::string, std::unique_ptr<Job>> jobs_;
  std::vector<std::unique_ptr<Job>> ended_;  // see Job::ended
  std::map<std::string, std::unique_ptr<Worker>> workers_;
  std::map<std::string, std::deque<TaskKey>> ready_;  // by queue
  std::set<std::pair<TimeMs, TaskKey>> delayed_;      // retry backoff
  std::map<AttemptRef, TimeMs> orphans_;     // awaiting adoption, until
  std::map<std::string, TimeMs> announced_;  // last Announce per worker
};

}  // namespace drover

#endif  // DROVER_PLAN_H_
