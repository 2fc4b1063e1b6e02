#include "plan.h"

#include <algorithm>
#include <cmath>

#include "drover/clock.h"
#include "drover/expression.h"
#include "drover/policy.h"
#include "drover/text.h"

namespace drover {

namespace {
constexpr std::string_view kRequeuedPrefix = "requeued: ";
}  // namespace

struct Plan::Job {
  JobRecord rec;
  JobSpec spec;
  std::vector<TaskRecord> tasks;
  std::vector<uint32_t> waiting;  // unmet dependencies per task
  std::vector<std::vector<uint32_t>> dependents;
  std::vector<uint32_t> failures;  // failed attempts that count for retry
  std::vector<size_t> log_bytes;   // of the current attempt
  std::map<std::string, std::string> vars;  // tasks.VAR
  bool failing = false;                     // a task failed: start nothing new
  // Tasks [0, final_prefix) are in a terminal state, which is final, so
  // FinishIfDone resumes its scan there instead of rescanning the job.
  size_t final_prefix = 0;
  // Ended: out of jobs_, but kept alive in Plan::ended_ until the next
  // Tick, because the call chain that ended it (a skip or a failure deep
  // in OnTaskDone or Admit) still holds references to it.
  bool ended = false;
};

struct Plan::Worker {
  std::string name;
  std::string instance;
  std::string key;  // its connection's CURVE key; "" without --auth
  std::map<std::string, uint32_t> slots;
  std::map<std::string, uint32_t> prefetch;  // per queue (its hello)
  std::map<std::string, uint32_t> used;  // assigned, not ended
  // Per queue: how long its attempts ran here lately (ms), a moving mean
  // over their results; absent before the first.
  std::map<std::string, double> run_ms;
  std::set<std::string> runtimes;
  std::optional<ContainerPolicy> policy;  // from its hello; none: anything
  struct Held {
    std::string queue;
    TimeMs since = 0;  // when assigned (or adopted)
  };
  std::map<AttemptRef, Held> running;
  TimeMs last_seen = 0;
  std::string state = "ready";
  bool alive = true;
};

NewJobRecords MakeJobRecords(std::string id, const JobSpec& spec,
                             std::string source, std::string source_name,
                             TimeMs now) {
  NewJobRecords r;
  r.job.id = std::move(id);
  r.job.name = spec.name;
  r.job.state = JobState::kPending;
  r.job.created_at = now;
  r.job.inputs = spec.inputs;
  r.job.source = std::move(source);
  r.job.source_name = std::move(source_name);
  r.job.task_count = static_cast<uint32_t>(spec.tasks.size());
  for (uint32_t i = 0; i < spec.tasks.size(); ++i) {
    TaskRecord t;
    t.job_id = r.job.id;
    t.index = i;
    t.name = spec.tasks[i].name;
    r.tasks.push_back(std::move(t));
  }
  return r;
}

Plan::Plan(PlanOptions options, uint64_t seed) : options_(options), rng_(seed) {
  if (options_.adopt_grace.count() == 0) {
    options_.adopt_grace =
        options_.heartbeat_interval * (options_.heartbeat_liveness + 1);
  }
}

Plan::~Plan() = default;

Plan::Job* Plan::FindJob(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

bool Plan::HasJob(const std::string& job_id) const {
  return jobs_.count(job_id) > 0;
}

namespace {

// A job's secret values, longest first: a secret that holds a shorter one
// ("password1" and "pass") must be masked whole, not around the short one.
std::vector<std::string> SecretValues(const JobSpec& spec) {
  std::vector<std::string> out;
  for (const auto& [name, value] : spec.secrets) {
    if (!value.empty()) out.push_back(value);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const std::string& a, const std::string& b) {
                     return a.size() > b.size();
                   });
  return out;
}

}  // namespace

std::vector<std::string> Plan::Secrets(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return {};
  return SecretValues(it->second->spec);
}

std::string Plan::Redact(const Job& job, std::string text) const {
  return RedactSecrets(std::move(text), SecretValues(job.spec));
}

TaskRecord* Plan::FindAttempt(const AttemptRef& ref, Job** job_out) {
  Job* job = FindJob(ref.job_id);
  if (job == nullptr || ref.task >= job->tasks.size()) return nullptr;
  TaskRecord& t = job->tasks[ref.task];
  if (t.attempts != ref.attempt) return nullptr;
  if (t.state != TaskState::kScheduled && t.state != TaskState::kRunning) {
    return nullptr;
  }
  *job_out = job;
  return &t;
}

void Plan::Admit(std::unique_ptr<Job> job, TimeMs now, Effects& fx) {
  const size_t n = job->spec.tasks.size();
  job->waiting.assign(n, 0);
  job->dependents.assign(n, {});
  job->failures.assign(n, 0);
  job->log_bytes.assign(n, 0);
  std::map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < n; ++i) index[job->spec.tasks[i].name] = i;
  for (uint32_t i = 0; i < n; ++i) {
    for (const auto& dep : job->spec.tasks[i].depends_on) {
      auto it = index.find(dep);
      if (it == index.end()) continue;  // validated before; defensive
      job->dependents[it->second].push_back(i);
      const TaskState ds = job->tasks[it->second].state;
      if (ds != TaskState::kCompleted && ds != TaskState::kSkipped) {
        ++job->waiting[i];
      }
    }
  }
  for (uint32_t i = 0; i < n; ++i) {
    const TaskRecord& t = job->tasks[i];
    for (const auto& h : t.history) {
      if (!h.error.empty() && h.error.rfind(kRequeuedPrefix, 0) != 0) {
        ++job->failures[i];
      }
    }
    if (t.state == TaskState::kCompleted && !job->spec.tasks[i].var.empty()) {
      job->vars[job->spec.tasks[i].var] = t.output;
    }
    if (t.state == TaskState::kFailed) job->failing = true;
  }
  Job& j = *job;
  jobs_[j.rec.id] = std::move(job);
  for (uint32_t i = 0; i < n; ++i) {
    TaskRecord& t = j.tasks[i];
    if (j.failing || j.ended) break;
    if (t.state == TaskState::kCreated && j.waiting[i] == 0) {
      MakeReady(j, i, now, fx);
    } else if (t.state == TaskState::kPending) {
      if (t.not_before > now) {
        delayed_.insert({t.not_before, TaskKey{j.rec.id, i}});
      } else {
        ready_[j.spec.tasks[i].queue].push_back(TaskKey{j.rec.id, i});
      }
    }
  }
  FinishIfDone(j, now, fx);
}

