#include "worker.h"

#include "drover/policy.h"
#include "drover/text.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>


namespace drover {
namespace {

// Sends a task's output to the worker loop as LogData frames, masking
// secrets. A secret split across two writes is caught by holding back the
// tail that could be the start of a secret, until the next write or the
// end. Only such a tail is held: holding a fixed length would cut every
// line and interleave stdout and stderr mid-line.
class ForwardingSink final : public LogSink {
 public:
  // At most `max_bytes` of stdout and stderr are passed on; then a line
  // says so, and the rest is dropped while the task goes on.
  ForwardingSink(AttemptRef ref, std::vector<std::string> secrets,
                 int64_t max_bytes, std::function<void(std::string)> post)
      : ref_(std::move(ref)), secrets_(std::move(secrets)),
        left_(max_bytes), post_(std::move(post)) {}
  void Write(char stream, std::string_view data) override {
    std::lock_guard lock(mu_);
    if (stream != 's') {
      if (left_ <= 0) return;
      if (static_cast<int64_t>(data.size()) >= left_) {
        data = data.substr(0, static_cast<size_t>(left_));
        left_ = 0;
        WriteLocked(stream, data);
        Emit('s', "output over max_log_bytes (" +
                      std::to_string(max_bytes_) +
                      " bytes); the rest of it is dropped\n");
        return;
      }
      left_ -= static_cast<int64_t>(data.size());
    }
    WriteLocked(stream, data);
  }
  void Flush() {
    std::lock_guard lock(mu_);
    for (auto& [stream, pending] : pending_) {
      if (!pending.empty()) Emit(stream, RedactSecrets(std::move(pending), secrets_));
      pending.clear();
    }
  }

