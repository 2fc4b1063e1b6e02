// drover: the command-line client. See the spec's "drover client" section.
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "drover/cli.h"
#include "drover/client.h"
#include "drover/job_spec.h"
#include "drover/keys.h"

namespace drover {
namespace {

using nlohmann::json;

template <typename T>
json OrNull(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

json ToJson(const JobView& v, bool with_tasks) {
  json j = {{"id", v.id},
            {"name", v.name},
            {"state", v.state},
            {"created_at", OrNull(v.created_at)},
            {"started_at", OrNull(v.started_at)},
            {"finished_at", OrNull(v.finished_at)},
            {"error", OrNull(v.error)},
            {"inputs", v.inputs}};
  if (with_tasks) {
    json tasks = json::array();
    for (const TaskView& t : v.tasks) {
      tasks.push_back({{"name", t.name},
                       {"state", t.state},
                       {"attempts", t.attempts},
                       {"worker", OrNull(t.worker)},
                       {"exit_code", OrNull(t.exit_code)},
                       {"output", OrNull(t.output)},
                       {"error", OrNull(t.error)},
                       {"errors", t.errors},
                       {"started_at", OrNull(t.started_at)},
                       {"finished_at", OrNull(t.finished_at)}});
    }
    j["tasks"] = std::move(tasks);
  }
  return j;
}

// Prints a failed call and returns its exit code.
int Fail(const Status& st, const Client* client = nullptr) {
  std::cerr << "drover: " << st.message() << "\n";
  if (client != nullptr) {
    for (const std::string& d : client->last_details()) std::cerr << d << "\n";
  }
  switch (st.code()) {
    case Code::kUnavailable:
    case Code::kTimeout:
      return kExitUnreachable;
    case Code::kInvalidArgument:
      return kExitUsage;
    case Code::kPermissionDenied:
      return kExitAuth;
    default:
      return kExitFailed;
  }
}

std::string Dash(const std::optional<std::string>& s) {
  return s && !s->empty() ? *s : "-";
}

void PrintJob(const JobView& v) {
  std::cout << "job " << v.id << "  " << v.name << "  " << v.state << "\n"
            << "  created " << Dash(v.created_at) << "  started "
            << Dash(v.started_at) << "  finished " << Dash(v.finished_at)
            << "\n";
  if (v.error) std::cout << "  error: " << *v.error << "\n";
  for (const auto& [k, val] : v.inputs) {
    std::cout << "  input " << k << " = " << val << "\n";
  }
  std::cout << std::left << std::setw(20) << "TASK" << std::setw(11) << "STATE"
            << std::setw(9) << "ATTEMPTS" << std::setw(24) << "WORKER"
            << "EXIT\n";
  for (const TaskView& t : v.tasks) {
    std::cout << std::left << std::setw(20) << t.name << std::setw(11)
              << t.state << std::setw(9) << t.attempts << std::setw(24)
              << Dash(t.worker)
              << (t.exit_code ? std::to_string(*t.exit_code) : "-") << "\n";
    if (t.output && !t.output->empty()) {
      std::cout << "    output: " << *t.output
                << (t.output->back() == '\n' ? "" : "\n");
    }
    for (const std::string& e : t.errors) std::cout << "    " << e << "\n";
    if (t.error && t.errors.empty()) std::cout << "    error: " << *t.error << "\n";
  }
}

bool IsFinished(const std::string& state) {
  return state == "COMPLETED" || state == "FAILED" || state == "CANCELLED";
}

// Polls until the job ends. A scheduler that restarts meanwhile is waited
// for (up to 30 s of silence). Returns the exit code for submit --wait and
// wait.
int WaitFor(Client& client, const std::string& job_id,
            std::optional<Millis> timeout, bool json_out) {
  const auto start = std::chrono::steady_clock::now();
  auto silent_since = start;
  Millis pause(20);
  while (true) {
    StatusRequest req;
    req.job_id = job_id;
    auto reply = client.Call<StatusReply>(req);
    const auto now = std::chrono::steady_clock::now();
    if (reply.ok()) {
      silent_since = now;
      if (IsFinished(reply->job.state)) {
        if (json_out) {
          std::cout << ToJson(reply->job, true).dump(2) << "\n";
        } else {
          std::cout << reply->job.id << " " << reply->job.state << "\n";
        }
        if (reply->job.error && reply->job.state != "COMPLETED") {
          std::cerr << "drover: " << *reply->job.error << "\n";
        }
        return reply->job.state == "COMPLETED" ? kExitOk : kExitFailed;
      }
    } else if (reply.status().code() == Code::kNotFound ||
               reply.status().code() == Code::kInvalidArgument) {
      return Fail(reply.status());
    } else if (now - silent_since > std::chrono::seconds(30)) {
      return Fail(reply.status());
    }
    if (timeout && now - start >= *timeout) {
      std::cerr << "drover: job " << job_id << " did not end within "
                << FormatDuration(*timeout) << "\n";
      return kExitUnreachable;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, Millis(250));
  }
}

}  // namespace
}  // namespace drover

int main(int argc, char** argv) {
  using namespace drover;  // NOLINT: main only
  CLI::App app{"drover: submit and watch jobs on a drover scheduler"};
  app.set_version_flag("--version", std::string("drover ") + DROVER_VERSION);
  app.require_subcommand(1);
  const char* env_api = std::getenv("DROVER_API");
  std::string api = env_api ? env_api : "tcp://127.0.0.1:7700";
  std::string timeout_text = "10s";
  app.add_option("--api", api, "scheduler API endpoint (or $DROVER_API)")
      ->capture_default_str();
  app.add_option("--request-timeout", timeout_text,
                 "how long one request may wait for the scheduler")
      ->capture_default_str();
  std::string key_file, server_key_file;
  AddKeyOptions(app, "client", &key_file, &server_key_file);

  std::string file, job_id, state_filter, task, wait_timeout;
  std::vector<std::string> inputs;
  bool json_out = false, wait = false, follow = false;

  auto* keygen = app.add_subcommand(
      "keygen", "write a new key pair: FILE (secret) and FILE.pub (public)");
  keygen->add_option("FILE", file)->required();

  auto* validate = app.add_subcommand("validate", "check a job file");
  validate->add_option("FILE", file)->required();

  auto* submit = app.add_subcommand("submit", "submit a job file");
  submit->add_option("FILE", file)->required();
  submit->add_option("--input", inputs, "KEY=VALUE, repeatable");
  submit->add_flag("--wait", wait, "wait for the job to end");
  submit->add_flag("--json", json_out, "print the job as JSON");

  auto* status = app.add_subcommand("status", "show a job and its tasks");
  status->add_option("JOB", job_id)->required();
  status->add_flag("--json", json_out);

  auto* list = app.add_subcommand("list", "list jobs, newest first");
  list->add_option("--state", state_filter, "only jobs in this state");
  list->add_flag("--json", json_out);

  auto* logs = app.add_subcommand("logs", "show task output");
  logs->add_option("JOB", job_id)->required();
  logs->add_option("--task", task, "only this task");
  logs->add_flag("--follow,-f", follow, "keep printing until the job ends");

  auto* waitcmd = app.add_subcommand("wait", "wait for a job to end");
  waitcmd->add_option("JOB", job_id)->required();
  waitcmd->add_option("--timeout", wait_timeout, "give up after this long");

  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  cancel->add_option("JOB", job_id)->required();

  auto* workers = app.add_subcommand("workers", "list connected workers");
  workers->add_flag("--json", json_out);

  if (auto rc = ParseCommandLine(app, argc, argv)) return *rc;
  auto request_timeout = ParseDuration(timeout_text);
  if (!request_timeout) {
    std::cerr << "drover: --request-timeout '" << timeout_text
              << "' is not a duration\n";
    return kExitUsage;
  }

  if (validate->parsed()) {
    ParseResult r = ParseJobFile(file);
    for (const Diagnostic& d : r.errors) std::cout << d.ToString() << "\n";
    if (!r.ok()) return kExitUsage;
    std::cout << "ok\n";
    return kExitOk;
  }

  if (keygen->parsed()) {
    auto pair = NewKeyPair();
    Status st = pair.ok() ? WriteKeyPair(file, *pair) : pair.status();
    if (!st.ok()) {
      std::cerr << "drover: " << st.message() << "\n";
      return st.code() == Code::kAlreadyExists ? kExitUsage : kExitFailed;
    }
    std::cout << file << ".pub\n";
    return kExitOk;
  }

  auto keys = LoadClientKeys(key_file, server_key_file);
  if (!keys.ok()) {
    std::cerr << "drover: " << keys.status().message() << "\n";
    return kExitUsage;
  }
  Client client(api, *request_timeout, std::move(*keys));

  if (submit->parsed()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::cerr << file << ":0:0: error: cannot read the file\n";
      return kExitUsage;
    }
    std::stringstream text;
    text << in.rdbuf();
    SubmitRequest req;
    req.source = text.str();
    req.file_name = file;
    for (const std::string& kv : inputs) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "drover: --input '" << kv << "' must be KEY=VALUE\n";
        return kExitUsage;
      }
      req.inputs[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    auto reply = client.Call<SubmitReply>(req);
    if (!reply.ok()) return Fail(reply.status(), &client);
    if (wait) return WaitFor(client, reply->job_id, std::nullopt, json_out);
    if (json_out) {
      StatusRequest s;
      s.job_id = reply->job_id;
      auto job = client.Call<StatusReply>(s);
      if (!job.ok()) return Fail(job.status(), &client);
      std::cout << ToJson(job->job, true).dump(2) << "\n";
    } else {
      std::cout << reply->job_id << "\n";
    }
    return kExitOk;
  }