void Plan::AddJob(JobRecord job, JobSpec spec, std::vector<TaskRecord> tasks,
                  TimeMs now, Effects& fx) {
  auto j = std::make_unique<Job>();
  j->rec = std::move(job);
  j->spec = std::move(spec);
  j->tasks = std::move(tasks);
  Admit(std::move(j), now, fx);
}

void Plan::RecoverJob(JobRecord job, JobSpec spec,
                      std::vector<TaskRecord> tasks, TimeMs now, Effects& fx) {
  auto j = std::make_unique<Job>();
  j->rec = std::move(job);
  j->spec = std::move(spec);
  j->tasks = std::move(tasks);
  for (const TaskRecord& t : j->tasks) {
    if (t.state == TaskState::kScheduled || t.state == TaskState::kRunning) {
      orphans_[AttemptRef{t.job_id, t.index, t.attempts}] =
          now + options_.adopt_grace.count();
    }
  }
  Admit(std::move(j), now, fx);
}

void Plan::FailUnloadable(JobRecord job, std::vector<TaskRecord> tasks,
                          const std::string& error, TimeMs now, Effects& fx) {
  for (TaskRecord& t : tasks) {
    if (IsTerminal(t.state)) continue;
    t.state = TaskState::kFailed;
    t.error = error;
    t.finished_at = now;
    fx.tasks.push_back(t);
  }
  job.state = JobState::kFailed;
  job.error = error;
  job.finished_at = now;
  fx.jobs.push_back(std::move(job));
}

namespace {

ExpressionContext ContextFor(const JobRecord& rec, const JobSpec& spec,
                             const std::map<std::string, std::string>& vars,
                             bool with_secrets) {
  ExpressionContext ctx;
  ctx.inputs = rec.inputs;
  ctx.tasks = vars;
  if (with_secrets) ctx.secrets = spec.secrets;
  ctx.job_id = rec.id;
  ctx.job_name = rec.name;
  return ctx;
}

// Evaluates every template of a task into a TaskRun. Pre and post tasks
// whose `if` is false are left out of it; their names go to `skipped`.
Result<TaskRun> Resolve(const TaskSpec& spec, const ExpressionContext& plain,
                        const ExpressionContext& with_secrets,
                        std::vector<std::string>* skipped) {
  TaskRun run;
  run.task_name = spec.name;
  auto render = [&](const std::string& what, const std::string& text,
                    const ExpressionContext& ctx) -> Result<std::string> {
    auto r = RenderTemplate(text, ctx);
    if (!r.ok()) {
      return Status::InvalidArgument("in " + what + ": " +
                                     r.status().message());
    }
    return r;
  };
  auto image = render("image", spec.image, plain);
  if (!image.ok()) return image.status();
  run.image = *image;
  auto script = render("run", spec.run, plain);
  if (!script.ok()) return script.status();
  run.run = *script;
  for (const auto& c : spec.cmd) {
    auto r = render("cmd", c, plain);
    if (!r.ok()) return r.status();
    run.cmd.push_back(*r);
  }
  run.entrypoint = spec.entrypoint;
  for (const auto& [k, v] : spec.env) {
    auto r = render("env " + k, v, with_secrets);
    if (!r.ok()) return r.status();
    run.env[k] = *r;
  }
  run.workdir = spec.workdir;
  run.user = spec.user;
  run.volumes = spec.volumes;
  run.network = spec.network;
  run.timeout = spec.timeout.value_or(Millis(0));
  run.cpus = spec.limits.cpus;
  run.memory_bytes = spec.limits.memory_bytes;
  run.pids = spec.limits.pids;
  run.cap_add = spec.cap_add;
  // A pre or post task takes `if` like any task; the runtimes know nothing
  // of conditions, so a false one is decided here, at dispatch.
  auto hooks = [&](const std::vector<TaskSpec>& specs, const char* role,
                   std::vector<TaskRun>& out) -> Status {
    for (const auto& p : specs) {
      const std::string what = std::string(role) + " task '" + p.name + "'";
      if (!p.if_expr.empty()) {
        auto cond = EvaluateCondition(p.if_expr, plain);
        if (!cond.ok()) {
          return Status::InvalidArgument(what +
                                         " in if: " + cond.status().message());
        }
        if (!*cond) {
          skipped->push_back(what);
          continue;
        }
      }
      auto r = Resolve(p, plain, with_secrets, skipped);
      if (!r.ok()) {
        return Status::InvalidArgument(what + " " + r.status().message());
      }
      out.push_back(std::move(*r));
    }
    return Status::Ok();
  };
  if (Status s = hooks(spec.pre, "pre", run.pre); !s.ok()) return s;
  if (Status s = hooks(spec.post, "post", run.post); !s.ok()) return s;
  return run;
}

}  // namespace

