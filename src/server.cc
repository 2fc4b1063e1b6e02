#include "server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <set>

#include "drover/job_spec.h"
#include "drover/protocol.h"
#include "drover/text.h"

namespace drover {
namespace {

// How many messages one loop turn takes from a socket before persisting
// and answering: bounds the latency a burst can add to the others. (Turns
// of 64 were tried: the same throughput, 7% more CPU a task.)
constexpr int kMaxMessagesPerTurn = 512;
// A quiet turn (at most this many messages, no write in flight before it,
// at most kInlineWriteOps records) writes its batch itself instead of
// through the committer thread: see Server::HandOver.
constexpr int kInlineWriteMessages = 4;
constexpr size_t kInlineWriteOps = 16;

std::string ErrorFrame(uint64_t id, const Status& st,
                       std::vector<std::string> details = {}) {
  ErrorReply e;
  e.id = id;
  e.code = std::string(CodeName(st.code()));
  e.message = st.message();
  e.details = std::move(details);
  return Encode(e);
}

std::optional<std::string> TimeOrNull(TimeMs t) {
  if (t == 0) return std::nullopt;
  return FormatTime(t);
}

std::optional<std::string> TextOrNull(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return s;
}

// One message as received: its frames, and the CURVE key its connection
// authenticated with ("" without --auth), which ZAP set as its User-Id.
struct Received {
  std::vector<std::string> frames;
  std::string key;
};

// Receives every frame of one message; no frames when nothing is waiting.
Received ReceiveMultipart(zmq::socket_t& socket) {
  Received r;
  while (true) {
    zmq::message_t msg;
    auto got = socket.recv(msg, zmq::recv_flags::dontwait);
    if (!got) break;
    r.frames.emplace_back(msg.to_string());
    if (!msg.more()) {
      if (const char* user = zmq_msg_gets(msg.handle(), "User-Id")) {
        r.key = user;
      }
      break;
    }
    if (r.frames.size() > 16) {
      // Drain and drop an absurd multipart message.
      while (msg.more() && socket.recv(msg, zmq::recv_flags::dontwait)) {
      }
      r.frames.clear();
      r.frames.emplace_back();
      break;
    }
  }
  return r;
}

}  // namespace

Server::Server(ServerOptions options, std::unique_ptr<Store> store,
               const Clock& clock)
    : options_(std::move(options)),
      store_(std::move(store)),
      clock_(clock),
      instance_(RandomHex(16)),
      plan_(PlanOptions{.instance = instance_,
                        .heartbeat_interval = options_.heartbeat_interval,
                        .heartbeat_liveness = options_.heartbeat_liveness},
            std::random_device{}()),
      ctx_(1),
      api_(ctx_, zmq::socket_type::router),
      tasks_(ctx_, zmq::socket_type::router),
      heartbeat_(ctx_, zmq::socket_type::xpub),
      wait_({&api_, &tasks_, &heartbeat_}) {}

Server::~Server() = default;

Status Server::Start() {
  const int64_t hard_cap = 4 * static_cast<int64_t>(kMaxFrameBytes);
  try {
    for (zmq::socket_t* s : {&api_, &tasks_, &heartbeat_}) {
      s->set(zmq::sockopt::linger, 0);
      s->set(zmq::sockopt::maxmsgsize, hard_cap);
    }
    tasks_.set(zmq::sockopt::router_mandatory, 1);
    api_.set(zmq::sockopt::router_mandatory, 1);
  } catch (const zmq::error_t& e) {
    return Status::Internal(std::string("socket options: ") + e.what());
  }
  if (!options_.auth_dir.empty()) {
    if (Status st = SetUpAuth(); !st.ok()) return st;
  }
  {
    std::string key_file = options_.secrets_key;
    if (key_file.empty()) {
      key_file = (options_.auth_dir.empty() ? options_.data_dir
                                            : options_.auth_dir) +
                 "/secrets.key";
    }
    bool created = false;
    auto box = SecretBox::Open(key_file, &created);
    if (!box.ok()) {
      return Status(box.status().code(), "--secrets-key: " +
                                             box.status().message());
    }
    box_ = std::move(*box);
    if (created) {
      spdlog::info("made the key that seals job secrets in the store: {}; "
                   "back it up apart from the data dir",
                   key_file);
    }
  }
  const std::pair<zmq::socket_t*, std::string> binds[] = {
      {&api_, options_.api},
      {&tasks_, options_.tasks},
      {&heartbeat_, options_.heartbeat}};
  for (const auto& [socket, endpoint] : binds) {
    try {
      socket->bind(endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot listen on " + endpoint + ": " +
                                 e.what());
    }
  }
  if (!options_.watch_dir.empty()) {
    watcher_ = std::make_unique<Watcher>(options_.watch_dir);
    Status st = watcher_->Start();
    if (!st.ok()) return st;
  }
  batch_ = std::make_unique<Batch>(store_.get());
  committer_ = std::make_unique<Committer>(store_.get());
  LoadUnfinished();
  spdlog::info("droverd {} serving: api {}, tasks {}, heartbeat {}",
               DROVER_VERSION, api_.get(zmq::sockopt::last_endpoint),
               tasks_.get(zmq::sockopt::last_endpoint),
               heartbeat_.get(zmq::sockopt::last_endpoint));
  return Status::Ok();
}

Status Server::SetUpAuth() {
  auth_ = std::make_unique<AuthDir>(options_.auth_dir);
  if (Status st = auth_->Open(); !st.ok()) return st;
  zap_ = std::make_unique<ZapHandler>(ctx_);
  if (Status st = zap_->Start(auth_->allowlist()); !st.ok()) return st;
  const std::pair<zmq::socket_t*, std::string_view> domains[] = {
      {&api_, kApiDomain},
      {&tasks_, kTasksDomain},
      {&heartbeat_, kHeartbeatDomain}};
  try {
    for (const auto& [socket, domain] : domains) {
      socket->set(zmq::sockopt::curve_server, 1);
      socket->set(zmq::sockopt::curve_secretkey,
                  auth_->server_key().secret_key);
      socket->set(zmq::sockopt::zap_domain, std::string(domain));
      // ZMQ_ZAP_ENFORCE_DOMAIN (a draft option in libzmq 4.3's header):
      // no handler, no handshake. Without it libzmq admits every key
      // whenever no handler answers.
      constexpr int kZapEnforceDomain = 93;
      const int on = 1;
      if (zmq_setsockopt(socket->handle(), kZapEnforceDomain, &on,
                         sizeof on) != 0) {
        return Status::Internal(
            "this libzmq cannot enforce authentication "
            "(ZMQ_ZAP_ENFORCE_DOMAIN): " +
            std::string(zmq_strerror(zmq_errno())));
      }
    }
  } catch (const zmq::error_t& e) {
    return Status::Internal(std::string("CURVE socket options: ") + e.what());
  }
  return Status::Ok();
}

Status Server::Authorize(std::string_view type, const std::string& key) const {
  if (!auth_) return Status::Ok();
  const Principal* p = auth_->list().Find(key);
  if (p == nullptr || !(p->client || p->reader)) {
    return Status::PermissionDenied(
        "authentication refused: this key is no longer allowed to use the "
        "scheduler's API");
  }
  const bool changes =
      type == SubmitRequest::kType || type == CancelRequest::kType;
  if (changes && !p->client) {
    return Status::PermissionDenied(
        "authentication refused: " + p->Describe() +
        " may only read (its key is in readers/); '" + std::string(type) +
        "' needs a key in clients/");
  }
  return Status::Ok();
}

bool Server::IsWorkerKey(const std::string& key) const {
  if (!auth_) return true;
  const Principal* p = auth_->list().Find(key);
  return p != nullptr && p->worker;
}

void Server::OnAuthChange(Effects& fx) {
  if (!auth_->Reload()) return;
  zap_->Update(auth_->allowlist());
  // A worker whose key is gone: its connection counts for nobody, its
  // attempts go to other workers, and it is told why.
  std::vector<std::string> revoked;
  for (const auto& [name, link] : worker_link_) {
    auto key = link_key_.find(link);
    if (key == link_key_.end() || !IsWorkerKey(key->second)) {
      revoked.push_back(name);
    }
  }
  for (const std::string& name : revoked) {
    const std::string link = worker_link_[name];
    plan_.Revoke(name, clock_.Now(), fx);
    worker_link_.erase(name);
    link_worker_.erase(link);
    link_key_.erase(link);
    spdlog::warn("worker {}: its key was removed from workers/; its tasks "
                 "are requeued",
                 name);
    SendToLink(link, ErrorFrame(0, Status::PermissionDenied(
                                       "authentication refused: the "
                                       "scheduler no longer allows this "
                                       "worker's key")));
  }
}

void Server::LoadUnfinished() {
  auto ids = store_->ListUnfinished();
  if (!ids.ok()) {
    spdlog::error("cannot list unfinished jobs: {}", ids.status().ToString());
    return;
  }
  Effects fx;
  const TimeMs now = clock_.Now();
  size_t resumed = 0;
  for (const std::string& id : *ids) {
    auto job = store_->GetJob(id);
    auto tasks = store_->GetTasks(id);
    if (!job.ok() || !tasks.ok()) {
      spdlog::error("job {}: cannot load: {}", id,
                    (job.ok() ? tasks.status() : job.status()).ToString());
      continue;
    }
    ParseResult parsed =
        ParseJobText(job->source, job->source_name, job->inputs);
    if (parsed.ok() && !job->sealed_secrets.empty()) {
      // The kept source has the secrets' names; the sealed box their values.
      auto secrets = box_->OpenSecrets(job->sealed_secrets);
      if (!secrets.ok()) {
        spdlog::error("job {}: cannot open its secrets: {}", id,
                      secrets.status().message());
        plan_.FailUnloadable(std::move(*job), std::move(*tasks),
                             "cannot open its secrets after restart: " +
                                 secrets.status().message(),
                             now, fx);
        continue;
      }
      parsed.job->secrets = std::move(*secrets);
    }
    if (!parsed.ok() || parsed.job->tasks.size() != tasks->size()) {
      std::string why = parsed.ok() ? "its tasks do not match its job file"
                                    : parsed.errors.front().ToString();
      spdlog::error("job {}: stored job file no longer loads: {}", id, why);
      plan_.FailUnloadable(std::move(*job), std::move(*tasks),
                           "cannot load after restart: " + why, now, fx);
      continue;
    }
    plan_.RecoverJob(std::move(*job), std::move(*parsed.job),
                     std::move(*tasks), now, fx);
    ++resumed;
  }
  Stage(fx);
  Drain();
  if (resumed > 0) spdlog::info("resumed {} unfinished jobs", resumed);
}

Status Server::ReadOnlyError() const {
  return Status::Unavailable(
      "the scheduler accepts no changes after a failed write: " +
      store_->health().ToString());
}

std::string Server::StatusLine() const {
  return std::to_string(plan_.running_jobs()) + " jobs unfinished, " +
         std::to_string(plan_.live_workers()) + " workers connected";
}

Status Server::Run() {
  if (on_ready_) on_ready_();
  bool first_turn = true;
  while (!stop_.load()) {
    TimeMs now = clock_.Now();
    long timeout = 250;
    if (auto next = plan_.NextDeadline()) {
      timeout = std::clamp<long>(static_cast<long>(*next - now), 0, timeout);
    }
    timeout = std::clamp<long>(static_cast<long>(next_heartbeat_ - now), 0,
                               timeout);
    timeout = std::clamp<long>(static_cast<long>(next_tick_ - now), 0, timeout);
    // A negative fd is ignored by poll(2): no watcher, no write in flight.
    pollfd fds[] = {
        {watcher_ ? watcher_->fd() : -1, POLLIN, 0},
        {committer_->busy() ? committer_->fd() : -1, POLLIN, 0},
        {auth_ ? auth_->fd() : -1, POLLIN, 0},
    };
    if (!wait_.Wait(timeout, fds, 3)) {
      const int err = errno;
      Drain();
      return Status::Internal(std::string("poll: ") + strerror(err));
    }
    // The last batch is durable: out go its replies and messages.
    const bool was_writing = committer_->busy();
    if (std::optional<Status> done = committer_->Finish()) {
      FinishGroup(in_flight_, *done);
    }
    Effects fx;
    if (fds[2].revents & POLLIN) OnAuthChange(fx);
    int received = 0;
    // Only sockets that may hold messages are read (reading an empty ZeroMQ
    // socket costs system calls of its own), each to its end or to the
    // turn's limit; one not read to its end is asked first next time.
    auto read = [&](size_t i, zmq::socket_t& socket, auto handle) {
      try {
        wait_.ReadAll(i, kMaxMessagesPerTurn, [&] {
          Received r = ReceiveMultipart(socket);
          if (r.frames.empty()) return false;
          handle(std::move(r));
          ++received;
          return true;
        });
      } catch (const zmq::error_t& e) {
        spdlog::error("socket error: {}", e.what());
      }
    };
    read(kTasksSocket, tasks_,
         [&](Received r) { HandleWorker(r.frames, r.key, fx); });
    read(kHeartbeatSocket, heartbeat_, [&](Received r) {
      if (r.frames.size() == 1) HandleHeartbeat(r.frames[0], r.key, fx);
    });
    read(kApiSocket, api_,
         [&](Received r) { HandleApi(std::move(r.frames), r.key, fx); });
    if (watcher_ && !read_only_ &&
        ((fds[0].revents & POLLIN) || first_turn)) {
      for (const WatchedFile& f : watcher_->Take()) HandleWatched(f, fx);
    }
    first_turn = false;
    now = clock_.Now();
    if (!read_only_) plan_.Tick(now, fx);
    Stage(fx);
    HandOver(/*quiet=*/!was_writing && received <= kInlineWriteMessages);
    if (now >= next_heartbeat_) {
      PublishHeartbeat();
      next_heartbeat_ = now + options_.heartbeat_interval.count();
    }
    if (now >= next_tick_) {
      LogWorkerChanges();
      if (on_tick_) on_tick_();
      next_tick_ = now + tick_period_.count();
    }
  }
  Drain();
  spdlog::info("droverd stopping");
  return Status::Ok();
}

void Server::Stage(Effects& fx) {
  Batch& batch = *batch_;
  for (const JobRecord& j : fx.jobs) {
    Status st = batch.PutJob(j);
    if (!st.ok()) spdlog::error("job {}: not stored: {}", j.id, st.ToString());
  }
  // The records move into the batch. LogEvents needs only the failed
  // ones, and the names of tasks that have notes in this turn.
  const bool notes =
      std::any_of(fx.logs.begin(), fx.logs.end(),
                  [](const auto& l) { return l.second.stream == 's'; });
  for (TaskRecord& t : fx.tasks) {
    if (notes || t.state == TaskState::kFailed) open_.fx.tasks.push_back(t);
    // A refused record is left as it was.
    Status st = batch.PutTask(std::move(t));
    if (!st.ok()) {
      spdlog::error("job {} task {}: not stored: {}", t.job_id, t.name,
                    st.ToString());
    }
  }
  fx.tasks.clear();
  for (auto& [job_id, chunk] : fx.logs) batch.AppendLog(job_id, chunk);
  auto append = [](auto& to, auto& from) {
    if (to.empty()) {
      to = std::move(from);
    } else {
      to.insert(to.end(), std::make_move_iterator(from.begin()),
                std::make_move_iterator(from.end()));
    }
    from.clear();
  };
  append(open_.replies, replies_);
  append(open_.after_commit, after_commit_);
  append(open_.fx.messages, fx.messages);
  append(open_.fx.jobs, fx.jobs);
  append(open_.fx.tasks, fx.tasks);
  append(open_.fx.logs, fx.logs);
}

void Server::HandOver(bool quiet) {
  if (committer_->busy()) return;  // the next turn adds to this group
  Group group = std::move(open_);
  open_ = Group{};
  if (batch_->empty()) {
    // Nothing to write (a query, a heartbeat): out at once, as durable as
    // everything before it.
    if (!group.replies.empty() || !group.fx.messages.empty() ||
        !group.after_commit.empty()) {
      FinishGroup(group, Status::Ok());
    }
    return;
  }
  const size_t batch_ops = batch_->size();
  Result<PreparedWrite> write = store_->Prepare(*batch_);
  batch_ = std::make_unique<Batch>(store_.get());
  if (!write.ok()) {
    FinishGroup(group, write.status());
    return;
  }
  if (quiet && batch_ops <= kInlineWriteOps) {
    // A quiet turn: the loop has nothing to overlap with the sync, and
    // handing the write to the committer would add two thread wake-ups to
    // the latency of this turn's replies and assignments. Under load (a
    // write was in flight) or with a large batch (a job file's tasks), the
    // committer writes: the loop must not stop for a sync then.
    FinishGroup(group, store_->Write(*write));
    return;
  }
  in_flight_ = std::move(group);
  committer_->Start(std::move(*write));
}

void Server::Drain() {
  while (true) {
    if (committer_->busy()) FinishGroup(in_flight_, committer_->Wait());
    HandOver();
    if (!committer_->busy()) return;
  }
}

void Server::FinishGroup(Group& group, const Status& written) {
  const bool committed = written.ok();
  if (!committed) {
    if (!read_only_) {
      spdlog::critical(
          "store write failed, accepting no more changes until restarted: {}",
          written.ToString());
    }
    read_only_ = true;
  }
  SendReplies(group.replies, committed);
  if (committed) {
    SendToWorkers(group.fx);
    for (auto& action : group.after_commit) action();
    LogEvents(group.fx);
  }
  group = Group{};
}

void Server::LogEvents(const Effects& fx) {
  // Notes carry a task index; this turn's task records give its name.
  // Built only for a turn with notes: most turns have none.
  std::map<std::pair<std::string, uint32_t>, std::string> names;
  for (const auto& [job_id, chunk] : fx.logs) {
    if (chunk.stream != 's') continue;
    if (names.empty()) {
      for (const TaskRecord& t : fx.tasks) names[{t.job_id, t.index}] = t.name;
    }
    auto name = names.find({job_id, chunk.task_index});
    std::string text = chunk.data;
    while (!text.empty() && text.back() == '\n') text.pop_back();
    spdlog::info("job {} task {}: {}", job_id,
                 name != names.end() ? name->second
                                     : "#" + std::to_string(chunk.task_index),
                 text);
  }
  for (const TaskRecord& t : fx.tasks) {
    if (t.state != TaskState::kFailed) continue;
    spdlog::info("job {} task {} attempt {}: FAILED{}{}", t.job_id, t.name,
                 t.attempts, t.worker.empty() ? "" : " on " + t.worker,
                 t.error.empty() ? "" : ": " + t.error);
  }
  std::set<std::string> ended;  // a record may come twice in one turn
  for (const JobRecord& j : fx.jobs) {
    if (!IsTerminal(j.state) || !ended.insert(j.id).second) continue;
    const std::string took =
        j.finished_at > j.created_at
            ? FormatDuration(Millis(j.finished_at - j.created_at))
            : "0s";
    const auto level = j.state == JobState::kFailed ? spdlog::level::warn
                                                    : spdlog::level::info;
    spdlog::log(level, "job {}: {} after {}{}{}", j.id, JobStateName(j.state),
                took, j.error.empty() ? "" : ": ", j.error);
  }
}

void Server::LogWorkerChanges() {
  std::map<std::string, std::string> now;
  for (const WorkerView& w : plan_.Workers()) {
    auto before = worker_states_.find(w.name);
    if (before != worker_states_.end() && before->second != w.state) {
      const bool bad = w.state == "dead" || w.state == "degraded";
      spdlog::log(bad ? spdlog::level::warn : spdlog::level::info,
                  "worker {}: {} (was {}), {} tasks running", w.name, w.state,
                  before->second, w.running);
    }
    now[w.name] = w.state;
  }
  worker_states_ = std::move(now);
}

void Server::SendReplies(std::vector<Reply>& replies, bool committed) {
  if (!replies.empty()) wait_.Dirty(kApiSocket);
  for (Reply& r : replies) {
    if (r.needs_commit && !committed) {
      r.body = ErrorFrame(r.request_id,
                          Status::Unavailable("the scheduler could not store "
                                              "the change: " +
                                              store_->health().ToString()));
    }
    try {
      for (const std::string& f : r.envelope) {
        if (!api_.send(zmq::buffer(f), zmq::send_flags::sndmore |
                                           zmq::send_flags::dontwait)) {
          throw zmq::error_t();
        }
      }
      api_.send(zmq::buffer(r.body), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      spdlog::warn("reply to a client dropped: {}", e.what());
    }
  }
  replies.clear();
}

void Server::SendToWorkers(Effects& fx) {
  if (!fx.messages.empty()) wait_.Dirty(kTasksSocket);
  for (auto& [worker, body] : fx.messages) {
    auto link = worker_link_.find(worker);
    if (link == worker_link_.end()) {
      spdlog::debug("message to worker {} dropped: not connected", worker);
      continue;
    }
    try {
      if (!tasks_.send(zmq::buffer(link->second),
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
          !tasks_.send(zmq::buffer(body), zmq::send_flags::dontwait)) {
        // A full queue: the heartbeat reconciliation requeues what was lost.
        spdlog::warn("message to worker {} dropped: its queue is full", worker);
      }
    } catch (const zmq::error_t& e) {
      // The worker is gone or its queue is full; heartbeats will tell.
      spdlog::warn("message to worker {} dropped: {}", worker, e.what());
    }
  }
}

void Server::PublishHeartbeat() {
  SchedulerHeartbeat hb;
  hb.instance = instance_;
  hb.at_ms = clock_.Now();
  wait_.Dirty(kHeartbeatSocket);
  try {
    heartbeat_.send(zmq::buffer(Encode(hb)), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::warn("heartbeat not published: {}", e.what());
  }
}

void Server::HandleApi(std::vector<std::string> frames, const std::string& key,
                       Effects& fx) {
  // [routing id] [optional empty delimiter, from REQ sockets] body
  if (frames.size() < 2) return;
  Reply reply;
  size_t body_at = 1;
  reply.envelope.push_back(frames[0]);
  if (frames.size() >= 3 && frames[1].empty()) {
    reply.envelope.emplace_back();
    body_at = 2;
  }
  if (frames.size() != body_at + 1) {
    spdlog::warn("client sent a message of {} frames; expected one",
                 frames.size() - 1);
    reply.body = ErrorFrame(
        0, Status::InvalidArgument("a request is one frame of msgpack"));
  } else {
    reply.body = HandleRequest(frames[body_at], key, fx, &reply.needs_commit,
                               &reply.request_id);
  }
  replies_.push_back(std::move(reply));
}

std::string Server::HandleRequest(const std::string& body,
                                  const std::string& key, Effects& fx,
                                  bool* acknowledges, uint64_t* request_id) {
  auto frame = Frame::Parse(body);
  if (!frame.ok()) {
    spdlog::warn("client request refused: {}", frame.status().message());
    return ErrorFrame(0, frame.status());
  }
  const uint64_t id = frame->id();
  *request_id = id;
  const std::string& type = frame->type();
  auto bad = [&](const Status& st) {
    spdlog::warn("client '{}' request refused: {}", type, st.message());
    return ErrorFrame(id, st);
  };
  if (Status st = Authorize(type, key); !st.ok()) return bad(st);
  if (type == SubmitRequest::kType) {
    auto req = frame->As<SubmitRequest>();
    if (!req.ok()) return bad(req.status());
    if (read_only_) return ErrorFrame(id, ReadOnlyError());
    *acknowledges = true;
    return Submit(id, *req, fx);
  }
  if (type == StatusRequest::kType) {
    auto req = frame->As<StatusRequest>();
    if (!req.ok()) return bad(req.status());
    auto view = View(req->job_id, true);
    if (!view.ok()) return ErrorFrame(id, view.status());
    StatusReply r;
    r.id = id;
    r.job = std::move(*view);
    return Encode(r);
  }
  if (type == ListRequest::kType) {
    auto req = frame->As<ListRequest>();
    if (!req.ok()) return bad(req.status());
    std::optional<JobState> state;
    if (!req->state.empty()) {
      state = ParseJobState(req->state);
      if (!state) {
        return bad(Status::InvalidArgument(
            "unknown job state '" + req->state +
            "'; expected PENDING, RUNNING, COMPLETED, FAILED or CANCELLED"));
      }
    }
    auto jobs = store_->ListJobs(state, std::min<uint32_t>(req->limit, 10000));
    if (!jobs.ok()) return ErrorFrame(id, jobs.status());
    ListReply r;
    r.id = id;
    for (const JobRecord& j : *jobs) {
      auto v = View(j.id, false);
      if (v.ok()) r.jobs.push_back(std::move(*v));
    }
    return Encode(r);
  }
  if (type == LogsRequest::kType) {
    auto req = frame->As<LogsRequest>();
    if (!req.ok()) return bad(req.status());
    auto job = store_->GetJob(req->job_id);
    if (!job.ok()) return ErrorFrame(id, job.status());
    auto tasks = store_->GetTasks(req->job_id);
    if (!tasks.ok()) return ErrorFrame(id, tasks.status());
    std::optional<uint32_t> only;
    if (!req->task.empty()) {
      for (const TaskRecord& t : *tasks) {
        if (t.name == req->task) only = t.index;
      }
      if (!only) {
        return ErrorFrame(id, Status::NotFound("job " + req->job_id +
                                               " has no task '" + req->task +
                                               "'"));
      }
    }
    auto chunks = store_->GetLogs(req->job_id, only, req->after);
    if (!chunks.ok()) return ErrorFrame(id, chunks.status());
    LogsReply r;
    r.id = id;
    r.last = req->after;
    size_t bytes = 0;
    for (const LogChunk& c : *chunks) {
      LogLine line;
      line.task = c.task_index < tasks->size() ? (*tasks)[c.task_index].name
                                               : std::to_string(c.task_index);
      line.attempt = c.attempt;
      line.stream = c.stream == 'o' ? "stdout"
                    : c.stream == 'e' ? "stderr"
                                      : "drover";
      line.data = c.data;
      line.seq = c.seq;
      r.last = c.seq;
      bytes += c.data.size();
      r.chunks.push_back(std::move(line));
      if (bytes > kMaxFrameBytes / 2) break;  // the client asks again
    }
    r.job_finished = IsTerminal(job->state) && bytes <= kMaxFrameBytes / 2;
    return Encode(r);
  }
  if (type == CancelRequest::kType) {
    auto req = frame->As<CancelRequest>();
    if (!req.ok()) return bad(req.status());
    if (read_only_) return ErrorFrame(id, ReadOnlyError());
    auto job = store_->GetJob(req->job_id);
    if (!job.ok()) return ErrorFrame(id, job.status());
    if (IsTerminal(job->state)) {
      return ErrorFrame(
          id, Status::FailedPrecondition(
                  "job " + req->job_id + " has already ended (" +
                  std::string(JobStateName(job->state)) + ")"));
    }
    Status st = plan_.Cancel(req->job_id, clock_.Now(), fx);
    if (!st.ok()) return ErrorFrame(id, st);
    spdlog::info("job {}: cancelled", req->job_id);
    *acknowledges = true;
    StatusReply r;
    r.id = id;
    r.job.id = req->job_id;
    r.job.state = "CANCELLED";
    return Encode(r);
  }
  if (type == WorkersRequest::kType) {
    WorkersReply r;
    r.id = id;
    r.workers = plan_.Workers();
    return Encode(r);
  }
  return bad(Status::InvalidArgument("unknown request type '" + type + "'"));
}

std::string Server::Submit(uint64_t id, const SubmitRequest& req,
                           Effects& fx) {
  if (req.source.size() > kMaxJobFileBytes) {
    return ErrorFrame(id, Status::InvalidArgument(
                              "job file exceeds " +
                              std::to_string(kMaxJobFileBytes) + " bytes"));
  }
  const std::string file = req.file_name.empty() ? "job.toml" : req.file_name;
  std::vector<Diagnostic> errors;
  auto job_id = Accept(req.source, file, req.inputs, "", fx, &errors);
  if (!job_id.ok()) {
    std::vector<std::string> lines;
    for (const Diagnostic& d : errors) lines.push_back(d.ToString());
    return ErrorFrame(id, job_id.status(), std::move(lines));
  }
  SubmitReply reply;
  reply.id = id;
  reply.job_id = *job_id;
  return Encode(reply);
}

Result<std::string> Server::Accept(
    const std::string& source, const std::string& file,
    const std::map<std::string, std::string>& inputs,
    const std::string& marker, Effects& fx, std::vector<Diagnostic>* errors) {
  ParseResult parsed = ParseJobText(source, file, inputs);
  if (!parsed.ok()) {
    spdlog::info("job file {} refused: {} error(s), first: {}", file,
                 parsed.errors.size(), parsed.errors.front().ToString());
    *errors = std::move(parsed.errors);
    return Status::InvalidArgument(
        file + ": " + std::to_string(errors->size()) +
        " validation error(s); the job was not stored");
  }
  // A Docker task that every connected worker's policy forbids would wait
  // for ever: refused now, with the policy key, as a validation error.
  for (const TaskSpec& t : parsed.job->tasks) {
    if (std::string why = plan_.PolicyRefusal(t); !why.empty()) {
      errors->push_back(Diagnostic{
          file, t.where,
          "task '" + t.name + "': no connected worker's policy allows it: " +
              why});
    }
  }
  if (!errors->empty()) {
    spdlog::info("job file {} refused: {}", file, errors->front().ToString());
    return Status::InvalidArgument(
        file + ": " + std::to_string(errors->size()) +
        " task(s) that no connected worker allows; the job was not stored");
  }
  const TimeMs now = clock_.Now();
  JobSpec spec = std::move(*parsed.job);
  // Secrets are kept only sealed: the source without their values, and
  // the values in a box only droverd's secrets key opens.
  auto [job, tasks] = MakeJobRecords(
      store_->NewJobId(), spec,
      spec.secrets.empty() ? source : WithoutSecretValues(source), file, now);
  job.sealed_secrets = box_->SealSecrets(spec.secrets);
  Status st = batch_->PutJob(job);
  for (const TaskRecord& t : tasks) {
    if (st.ok()) st = batch_->PutTask(t);
  }
  if (!st.ok()) {
    spdlog::error("job {}: cannot store: {}", job.id, st.ToString());
    return st;
  }
  if (!marker.empty()) batch_->PutMarker(marker, job.id);
  spdlog::info("job {}: submitted '{}' from {} with {} tasks", job.id,
               job.name, file, tasks.size());
  std::string job_id = job.id;
  plan_.AddJob(std::move(job), std::move(spec), std::move(tasks), now, fx);
  return job_id;
}

void Server::HandleWatched(const WatchedFile& f, Effects& fx) {
  const std::string marker = WatchMarker(f);
  auto stored = store_->GetMarker(marker);
  if (stored.ok() && stored->has_value()) {
    // Stored before a crash, not yet moved: finish the move only.
    after_commit_.push_back([this, f, marker, id = **stored] {
      FinishWatched(f, marker, id);
    });
    return;
  }
  std::ifstream in(f.path, std::ios::binary);
  std::string source;
  if (in) {
    source.resize(kMaxJobFileBytes + 1);
    in.read(source.data(), static_cast<std::streamsize>(source.size()));
    source.resize(static_cast<size_t>(in.gcount()));
  }
  std::vector<Diagnostic> errors;
  if (!in && !in.eof()) {
    errors.push_back(Diagnostic{f.name, {}, "cannot read the file"});
  } else if (source.size() > kMaxJobFileBytes) {
    errors.push_back(Diagnostic{f.name, {}, "the file exceeds " +
                                                std::to_string(kMaxJobFileBytes) +
                                                " bytes"});
  } else {
    auto id = Accept(source, f.name, {}, marker, fx, &errors);
    if (id.ok()) {
      after_commit_.push_back(
          [this, f, marker, id = *id] { FinishWatched(f, marker, id); });
      return;
    }
  }
  Status st = watcher_->MarkFailed(f, errors);
  if (!st.ok()) spdlog::error("watched file {}: {}", f.name, st.ToString());
}

void Server::FinishWatched(const WatchedFile& f, const std::string& marker,
                           const std::string& job_id) {
  Status st = watcher_->MarkProcessed(f, job_id);
  if (!st.ok()) {
    spdlog::error("job {}: watched file {}: {}", job_id, f.name, st.ToString());
    return;
  }
  // The file is gone from the directory; its marker has done its work.
  batch_->DeleteMarker(marker);
}

Result<JobView> Server::View(const std::string& job_id,
                             bool with_tasks) const {
  auto job = store_->GetJob(job_id);
  if (!job.ok()) return job.status();
  JobView v;
  v.id = job->id;
  v.name = job->name;
  v.state = std::string(JobStateName(job->state));
  v.created_at = TimeOrNull(job->created_at);
  v.started_at = TimeOrNull(job->started_at);
  v.finished_at = TimeOrNull(job->finished_at);
  v.error = TextOrNull(job->error);
  v.inputs = job->inputs;
  if (!with_tasks) return v;
  auto tasks = store_->GetTasks(job_id);
  if (!tasks.ok()) return tasks.status();
  for (const TaskRecord& t : *tasks) {
    TaskView tv;
    tv.name = t.name;
    tv.state = std::string(TaskStateName(t.state));
    tv.attempts = t.attempts;
    tv.worker = TextOrNull(t.worker);
    tv.exit_code = t.exit_code;
    if (t.state == TaskState::kCompleted || t.state == TaskState::kFailed) {
      tv.output = t.output;
    }
    tv.error = TextOrNull(t.error);
    tv.started_at = TimeOrNull(t.started_at);
    tv.finished_at = TimeOrNull(t.finished_at);
    for (const AttemptRecord& h : t.history) {
      if (!h.error.empty()) {
        tv.errors.push_back("attempt " + std::to_string(h.number) + " on " +
                            h.worker + ": " + h.error);
      }
    }
    v.tasks.push_back(std::move(tv));
  }
  return v;
}

void Server::SendToLink(const std::string& link, const std::string& body) {
  wait_.Dirty(kTasksSocket);
  try {
    if (!tasks_.send(zmq::buffer(link),
                     zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !tasks_.send(zmq::buffer(body), zmq::send_flags::dontwait)) {
      spdlog::debug("worker channel: answer to a connection dropped: its "
                    "queue is full");
    }
  } catch (const zmq::error_t& e) {
    spdlog::debug("worker channel: answer to a connection dropped: {}",
                  e.what());
  }
}

void Server::HandleWorker(const std::vector<std::string>& frames,
                          const std::string& key, Effects& fx) {
  if (frames.size() != 2) {
    spdlog::warn("worker channel: message of {} frames dropped",
                 frames.size());
    return;
  }
  // The routing id names the connection, never the worker: ZeroMQ gives
  // each connection its own, and the worker's name comes from its hello.
  const std::string& link = frames[0];
  const TimeMs now = clock_.Now();
  if (!IsWorkerKey(key)) {
    // Its key was removed from workers/ after it connected: nothing it
    // sends counts. Told so at most once a second.
    TimeMs& last = announced_links_[link];
    if (last == 0 || now - last >= 1000) {
      if (announced_links_.size() > 1024) announced_links_.clear();
      announced_links_[link] = now;
      SendToLink(link, ErrorFrame(0, Status::PermissionDenied(
                                         "authentication refused: the "
                                         "scheduler no longer allows this "
                                         "worker's key")));
    }
    return;
  }
  auto frame = Frame::Parse(frames[1]);
  auto bound = link_worker_.find(link);
  auto answer_error = [&](const Status& st) {
    spdlog::warn("{}: message refused: {}",
                 bound != link_worker_.end() ? "worker " + bound->second
                                             : "a worker connection",
                 st.message());
    SendToLink(link, ErrorFrame(0, st));
  };
  if (!frame.ok()) return answer_error(frame.status());
  const std::string& type = frame->type();
  if (type == Hello::kType) {
    auto m = frame->As<Hello>();
    if (!m.ok()) return answer_error(m.status());
    if (m->name.empty()) {
      return answer_error(Status::InvalidArgument("hello without a name"));
    }
    if (bound != link_worker_.end() && bound->second != m->name) {
      return answer_error(Status::InvalidArgument(
          "this connection is worker '" + bound->second +
          "'; it cannot say hello as '" + m->name + "'"));
    }
    if (Status st = plan_.OnHello(*m, key, now, fx); !st.ok()) {
      // A duplicate says hello every second: one line a minute of it.
      if (TimeMs& last = refusals_logged_[m->name];
          last == 0 || now - last >= 60'000) {
        if (refusals_logged_.size() > 1024) refusals_logged_.clear();
        refusals_logged_[m->name] = now;
        spdlog::warn("worker {} refused: {}", m->name, st.message());
      }
      SendToLink(link, ErrorFrame(0, st));
      return;
    }
    // The name moves to this connection; one it had before (a connection
    // that dropped) is nobody's now.
    auto old = worker_link_.find(m->name);
    const bool new_link = old == worker_link_.end() || old->second != link;
    if (old != worker_link_.end() && new_link) {
      link_worker_.erase(old->second);
      link_key_.erase(old->second);
    }
    worker_link_[m->name] = link;
    link_worker_[link] = m->name;
    link_key_[link] = key;
    spdlog::log(new_link ? spdlog::level::info : spdlog::level::debug,
                "worker {} connected ({} running)", m->name,
                m->running.size());
    return;
  }
  if (bound == link_worker_.end()) {
    // Not said hello on this connection (droverd restarted, or the
    // connection is new): ask for one, at most once a second.
    if (type == ErrorReply::kType) return;
    TimeMs& last = announced_links_[link];
    if (last == 0 || now - last >= 1000) {
      if (announced_links_.size() > 1024) announced_links_.clear();
      announced_links_[link] = now;
      SendToLink(link, Encode(Announce{}));
    }
    return;
  }
  const std::string& worker = bound->second;
  if (type == Started::kType) {
    auto m = frame->As<Started>();
    if (!m.ok()) return answer_error(m.status());
    plan_.OnStarted(worker, *m, now, fx);
  } else if (type == LogData::kType) {
    auto m = frame->As<LogData>();
    if (!m.ok()) return answer_error(m.status());
    plan_.OnLog(worker, *m, fx);
  } else if (type == TaskResult::kType) {
    auto m = frame->As<TaskResult>();
    if (!m.ok()) return answer_error(m.status());
    spdlog::debug("job {} task {} attempt {}: result from {}", m->ref.job_id,
                  m->ref.task, m->ref.attempt, worker);
    plan_.OnResult(worker, *m, now, fx);
  } else if (type == Reject::kType) {
    auto m = frame->As<Reject>();
    if (!m.ok()) return answer_error(m.status());
    plan_.OnReject(worker, *m, now, fx);
  } else if (type == Goodbye::kType) {
    auto m = frame->As<Goodbye>();
    if (!m.ok()) return answer_error(m.status());
    spdlog::info("worker {} leaving, returning {} tasks", worker,
                 m->returned.size());
    plan_.OnGoodbye(worker, *m, now, fx);
  } else if (type == ErrorReply::kType) {
    auto m = frame->As<ErrorReply>();
    if (m.ok()) spdlog::warn("worker {} reports: {}", worker, m->message);
  } else {
    answer_error(Status::InvalidArgument("unknown message type '" + type + "'"));
  }
}

void Server::HandleHeartbeat(const std::string& frame, const std::string& key,
                             Effects& fx) {
  // Subscription frames (0x00 / 0x01 + topic) come through XPUB too.
  if (!frame.empty() && (frame[0] == 0 || frame[0] == 1)) return;
  if (!IsWorkerKey(key)) return;  // revoked since it connected
  auto parsed = Frame::Parse(frame);
  if (!parsed.ok()) {
    spdlog::warn("heartbeat channel: message dropped: {}",
                 parsed.status().message());
    return;
  }
  if (parsed->type() != WorkerHeartbeat::kType) {
    spdlog::warn("heartbeat channel: unexpected '{}' message dropped",
                 parsed->type());
    return;
  }
  auto hb = parsed->As<WorkerHeartbeat>();
  if (!hb.ok()) {
    spdlog::warn("heartbeat channel: {}", hb.status().message());
    return;
  }
  plan_.OnHeartbeat(*hb, key, clock_.Now(), fx);
}

}  // namespace drover