  if (status->parsed()) {
    StatusRequest req;
    req.job_id = job_id;
    auto reply = client.Call<StatusReply>(req);
    if (!reply.ok()) return Fail(reply.status(), &client);
    if (json_out) {
      std::cout << ToJson(reply->job, true).dump(2) << "\n";
    } else {
      PrintJob(reply->job);
    }
    return kExitOk;
  }

  if (list->parsed()) {
    ListRequest req;
    req.state = state_filter;
    req.limit = 1000;
    auto reply = client.Call<ListReply>(req);
    if (!reply.ok()) return Fail(reply.status(), &client);
    if (json_out) {
      nlohmann::json arr = nlohmann::json::array();
      for (const JobView& j : reply->jobs) arr.push_back(ToJson(j, false));
      std::cout << arr.dump(2) << "\n";
    } else {
      std::cout << std::left << std::setw(22) << "ID" << std::setw(11)
                << "STATE" << std::setw(26) << "CREATED" << "NAME\n";
      for (const JobView& j : reply->jobs) {
        std::cout << std::left << std::setw(22) << j.id << std::setw(11)
                  << j.state << std::setw(26) << Dash(j.created_at) << j.name
                  << "\n";
      }
    }
    return kExitOk;
  }

  if (logs->parsed()) {
    uint64_t after = 0;
    Millis pause(50);
    while (true) {
      LogsRequest req;
      req.job_id = job_id;
      req.task = task;
      req.after = after;
      auto reply = client.Call<LogsReply>(req);
      if (!reply.ok()) return Fail(reply.status(), &client);
      for (const LogLine& l : reply->chunks) {
        if (l.stream == "drover") {
          std::cerr << "[drover] " << l.task << ": " << l.data;
        } else {
          std::cout << l.data;
        }
      }
      std::cout.flush();
      const bool more = reply->last != after;
      after = reply->last;
      if (!follow && !more) break;
      if (follow && reply->job_finished && !more) break;
      if (!more) {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, Millis(500));
      } else {
        pause = Millis(50);
      }
    }
    return kExitOk;
  }

  if (waitcmd->parsed()) {
    std::optional<Millis> limit;
    if (!wait_timeout.empty()) {
      limit = ParseDuration(wait_timeout);
      if (!limit) {
        std::cerr << "drover: --timeout '" << wait_timeout
                  << "' is not a duration\n";
        return kExitUsage;
      }
    }
    return WaitFor(client, job_id, limit, false);
  }

  if (cancel->parsed()) {
    CancelRequest req;
    req.job_id = job_id;
    auto reply = client.Call<StatusReply>(req);
    if (!reply.ok()) return Fail(reply.status(), &client);
    std::cout << job_id << " CANCELLED\n";
    return kExitOk;
  }

  if (workers->parsed()) {
    auto reply = client.Call<WorkersReply>(WorkersRequest{});
    if (!reply.ok()) return Fail(reply.status(), &client);
    if (json_out) {
      nlohmann::json arr = nlohmann::json::array();
      for (const WorkerView& w : reply->workers) {
        arr.push_back({{"name", w.name},
                       {"state", w.state},
                       {"queues", w.queues},
                       {"runtimes", w.runtimes},
                       {"running", w.running},
                       {"held", w.held},
                       {"last_heartbeat", OrNull(w.last_heartbeat)}});
      }
      std::cout << arr.dump(2) << "\n";
    } else {
      std::cout << std::left << std::setw(24) << "NAME" << std::setw(10)
                << "STATE" << std::setw(24) << "QUEUES" << std::setw(9)
                << "RUNNING" << "LAST HEARTBEAT\n";
      for (const WorkerView& w : reply->workers) {
        std::string queues;
        for (const auto& [q, n] : w.queues) {
          queues += (queues.empty() ? "" : ",") + q + ":" + std::to_string(n);
        }
        std::string running = std::to_string(w.running);
        if (w.held > 0) running += "+" + std::to_string(w.held);
        std::cout << std::left << std::setw(24) << w.name << std::setw(10)
                  << w.state << std::setw(24) << queues << std::setw(9)
                  << running << Dash(w.last_heartbeat) << "\n";
      }
    }
    return kExitOk;
  }
  return kExitUsage;
}