void Plan::MakeReady(Job& job, uint32_t index, TimeMs now, Effects& fx) {
  TaskRecord& t = job.tasks[index];
  const TaskSpec& spec = job.spec.tasks[index];
  if (!spec.if_expr.empty()) {
    auto cond = EvaluateCondition(
        spec.if_expr, ContextFor(job.rec, job.spec, job.vars, false));
    if (!cond.ok()) {
      FailTask(job, index, "in if: " + cond.status().message(), now, fx);
      return;
    }
    if (!*cond) {
      t.state = TaskState::kSkipped;
      t.finished_at = now;
      fx.tasks.push_back(t);
      OnTaskDone(job, index, now, fx);
      return;
    }
  }
  t.state = TaskState::kPending;
  fx.tasks.push_back(t);
  ready_[spec.queue].push_back(TaskKey{job.rec.id, index});
}

void Plan::OnTaskDone(Job& job, uint32_t index, TimeMs now, Effects& fx) {
  if (!job.failing) {
    for (uint32_t d : job.dependents[index]) {
      if (job.waiting[d] > 0 && --job.waiting[d] == 0 &&
          job.tasks[d].state == TaskState::kCreated) {
        MakeReady(job, d, now, fx);
        if (job.failing || job.ended) break;
      }
    }
  }
  FinishIfDone(job, now, fx);
}

void Plan::FinishIfDone(Job& job, TimeMs now, Effects& fx) {
  if (job.ended) return;
  while (job.final_prefix < job.tasks.size() &&
         IsTerminal(job.tasks[job.final_prefix].state)) {
    ++job.final_prefix;
  }
  for (size_t i = job.final_prefix; i < job.tasks.size(); ++i) {
    const TaskRecord& t = job.tasks[i];
    if (!IsTerminal(t.state)) {
      // A failing job waits only for attempts already out on workers.
      if (!job.failing || t.state == TaskState::kScheduled ||
          t.state == TaskState::kRunning) {
        return;
      }
    }
  }
  if (job.failing) {
    for (TaskRecord& t : job.tasks) {
      if (IsTerminal(t.state)) continue;
      t.state = TaskState::kCancelled;
      t.finished_at = now;
      fx.tasks.push_back(t);
    }
  }
  if (job.rec.state == JobState::kPending && !job.failing) {
    // Every task skipped: the job still passes through RUNNING.
    job.rec.state = JobState::kRunning;
    job.rec.started_at = now;
    fx.jobs.push_back(job.rec);
  }
  job.rec.state = job.failing ? JobState::kFailed : JobState::kCompleted;
  job.rec.finished_at = now;
  fx.jobs.push_back(job.rec);
  job.ended = true;
  auto it = jobs_.find(job.rec.id);
  ended_.push_back(std::move(it->second));
  jobs_.erase(it);
}

void Plan::FailTask(Job& job, uint32_t index, const std::string& error,
                    TimeMs now, Effects& fx) {
  TaskRecord& t = job.tasks[index];
  t.state = TaskState::kFailed;
  t.error = Redact(job, error);
  t.finished_at = now;
  fx.tasks.push_back(t);
  if (!job.failing) {
    job.failing = true;
    job.rec.error = "task '" + t.name + "' failed: " + t.error;
  }
  FinishIfDone(job, now, fx);
}