 private:
  void WriteLocked(char stream, std::string_view data) {
    std::string& pending = pending_[stream];
    pending.append(data);
    std::string masked = RedactSecrets(std::move(pending), secrets_);
    const size_t keep = PartialSecretTail(masked);
    pending = masked.substr(masked.size() - keep);
    masked.resize(masked.size() - keep);
    Emit(stream, std::move(masked));
  }
  void Emit(char stream, std::string data) {
    if (data.empty()) return;
    LogData m;
    m.ref = ref_;
    m.stream = std::string(1, stream);
    m.data = std::move(data);
    post_(Encode(m));
  }
  // Length of the longest tail of `text` that is the start of a secret.
  size_t PartialSecretTail(std::string_view text) const {
    size_t best = 0;
    for (const std::string& secret : secrets_) {
      if (secret.empty()) continue;
      for (size_t n = std::min(secret.size() - 1, text.size()); n > best; --n) {
        if (text.substr(text.size() - n) ==
            std::string_view(secret).substr(0, n)) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
  AttemptRef ref_;
  std::vector<std::string> secrets_;
  int64_t left_;  // bytes of output still passed on
  const int64_t max_bytes_ = left_;
  std::function<void(std::string)> post_;
  std::mutex mu_;
  std::map<char, std::string> pending_;
};

}  // namespace

struct Worker::Attempt {
  AttemptRef ref;
  std::string queue;
  std::string task_name;
  std::stop_source stop;  // asks the runtime to stop the attempt
  TaskThreads::JobId job = 0;
  std::atomic<TimeMs> started_at{0};  // set by its thread; 0: waits
};

Worker::Worker(WorkerOptions options,
               std::map<std::string, std::unique_ptr<Runtime>> runtimes)
    : options_(std::move(options)),
      runtimes_(std::move(runtimes)),
      instance_(RandomHex(16)),
      ctx_(1),
      dealer_(ctx_, zmq::socket_type::dealer),
      heartbeat_(ctx_, zmq::socket_type::xsub),
      monitor_(ctx_, dealer_,
               ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                   ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL),
      wait_({&dealer_, &heartbeat_, &monitor_.events()}) {
  for (const auto& [queue, slots] : options_.queues) {
    hold_threshold_[queue].store(1);
  }
}

Worker::~Worker() {
  for (auto& [ref, a] : running_) {
    threads_.Cancel(a->job);  // one waiting for a slot never starts
    a->stop.request_stop();
  }
  threads_.JoinAll();
  running_.clear();
  if (event_fd_ >= 0) close(event_fd_);
}

Status Worker::Start() {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) return Status::Internal("eventfd failed");
  try {
    dealer_.set(zmq::sockopt::linger, 0);
    dealer_.set(zmq::sockopt::maxmsgsize,
                4 * static_cast<int64_t>(kMaxFrameBytes));
    heartbeat_.set(zmq::sockopt::linger, 0);
    if (options_.keys) {
      UseClientKeys(dealer_, *options_.keys);
      UseClientKeys(heartbeat_, *options_.keys);
    }
    dealer_.connect(options_.tasks);
    heartbeat_.connect(options_.heartbeat);
    // XSUB: subscribe to everything the scheduler publishes.
    const char subscribe_all = 1;
    heartbeat_.send(zmq::buffer(&subscribe_all, 1), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("cannot connect to the scheduler at " +
                               options_.tasks + " / " + options_.heartbeat +
                               ": " + e.what());
  }
  std::string queues;
  for (const auto& [q, n] : options_.queues) {
    queues += (queues.empty() ? "" : ", ") + q + ":" + std::to_string(n);
  }
  std::string rts;
  for (const auto& [name, r] : runtimes_) rts += (rts.empty() ? "" : ", ") + name;
  spdlog::info("worker {} connecting to {}: queues {}; runtimes {}",
               options_.name, options_.tasks, queues, rts);
  SayHello();
  return Status::Ok();
}

void Worker::Send(const std::string& body) {
  wait_.Dirty(kDealerSocket);
  try {
    if (!dealer_.send(zmq::buffer(body), zmq::send_flags::dontwait)) {
      // Before a welcome there is often no connection at all (the
      // scheduler is down, or refuses this worker): hellos are sent again.
      spdlog::log(welcomed_ ? spdlog::level::warn : spdlog::level::debug,
                  "scheduler channel full; message dropped (kept results "
                  "are sent again)");
    }
  } catch (const zmq::error_t& e) {
    spdlog::warn("send to scheduler failed: {}", e.what());
  }
}

void Worker::SayHello() {
  Hello h;
  h.name = options_.name;
  h.instance = instance_;
  h.queues = options_.queues;
  for (const auto& [name, r] : runtimes_) h.runtimes.push_back(name);
  for (const auto& [q, n] : options_.queues) {
    h.prefetch[q] = options_.PrefetchFor(n);
  }
  for (const auto& [ref, a] : running_) h.running.push_back(ref);
  h.policy = options_.policy;
  welcomed_ = false;
  last_hello_ = clock_.Now();
  Send(Encode(h));
}

std::string Worker::State() {
  if (stop_.load()) return "draining";
  auto docker = runtimes_.find("docker");
  if (docker != runtimes_.end() && !docker->second->Healthy()) {
    return "degraded";
  }
  return "ready";
}

void Worker::SendHeartbeat() {
  WorkerHeartbeat hb;
  hb.name = options_.name;
  hb.instance = instance_;
  hb.state = State();
  if (hb.state != last_state_) {
    // One line per change, not per heartbeat: an operator sees when Docker
    // went away and when it came back.
    if (hb.state == "degraded") {
      spdlog::warn("worker {} degraded: the Docker daemon does not answer; "
                   "no Docker tasks until it does", options_.name);
    } else if (last_state_ == "degraded") {
      spdlog::info("worker {} ready: the Docker daemon answers again",
                   options_.name);
    }
    last_state_ = hb.state;
  }
  hb.running = static_cast<uint32_t>(running_.size());
  for (const auto& [ref, a] : running_) hb.attempts.push_back(ref);
  for (const auto& [ref, f] : unacked_) hb.attempts.push_back(ref);
  hb.at_ms = clock_.Now();
  wait_.Dirty(kHeartbeatSocket);
  try {
    heartbeat_.send(zmq::buffer(Encode(hb)), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::warn("heartbeat not sent: {}", e.what());
  }
}

void Worker::Post(Outgoing message, bool wake) {
  {
    std::lock_guard lock(mu_);
    outbox_.push_back(std::move(message));
  }
  if (!wake) return;
  const uint64_t one = 1;
  (void)!write(event_fd_, &one, sizeof one);
}

void Worker::DrainOutbox() {
  std::deque<Outgoing> messages;
  {
    std::lock_guard lock(mu_);
    messages.swap(outbox_);
  }
  for (Outgoing& m : messages) {
    switch (m.kind) {
      case Outgoing::Kind::kLog:
        Send(m.frame);
        break;
      case Outgoing::Kind::kResult: {
        // Ended within the hold: the result says when it started.
        held_started_.erase(m.ref);
        // Held since it was posted: the loop may have learnt of it later.
        if (held_results_.empty() || m.at < results_held_since_) {
          results_held_since_ = m.at;
        }
        auto a = running_.find(m.ref);
        held_results_.emplace_back(
            m.ref, a == running_.end() ? "" : a->second->queue);
        unacked_[m.ref] = std::move(m.frame);
        running_.erase(m.ref);  // its thread is done with it
        break;
      }
    }
  }
}

uint32_t Worker::Waiting(const std::string& queue) const {
  auto q = options_.queues.find(queue);
  const uint32_t in_queue = InQueue(queue);
  // Attempts of a queue beyond its slots wait for one.
  return q == options_.queues.end() || in_queue <= q->second
             ? 0
             : in_queue - q->second;
}

bool Worker::MayHoldResults(TimeMs now) {
  if (stop_.load() || now - results_held_since_ >= kResultHold.count()) {
    return false;
  }
  // While half the attempts the scheduler gave a queue to hold still wait,
  // its slots stay busy for a round trip to the scheduler.
  for (const auto& [ref, queue] : held_results_) {
    auto t = hold_threshold_.find(queue);
    if (t == hold_threshold_.end() || Waiting(queue) < t->second.load()) {
      return false;
    }
  }
  return true;
}

void Worker::SetPeakWaiting(const std::string& queue, uint32_t peak) {
  peak_waiting_[queue] = peak;
  auto t = hold_threshold_.find(queue);
  if (t != hold_threshold_.end()) {
    t->second.store(std::max<uint32_t>(1, (peak + 1) / 2));
  }
}

void Worker::SendHeldResults() {
  for (const auto& [ref, queue] : held_results_) {
    auto it = unacked_.find(ref);
    if (it != unacked_.end()) Send(it->second);
    SetPeakWaiting(queue, Waiting(queue));
  }
  held_results_.clear();
}

TimeMs Worker::SendHeldStarted(std::optional<TimeMs> now) {
  TimeMs next = 0;
  for (auto it = held_started_.begin(); it != held_started_.end();) {
    auto a = running_.find(*it);
    if (a == running_.end()) {
      it = held_started_.erase(it);
      continue;
    }
    const TimeMs started_at = a->second->started_at.load();
    // One waiting for a slot is looked at again within the hold.
    const TimeMs due = started_at == 0 ? clock_.Now() + kStartedHold.count()
                                       : started_at + kStartedHold.count();
    if (started_at != 0 && (!now || due <= *now)) {
      spdlog::info("job {} task {} attempt {}: '{}' running", it->job_id,
                   it->task, it->attempt, a->second->task_name);
      Started started;
      started.ref = *it;
      started.at_ms = started_at;
      Send(Encode(started));
      it = held_started_.erase(it);
    } else {
      if (next == 0 || due < next) next = due;
      ++it;
    }
  }
  return next;
}

uint32_t Worker::InQueue(const std::string& queue) const {
  uint32_t n = 0;
  for (const auto& [ref, a] : running_) n += a->queue == queue;
  return n;
}

bool Worker::DropWaiting(const AttemptRef& ref) {
  auto it = running_.find(ref);
  if (it == running_.end() || !threads_.Cancel(it->second->job)) return false;
  running_.erase(it);
  held_started_.erase(ref);
  return true;
}

void Worker::ReportDropped(const AttemptRef& ref, const std::string& why) {
  spdlog::info("job {} task {} attempt {}: dropped before it started: {}",
               ref.job_id, ref.task, ref.attempt, why);
  // As for a stopped attempt: a result, which droverd acknowledges.
  TaskResult result;
  result.ref = ref;
  result.error = "cancelled";
  result.cancelled = true;
  result.finished_at_ms = clock_.Now();
  std::string frame = Encode(result);
  Send(frame);
  unacked_[ref] = std::move(frame);
}

void Worker::ReportRefused(const AttemptRef& ref, const std::string& why) {
  spdlog::warn("job {} task {} attempt {}: refused by this worker's policy: {}",
               ref.job_id, ref.task, ref.attempt, why);
  TaskResult result;
  result.ref = ref;
  result.error = "worker " + options_.name + "'s policy refuses it: " + why;
  result.finished_at_ms = clock_.Now();
  std::string frame = Encode(result);
  Send(frame);
  unacked_[ref] = std::move(frame);
}

void Worker::OnAssign(const Assign& a) {
  auto reject = [&](const std::string& why) {
    spdlog::warn("job {} task {} attempt {}: declined: {}", a.ref.job_id,
                 a.ref.task, a.ref.attempt, why);
    Reject r;
    r.ref = a.ref;
    r.reason = why;
    Send(Encode(r));
  };
  if (stop_.load()) return reject("worker is shutting down");
  auto rt = runtimes_.find(a.runtime);
  if (rt == runtimes_.end()) {
    return reject("runtime '" + a.runtime + "' is not offered here");
  }
  auto q = options_.queues.find(a.queue);
  if (q == options_.queues.end()) {
    return reject("queue '" + a.queue + "' is not served here");
  }
  if (running_.count(a.ref) || unacked_.count(a.ref)) return;  // a duplicate
  if (InQueue(a.queue) >= q->second + options_.PrefetchFor(q->second)) {
    return reject("no free slot on queue " + a.queue);
  }

  TaskRun run = FromWire(a.task);
  if (a.runtime == "docker") {
    // droverd sends only what the policy allows, but checks with the
    // worker's word for it; the worker does not take droverd's.
    if (Status st = CheckTask(options_.policy, run); !st.ok()) {
      return ReportRefused(a.ref, st.message());
    }
  }
  auto attempt = std::make_unique<Attempt>();
  attempt->ref = a.ref;
  attempt->queue = a.queue;
  attempt->task_name = a.task.task_name;
  Attempt* self = attempt.get();  // lives in running_ until its result
  Runtime* runtime = rt->second.get();
  run.job_id = a.ref.job_id;
  run.attempt = a.ref.attempt;
  run.worker = options_.name;
  // The attempt starts when a slot of its queue is free: at once, or when
  // the thread of one that ends takes it. Its `started` report is sent by
  // the loop (SendHeldStarted) kStartedHold after that, if the attempt is
  // still running then, so a short task costs the loop no extra wake-up;
  // its result, which says when it started, replaces it.
  held_started_.insert(a.ref);
  attempt->job = threads_.Run(
      a.queue, q->second,
      [this, self, runtime, run = std::move(run), ref = a.ref, queue = a.queue,
       secrets = a.redact, stop = attempt->stop.get_token()] {
        const TimeMs started_at = clock_.Now();
        self->started_at.store(started_at);
        TaskResult result;
        result.ref = ref;
        result.started_at_ms = started_at;
        ForwardingSink sink(ref, secrets, options_.policy.max_log_bytes,
                            [this, ref](std::string f) {
          Post({Outgoing::Kind::kLog, ref, std::move(f)});
        });
        RunOutcome out;
        try {
          out = runtime->Run(run, sink, stop);
        } catch (const std::exception& e) {
          out.error = std::string("runtime failed: ") + e.what();
          out.infrastructure = true;
        }
        sink.Flush();
        result.finished_at_ms = clock_.Now();
        result.exit_code = out.exit_code;
        result.output = RedactSecrets(out.output, secrets);
        result.error = RedactSecrets(out.error, secrets);
        result.timed_out = out.timed_out;
        result.cancelled = out.cancelled;
        result.infrastructure = out.infrastructure;
        spdlog::info(
            "job {} task {} attempt {}: '{}' finished, exit code {}{}{}",
            ref.job_id, ref.task, ref.attempt, run.task_name, out.exit_code,
            result.error.empty() ? "" : ", error: ", result.error);
        // The loop is woken for a result it will send at once: when fewer
        // attempts of the queue wait than hold its results (the first of
        // the waiting ones starts on this thread next).
        const bool wake = threads_.Waiting(queue) <=
                          hold_threshold_.at(queue).load();
        Post({Outgoing::Kind::kResult, ref, Encode(result),
              result.finished_at_ms},
             wake);
      });
  running_[a.ref] = std::move(attempt);
  if (const uint32_t waiting = Waiting(a.queue);
      waiting > peak_waiting_[a.queue]) {
    SetPeakWaiting(a.queue, waiting);
  }
}

void Worker::OnSchedulerMessage(const std::string& body) {
  auto frame = Frame::Parse(body);
  if (!frame.ok()) {
    spdlog::warn("scheduler message dropped: {}", frame.status().message());
    return;
  }
  const std::string& type = frame->type();
  if (type == Welcome::kType) {
    auto m = frame->As<Welcome>();
    if (!m.ok()) return;
    welcomed_ = true;
    if (!ready_reported_) {
      ready_reported_ = true;
      if (on_ready_) on_ready_();
    }
    // The scheduler judges liveness by its own interval: never beat slower.
    if (m->heartbeat_interval_ms > 0 &&
        std::chrono::milliseconds(m->heartbeat_interval_ms) <
            options_.heartbeat_interval) {
      options_.heartbeat_interval =
          std::chrono::milliseconds(m->heartbeat_interval_ms);
    }
    if (m->scheduler != scheduler_) {
      spdlog::info("connected to scheduler {}", m->scheduler);
    }
    scheduler_ = m->scheduler;
    for (const AttemptRef& ref : m->abandon) {
      if (DropWaiting(ref)) {
        ReportDropped(ref, "given up by the scheduler");
        continue;
      }
      auto it = running_.find(ref);
      if (it == running_.end()) continue;
      spdlog::info("job {} task {} attempt {}: given up by the scheduler; "
                   "stopping it", ref.job_id, ref.task, ref.attempt);
      it->second->stop.request_stop();
    }
    for (const auto& [ref, f] : unacked_) Send(f);
  } else if (type == Assign::kType) {
    auto m = frame->As<Assign>();
    if (!m.ok()) {
      spdlog::warn("{}", m.status().message());
      return;
    }
    OnAssign(*m);
  } else if (type == Stop::kType) {
    auto m = frame->As<Stop>();
    if (!m.ok()) return;
    if (DropWaiting(m->ref)) return ReportDropped(m->ref, m->reason);
    auto it = running_.find(m->ref);
    if (it != running_.end()) {
      spdlog::info("job {} task {} attempt {}: stopping: {}", m->ref.job_id,
                   m->ref.task, m->ref.attempt, m->reason);
      it->second->stop.request_stop();
    }
  } else if (type == Announce::kType) {
    SayHello();
  } else if (type == ResultAck::kType) {
    auto m = frame->As<ResultAck>();
    if (m.ok()) unacked_.erase(m->ref);
  } else if (type == ErrorReply::kType) {
    auto m = frame->As<ErrorReply>();
    if (!m.ok()) return;
    if (m->code == CodeName(Code::kPermissionDenied)) {
      OnRevoked(m->message);
      return;
    }
    if (m->code == CodeName(Code::kAlreadyExists)) {
      // Its hello was refused: it says hello again every second.
      LogRefusal("name", "the scheduler refuses worker " + options_.name +
                             ": " + m->message);
      return;
    }
    spdlog::warn("scheduler says: {}: {}", m->code, m->message);
  } else {
    spdlog::warn("unknown message type '{}' from the scheduler", type);
  }
}

void Worker::LogRefusal(const std::string& what, const std::string& line) {
  const TimeMs now = clock_.Now();
  TimeMs& last = refusals_logged_[what];
  if (last != 0 && now - last < 60'000) return;
  last = now;
  spdlog::error("{}", line);
}

void Worker::OnRevoked(const std::string& why) {
  LogRefusal("revoked", "the scheduler refuses worker " + options_.name +
                            ": " + why + "; its tasks are stopped");
  std::vector<AttemptRef> waiting;
  for (auto& [ref, a] : running_) {
    if (a->started_at.load() == 0) {
      waiting.push_back(ref);
    } else {
      a->stop.request_stop();
    }
  }
  for (const AttemptRef& ref : waiting) DropWaiting(ref);
  // Their results would be refused: the scheduler has run them elsewhere.
  unacked_.clear();
  held_results_.clear();
  welcomed_ = false;
  try {
    dealer_.disconnect(options_.tasks);
    dealer_.connect(options_.tasks);
    heartbeat_.disconnect(options_.heartbeat);
    heartbeat_.connect(options_.heartbeat);
  } catch (const zmq::error_t& e) {
    spdlog::warn("reconnecting to the scheduler: {}", e.what());
  }
}

void Worker::OnConnectionEvent(const SocketMonitor::Event& e) {
  if (e.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
    // A new connection: the scheduler knows it by nobody's name yet.
    spdlog::debug("connected to the scheduler at {}", e.endpoint);
    SayHello();
    return;
  }
  if (e.handshake_failed()) {
    LogRefusal("handshake", "cannot connect to the scheduler at " +
                                e.endpoint + ": " +
                                SocketMonitor::Describe(e, options_.keys.has_value()) +
                                "; trying again");
  }
}

void Worker::OnHeartbeatMessage(const std::string& body) {
  auto frame = Frame::Parse(body);
  if (!frame.ok() || frame->type() != SchedulerHeartbeat::kType) return;
  auto m = frame->As<SchedulerHeartbeat>();
  if (!m.ok()) return;
  if (!scheduler_.empty() && m->instance != scheduler_) {
    spdlog::info("scheduler restarted (now {}); announcing again",
                 m->instance);
    scheduler_ = m->instance;
    SayHello();
  } else if (scheduler_.empty() && !welcomed_) {
    SayHello();
  }
}

std::string Worker::StatusLine() const {
  std::string line = std::to_string(running_.size()) + " tasks running";
  if (stop_.load()) return "draining: " + line;
  if (!welcomed_) {
    return line + ", waiting for the scheduler at " + options_.tasks;
  }
  return line + ", connected to the scheduler at " + options_.tasks;
}

Status Worker::Run() {
  TimeMs drain_deadline = 0;
  bool said_goodbye = false;
  while (true) {
    const TimeMs now = clock_.Now();
    // Results that may wait no longer go first, ahead of a goodbye.
    if (!held_results_.empty() && !MayHoldResults(now)) SendHeldResults();
    if (now >= next_tick_) {
      if (on_tick_) on_tick_();
      next_tick_ = now + tick_period_.count();
    }
    if (stop_.load()) {
      if (drain_deadline == 0) {
        drain_deadline = now + options_.shutdown_grace.count();
        // Attempts waiting for a slot have not started: handed back at
        // once, the scheduler runs them elsewhere.
        std::vector<AttemptRef> waiting;
        for (const auto& [ref, a] : running_) {
          if (a->started_at.load() == 0) waiting.push_back(ref);
        }
        for (const AttemptRef& ref : waiting) {
          if (!DropWaiting(ref)) continue;
          Reject r;
          r.ref = ref;
          r.reason = "worker is shutting down";
          Send(Encode(r));
        }
        spdlog::info("stopping: {} tasks running, waiting up to {} ms",
                     running_.size(), options_.shutdown_grace.count());
        SendHeartbeat();
      }
      if (running_.empty() || now >= drain_deadline) {
        if (!said_goodbye) {
          Goodbye bye;
          for (auto& [ref, a] : running_) {
            bye.returned.push_back(ref);
            a->stop.request_stop();
          }
          Send(Encode(bye));
          said_goodbye = true;
        }
        threads_.WaitIdle();  // the stopped attempts post their results
        running_.clear();
        DrainOutbox();
        SendHeldResults();
        // Give queued frames a moment to leave before the context closes.
        dealer_.set(zmq::sockopt::linger, 1000);
        return Status::Ok();
      }
    }
    if (now >= next_heartbeat_) {
      SendHeartbeat();
      next_heartbeat_ = now + options_.heartbeat_interval.count();
    }
    if (!welcomed_ && now - last_hello_ > 1000) SayHello();
    if (now >= next_resend_) {
      for (const auto& [ref, f] : unacked_) Send(f);
      next_resend_ = now + 5000;
    }
    pollfd outbox = {event_fd_, POLLIN, 0};
    TimeMs wake = std::min(next_heartbeat_, next_tick_);
    if (!held_results_.empty()) {
      wake = std::min(wake, results_held_since_ + kResultHold.count());
    }
    // Attempts waiting for a slot: results may come in without waking the
    // loop (Post), and are looked at within kResultHold.
    for (const auto& [queue, slots] : options_.queues) {
      if (Waiting(queue) > 0) {
        wake = std::min(wake, clock_.Now() + kResultHold.count());
        break;
      }
    }
    if (const TimeMs held = SendHeldStarted(clock_.Now()); held != 0) {
      wake = std::min(wake, held);
    }
    long timeout = std::clamp<long>(static_cast<long>(wake - clock_.Now()),
                                    0, 200);
    if (!wait_.Wait(timeout, &outbox, 1)) {
      return Status::Internal(std::string("poll: ") + strerror(errno));
    }
    // Only a socket that may hold messages is read, to its end (each read
    // of an empty ZeroMQ socket is system calls of its own); one that is
    // not is asked first next time.
    auto read = [&](size_t i, zmq::socket_t& socket, auto handle) {
      try {
        wait_.ReadAll(i, 256, [&] {
          zmq::message_t msg;
          if (!socket.recv(msg, zmq::recv_flags::dontwait)) return false;
          handle(msg);
          return true;
        });
      } catch (const zmq::error_t& e) {
        spdlog::warn("socket error: {}", e.what());
      }
    };
    read(kDealerSocket, dealer_, [&](zmq::message_t& msg) {
      if (!msg.more()) return OnSchedulerMessage(msg.to_string());
      while (msg.more() && dealer_.recv(msg, zmq::recv_flags::dontwait)) {
      }
      spdlog::warn("multipart message from the scheduler dropped");
    });
    read(kHeartbeatSocket, heartbeat_, [&](zmq::message_t& msg) {
      OnHeartbeatMessage(msg.to_string());
    });
    wait_.ReadAll(kMonitorSocket, 64, [&] {
      auto e = monitor_.Next();
      if (e) OnConnectionEvent(*e);
      return e.has_value();
    });
    if (outbox.revents & POLLIN) {
      uint64_t count;
      (void)!::read(event_fd_, &count, sizeof count);
    }
    DrainOutbox();
  }
}

}  // namespace drover