void Plan::Requeue(Job& job, uint32_t index, const std::string& why, TimeMs now,
                   Effects& fx) {
  TaskRecord& t = job.tasks[index];
  t.state = TaskState::kPending;
  t.not_before = 0;
  if (!t.history.empty()) {
    t.history.back().error = std::string(kRequeuedPrefix) + why;
    t.history.back().finished_at = now;
  }
  fx.tasks.push_back(t);
  if (!job.failing) {
    ready_[job.spec.tasks[index].queue].push_front(TaskKey{job.rec.id, index});
  } else {
    FinishIfDone(job, now, fx);
  }
}

uint32_t Plan::HoldFor(const Worker& w, const std::string& queue,
                       uint32_t slots) const {
  auto p = w.prefetch.find(queue);
  if (p == w.prefetch.end()) return 0;
  auto r = w.run_ms.find(queue);
  // Nothing known yet: one per slot, as many as start when they end.
  if (r == w.run_ms.end()) return std::min(p->second, slots);
  // Tasks shorter than the clock's millisecond: as if of a quarter of one.
  const double fit = static_cast<double>(slots) *
                     static_cast<double>(options_.hold_horizon.count()) /
                     std::max(r->second, 0.25);
  return fit >= p->second ? p->second : static_cast<uint32_t>(fit);
}

void Plan::ReleaseSlot(const std::string& worker, const AttemptRef& ref) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  Worker& w = *it->second;
  auto r = w.running.find(ref);
  if (r == w.running.end()) return;
  if (w.used[r->second.queue] > 0) --w.used[r->second.queue];
  w.running.erase(r);
}

void Plan::Note(Job& job, uint32_t index, const std::string& text,
                Effects& fx) {
  LogChunk c;
  c.task_index = index;
  c.attempt = job.tasks[index].attempts;
  c.stream = 's';
  c.data = text + "\n";
  fx.logs.emplace_back(job.rec.id, std::move(c));
}

Status Plan::OnHello(const Hello& hello, const std::string& key, TimeMs now,
                     Effects& fx) {
  if (auto it = workers_.find(hello.name);
      it != workers_.end() && it->second->alive) {
    const Worker& held = *it->second;
    // The same life (a reconnection) must come with the same key; another
    // life only with the same key, which proves it is the same worker.
    const bool same_worker = held.key == key &&
                             (held.instance == hello.instance || !key.empty());
    if (!same_worker) {
      const int64_t window =
          options_.heartbeat_interval.count() * options_.heartbeat_liveness;
      return Status::AlreadyExists(
          "the worker name '" + hello.name +
          "' is taken by another worker that is still connected (last seen " +
          FormatDuration(Millis(std::max<int64_t>(0, now - held.last_seen))) +
          " ago); give this worker another --name, or, if it is the same "
          "worker restarted, it is let in once the earlier one is declared "
          "dead (within " +
          FormatDuration(Millis(window)) + ")");
    }
  }
  auto& slot = workers_[hello.name];
  if (!slot) {
    slot = std::make_unique<Worker>();
    slot->name = hello.name;
  }
  Worker& w = *slot;
  if (!w.instance.empty() && w.instance != hello.instance && w.alive) {
    // The worker restarted: what its earlier life was running is lost.
    DeclareDead(w, now, fx);
  }
  const bool same_life = w.instance == hello.instance && w.alive;
  w.instance = hello.instance;
  w.key = key;
  w.slots = hello.queues;
  w.prefetch = hello.prefetch;
  w.policy = hello.policy;
  w.runtimes =
      std::set<std::string>(hello.runtimes.begin(), hello.runtimes.end());
  w.alive = true;
  w.state = "ready";
  w.last_seen = now;
  if (!same_life) {
    w.running.clear();
    w.used.clear();
  }
  Welcome welcome;
  welcome.scheduler = options_.instance;
  welcome.heartbeat_interval_ms =
      static_cast<uint32_t>(options_.heartbeat_interval.count());
  for (const AttemptRef& ref : hello.running) {
    Job* job = nullptr;
    TaskRecord* t = FindAttempt(ref, &job);
    if (t == nullptr || t->worker != hello.name) {
      welcome.abandon.push_back(ref);
      // Until it has stopped it still takes a slot there.
      Job* owner = FindJob(ref.job_id);
      if (owner != nullptr && ref.task < owner->spec.tasks.size() &&
          !w.running.count(ref)) {
        const std::string& queue = owner->spec.tasks[ref.task].queue;
        w.running[ref] = Worker::Held{queue, now};
        ++w.used[queue];
      }
      continue;
    }
    orphans_.erase(ref);
    if (!w.running.count(ref)) {
      const std::string& queue = job->spec.tasks[ref.task].queue;
      w.running[ref] = Worker::Held{queue, now};
      ++w.used[queue];
    }
  }
  fx.messages.emplace_back(hello.name, Encode(welcome));
  return Status::Ok();
}

void Plan::OnHeartbeat(const WorkerHeartbeat& hb, const std::string& key,
                       TimeMs now, Effects& fx) {
  auto it = workers_.find(hb.name);
  // Another key's heartbeat for this name: not the worker's, and not
  // answered either.
  if (it != workers_.end() && it->second->key != key) return;
  if (it == workers_.end() || !it->second->alive ||
      it->second->instance != hb.instance) {
    // Unknown to this scheduler (it restarted), declared dead, or a new
    // life of the worker: ask for a hello, at most once an interval.
    TimeMs& last = announced_[hb.name];
    if (now - last >= options_.heartbeat_interval.count()) {
      last = now;
      fx.messages.emplace_back(hb.name, Encode(Announce{}));
    }
    return;
  }
  Worker& w = *it->second;
  w.last_seen = now;
  if (hb.state == "ready" || hb.state == "degraded" || hb.state == "draining") {
    w.state = hb.state;
  }
  // An attempt assigned here a while ago that the worker does not hold:
  // the assignment was lost on the way (e.g. a reconnect). Heartbeats
  // travel apart from assignments, so allow two intervals first.
  std::set<AttemptRef> held(hb.attempts.begin(), hb.attempts.end());
  const TimeMs cutoff = now - 2 * options_.heartbeat_interval.count();
  std::vector<AttemptRef> lost;
  for (const auto& [ref, h] : w.running) {
    if (h.since < cutoff && !held.count(ref)) lost.push_back(ref);
  }
  for (const AttemptRef& ref : lost) {
    ReleaseSlot(w.name, ref);
    Job* job = nullptr;
    TaskRecord* t = FindAttempt(ref, &job);
    if (t == nullptr || t->worker != w.name) continue;
    Note(*job, ref.task,
         "attempt " + std::to_string(ref.attempt) + " never reached worker " +
             w.name + "; requeued",
         fx);
    Requeue(*job, ref.task, "never reached worker " + w.name, now, fx);
  }
}

void Plan::OnStarted(const std::string& worker, const Started& m, TimeMs now,
                     Effects& fx) {
  auto wit = workers_.find(worker);
  if (wit != workers_.end() && wit->second->alive) {
    wit->second->last_seen = now;
  }
  Job* job = nullptr;
  TaskRecord* t = FindAttempt(m.ref, &job);
  if (t == nullptr || t->worker != worker ||
      t->state != TaskState::kScheduled) {
    return;
  }
  t->state = TaskState::kRunning;
  const TimeMs at = m.at_ms > 0 ? m.at_ms : now;
  if (t->started_at == 0) t->started_at = at;
  if (!t->history.empty()) t->history.back().started_at = at;
  fx.tasks.push_back(*t);
  if (job->rec.state == JobState::kPending) {
    job->rec.state = JobState::kRunning;
    job->rec.started_at = at;
    fx.jobs.push_back(job->rec);
  }
}

void Plan::OnLog(const std::string& worker, const LogData& m, Effects& fx) {
  Job* job = nullptr;
  TaskRecord* t = FindAttempt(m.ref, &job);
  if (t == nullptr || t->worker != worker) return;
  // stdout, stderr, or a note of the worker's runtime (an image pull, a
  // container stopped), which `drover logs` shows as drover's own.
  if (m.stream != "o" && m.stream != "e" && m.stream != "s") return;
  size_t& used = job->log_bytes[m.ref.task];
  if (used >= options_.max_log_bytes_per_attempt) return;
  LogChunk c;
  c.task_index = m.ref.task;
  c.attempt = m.ref.attempt;
  c.stream = m.stream[0];
  c.data = Redact(*job, m.data);
  c.data.resize(
      std::min(c.data.size(), options_.max_log_bytes_per_attempt - used));
  used += c.data.size();
  if (used >= options_.max_log_bytes_per_attempt) {
    c.data += "\n[drover: log limit reached; further output dropped]\n";
  }
  fx.logs.emplace_back(m.ref.job_id, std::move(c));
}

Millis Plan::Backoff(const RetryPolicy& p, uint32_t failures) {
  double d = static_cast<double>(p.initial_delay.count()) *
             std::pow(std::max(1.0, p.scaling),
                      static_cast<double>(failures > 0 ? failures - 1 : 0));
  d = std::min(d, static_cast<double>(p.max_delay.count()));
  // Equal jitter: half the delay fixed, half random, so retries of many
  // tasks that failed together spread out.
  std::uniform_real_distribution<double> half(0.0, d / 2);
  return Millis(static_cast<int64_t>(d / 2 + half(rng_)));
}

void Plan::OnResult(const std::string& worker, const TaskResult& m, TimeMs now,
                    Effects& fx) {
  if (auto wit = workers_.find(worker);
      wit != workers_.end() && m.started_at_ms != 0 &&
      m.finished_at_ms >= m.started_at_ms) {
    Worker& w = *wit->second;
    if (auto r = w.running.find(m.ref); r != w.running.end()) {
      // An eighth of the newest: a few long tasks among short ones soon
      // stop the holding, and it resumes as soon after them.
      const double ran =
          static_cast<double>(m.finished_at_ms - m.started_at_ms);
      auto [mean, first] = w.run_ms.try_emplace(r->second.queue, ran);
      if (!first) mean->second += (ran - mean->second) / 8;
    }
  }
  ReleaseSlot(worker, m.ref);
  ResultAck ack;
  ack.ref = m.ref;
  fx.messages.emplace_back(worker, Encode(ack));
  auto wit = workers_.find(worker);
  if (wit != workers_.end() && wit->second->alive) {
    wit->second->last_seen = now;
  }
  Job* job = nullptr;
  TaskRecord* t = FindAttempt(m.ref, &job);
  if (t == nullptr || t->worker != worker) return;  // fenced off: discard
  orphans_.erase(m.ref);
  const uint32_t index = m.ref.task;
  const TaskSpec& spec = job->spec.tasks[index];
  if (t->started_at == 0)
    t->started_at = m.started_at_ms ? m.started_at_ms : now;
  t->exit_code = m.exit_code;
  t->output = Redact(*job, m.output);
  t->finished_at = m.finished_at_ms ? m.finished_at_ms : now;
  AttemptRecord* h = t->history.empty() ? nullptr : &t->history.back();
  if (h != nullptr) {
    if (h->started_at == 0) h->started_at = t->started_at;
    h->finished_at = t->finished_at;
    h->exit_code = m.exit_code;
  }
  if (job->rec.state == JobState::kPending) {
    job->rec.state = JobState::kRunning;
    job->rec.started_at = t->started_at;
    fx.jobs.push_back(job->rec);
  }
  const bool success = m.error.empty() && m.exit_code == 0;
  if (success) {
    t->state = TaskState::kCompleted;
    t->error.clear();
    fx.tasks.push_back(*t);
    if (!spec.var.empty()) job->vars[spec.var] = t->output;
    OnTaskDone(*job, index, now, fx);
    return;
  }
  std::string error = m.error.empty()
                          ? "exited with code " + std::to_string(m.exit_code)
                          : m.error;
  error = Redact(*job, error);
  if (h != nullptr) h->error = error;
  t->error = error;
  if (m.infrastructure && spec.runtime == RuntimeKind::kDocker &&
      wit != workers_.end() && wit->second->alive) {
    // Its Docker daemon failed it: until the worker's next heartbeat says
    // otherwise, send it no Docker tasks, which would fail the same way at
    // once and come straight back, in a loop.
    wit->second->state = "degraded";
  }
  if (m.infrastructure && !job->failing) {
    Note(*job, index,
         "attempt " + std::to_string(m.ref.attempt) + " could not run on " +
             worker + ": " + error + "; requeued",
         fx);
    Requeue(*job, index, error, now, fx);
    return;
  }
  ++job->failures[index];
  if (!job->failing && job->failures[index] <= spec.retry.limit) {
    const Millis delay = Backoff(spec.retry, job->failures[index]);
    t->state = TaskState::kPending;
    t->not_before = now + delay.count();
    fx.tasks.push_back(*t);
    Note(*job, index,
         "attempt " + std::to_string(m.ref.attempt) + " failed: " + error +
             "; retrying in " + FormatDuration(delay),
         fx);
    delayed_.insert({t->not_before, TaskKey{job->rec.id, index}});
    return;
  }
  FailTask(*job, index, error, now, fx);
}

void Plan::OnReject(const std::string& worker, const Reject& m, TimeMs now,
                    Effects& fx) {
  ReleaseSlot(worker, m.ref);
  Job* job = nullptr;
  TaskRecord* t = FindAttempt(m.ref, &job);
  if (t == nullptr || t->worker != worker) return;
  Requeue(*job, m.ref.task, "worker " + worker + " declined: " + m.reason, now,
          fx);
  // Not straight back to the same worker: wait an interval, by which time
  // its heartbeat has corrected what the scheduler believed of it.
  TaskRecord& again = job->tasks[m.ref.task];
  again.not_before = now + options_.heartbeat_interval.count();
  auto& q = ready_[job->spec.tasks[m.ref.task].queue];
  std::erase_if(q, [&](const TaskKey& k) {
    return k.job_id == m.ref.job_id && k.index == m.ref.task;
  });
  delayed_.insert({again.not_before, TaskKey{m.ref.job_id, m.ref.task}});
}

void Plan::OnGoodbye(const std::string& worker, const Goodbye& m, TimeMs now,
                     Effects& fx) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  for (const AttemptRef& ref : m.returned) {
    ReleaseSlot(worker, ref);
    Job* job = nullptr;
    TaskRecord* t = FindAttempt(ref, &job);
    if (t != nullptr && t->worker == worker) {
      Requeue(*job, ref.task, "worker " + worker + " shut down", now, fx);
    }
  }
  DeclareDead(*it->second, now, fx);
  it->second->state = "gone";
}

void Plan::Revoke(const std::string& worker, TimeMs now, Effects& fx) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  DeclareDead(*it->second, now, fx, "lost its key");
  it->second->state = "revoked";
}

void Plan::DeclareDead(Worker& w, TimeMs now, Effects& fx,
                       std::string_view why) {
  w.alive = false;
  w.state = "dead";
  auto running = std::move(w.running);
  w.running.clear();
  w.used.clear();
  for (const auto& [ref, queue] : running) {
    Job* job = nullptr;
    TaskRecord* t = FindAttempt(ref, &job);
    if (t == nullptr || t->worker != w.name) continue;
    Note(*job, ref.task,
         "worker " + w.name + " " + std::string(why) + " during attempt " +
             std::to_string(ref.attempt) + "; requeued",
         fx);
    Requeue(*job, ref.task, "worker " + w.name + " " + std::string(why), now,
            fx);
  }
}

Status Plan::Cancel(const std::string& job_id, TimeMs now, Effects& fx) {
  Job* job = FindJob(job_id);
  if (job == nullptr) return Status::NotFound("job " + job_id);
  for (TaskRecord& t : job->tasks) {
    if (IsTerminal(t.state)) continue;
    if (t.state == TaskState::kScheduled || t.state == TaskState::kRunning) {
      Stop stop;
      stop.ref = AttemptRef{t.job_id, t.index, t.attempts};
      stop.reason = "job cancelled";
      fx.messages.emplace_back(t.worker, Encode(stop));
      if (!t.history.empty()) {
        t.history.back().error = "cancelled";
        t.history.back().finished_at = now;
      }
    }
    t.state = TaskState::kCancelled;
    t.error = "cancelled";
    t.finished_at = now;
    fx.tasks.push_back(t);
  }
  job->rec.state = JobState::kCancelled;
  job->rec.finished_at = now;
  if (job->rec.error.empty()) job->rec.error = "cancelled";
  fx.jobs.push_back(job->rec);
  jobs_.erase(job_id);
  return Status::Ok();
}

void Plan::Tick(TimeMs now, Effects& fx) {
  ended_.clear();  // no call chain holds them any more
  const int64_t window =
      options_.heartbeat_interval.count() * options_.heartbeat_liveness;
  for (auto& [name, w] : workers_) {
    if (w->alive && now - w->last_seen > window) DeclareDead(*w, now, fx);
  }
  while (!delayed_.empty() && delayed_.begin()->first <= now) {
    TaskKey key = delayed_.begin()->second;
    delayed_.erase(delayed_.begin());
    Job* job = FindJob(key.job_id);
    if (job == nullptr || job->tasks[key.index].state != TaskState::kPending) {
      continue;
    }
    ready_[job->spec.tasks[key.index].queue].push_back(key);
  }
  for (auto it = orphans_.begin(); it != orphans_.end();) {
    if (it->second > now) {
      ++it;
      continue;
    }
    AttemptRef ref = it->first;
    it = orphans_.erase(it);
    Job* job = nullptr;
    TaskRecord* t = FindAttempt(ref, &job);
    if (t == nullptr) continue;
    // A live worker that has it would have claimed it in its hello.
    auto wit = workers_.find(t->worker);
    if (wit != workers_.end() && wit->second->alive &&
        wit->second->running.count(ref)) {
      continue;
    }
    Requeue(*job, ref.task,
            "its worker " + t->worker + " did not return after a restart", now,
            fx);
  }
  Dispatch(now, fx);
}

bool Plan::TryAssign(Job& job, uint32_t index, TimeMs now, Effects& fx) {
  const TaskSpec& spec = job.spec.tasks[index];
  const std::string runtime(RuntimeName(spec.runtime));
  Worker* best = nullptr;
  uint32_t best_slots = 0;  // free slots
  uint32_t best_free = 0;   // free slots and room to hold (prefetch)
  Status refused;           // the first policy that forbids it
  bool allowed = false;     // some worker that could run it allows it
  for (auto& [name, w] : workers_) {
    if (!w->alive || w->state == "draining") continue;
    if (w->state == "degraded" && spec.runtime == RuntimeKind::kDocker) {
      continue;
    }
    if (!w->runtimes.count(runtime)) continue;
    auto s = w->slots.find(spec.queue);
    if (s == w->slots.end()) continue;
    if (spec.runtime == RuntimeKind::kDocker && w->policy) {
      if (Status st = CheckTask(*w->policy, spec); !st.ok()) {
        if (refused.ok()) {
          refused = Status(st.code(), "worker " + name + ": " + st.message());
        }
        continue;
      }
    }
    allowed = true;
    const uint32_t used = w->used[spec.queue];
    const uint32_t room = s->second + HoldFor(*w, spec.queue, s->second);
    if (used >= room) continue;
    // A free slot anywhere first; an attempt is held on a busy worker only
    // when no worker has a free slot.
    const uint32_t slots = used < s->second ? s->second - used : 0;
    const uint32_t free = room - used;
    if (best == nullptr || slots > best_slots ||
        (slots == best_slots && free > best_free)) {
      best = w.get();
      best_slots = slots;
      best_free = free;
    }
  }
  if (best == nullptr) {
    if (!allowed && !refused.ok()) {
      // Every worker that serves its queue forbids it: it would wait for
      // ever. (The submission is refused for this, when it is seen then.)
      FailTask(job, index,
               "no connected worker's policy allows it: " + refused.message(),
               now, fx);
      return true;
    }
    return false;
  }

  std::vector<std::string> skipped;
  auto run = Resolve(spec, ContextFor(job.rec, job.spec, job.vars, false),
                     ContextFor(job.rec, job.spec, job.vars, true), &skipped);
  if (!run.ok()) {
    FailTask(job, index, "expression error " + run.status().message(), now, fx);
    return true;
  }
  TaskRecord& t = job.tasks[index];
  t.attempts += 1;
  t.state = TaskState::kScheduled;
  t.worker = best->name;
  t.not_before = 0;
  AttemptRecord h;
  h.number = t.attempts;
  h.worker = best->name;
  t.history.push_back(h);
  fx.tasks.push_back(t);
  job.log_bytes[index] = 0;
  for (const std::string& what : skipped) {
    Note(job, index, what + " skipped: its condition is false", fx);
  }

  Assign a;
  a.ref = AttemptRef{job.rec.id, index, t.attempts};
  a.queue = spec.queue;
  a.runtime = runtime;
  run->job_id = job.rec.id;
  run->attempt = t.attempts;
  a.task = ToWire(*run);
  a.redact = Secrets(job.rec.id);
  best->running[a.ref] = Worker::Held{spec.queue, now};
  ++best->used[spec.queue];
  fx.messages.emplace_back(best->name, Encode(a));
  return true;
}

void Plan::Dispatch(TimeMs now, Effects& fx) {
  for (auto& [queue, keys] : ready_) {
    std::deque<TaskKey> parked;  // no worker can take these right now
    while (!keys.empty()) {
      TaskKey key = std::move(keys.front());
      keys.pop_front();
      Job* job = FindJob(key.job_id);
      if (job == nullptr || job->failing) continue;
      if (job->tasks[key.index].state != TaskState::kPending) continue;
      if (!TryAssign(*job, key.index, now, fx)) {
        parked.push_back(std::move(key));
        // Tasks of this queue that need another runtime may still fit, but
        // stop scanning once many are parked: a full queue stays O(1).
        if (parked.size() >= 64) break;
      }
    }
    keys.insert(keys.begin(), parked.begin(), parked.end());
  }
}

std::optional<TimeMs> Plan::NextDeadline() const {
  std::optional<TimeMs> next;
  auto take = [&](TimeMs t) {
    if (!next || t < *next) next = t;
  };
  const int64_t window =
      options_.heartbeat_interval.count() * options_.heartbeat_liveness;
  for (const auto& [name, w] : workers_) {
    if (w->alive) take(w->last_seen + window + 1);
  }
  if (!delayed_.empty()) take(delayed_.begin()->first);
  for (const auto& [ref, until] : orphans_) take(until);
  return next;
}

std::string Plan::PolicyRefusal(const TaskSpec& task) const {
  if (task.runtime != RuntimeKind::kDocker) return "";
  std::string first;
  for (const auto& [name, w] : workers_) {
    if (!w->alive || !w->runtimes.count("docker") ||
        !w->slots.count(task.queue)) {
      continue;
    }
    if (!w->policy) return "";
    Status st = CheckTask(*w->policy, task);
    if (st.ok()) return "";
    if (first.empty()) first = "worker " + name + ": " + st.message();
  }
  return first;
}

size_t Plan::live_workers() const {
  size_t n = 0;
  for (const auto& [name, w] : workers_) n += w->alive ? 1 : 0;
  return n;
}

std::vector<WorkerView> Plan::Workers() const {
  std::vector<WorkerView> out;
  for (const auto& [name, w] : workers_) {
    WorkerView v;
    v.name = name;
    v.state = w->state;
    v.queues = w->slots;
    v.runtimes.assign(w->runtimes.begin(), w->runtimes.end());
    // The worker starts what it holds as soon as a slot frees, so
    // attempts beyond a queue's slots are the held ones.
    for (const auto& [queue, used] : w->used) {
      auto s = w->slots.find(queue);
      const uint32_t slots = s == w->slots.end() ? 0 : s->second;
      v.running += std::min(used, slots);
      v.held += used > slots ? used - slots : 0;
    }
    if (w->last_seen > 0) v.last_heartbeat = FormatTime(w->last_seen);
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace drover
