// Job files: TOML text to a validated JobSpec. See include/drover/job_spec.h
// and, for the format itself, docs/JOBS.md.
//
// The parser never stops at the first problem: it walks the whole document,
// records a Diagnostic for every bad value it meets, and only builds the
// JobSpec when there were none, so one `drover validate` run shows a user
// everything to fix.
//
// The Parser here walks the document and applies [defaults]; it reads each
// value through a TomlReader (toml_reader.h), keeps each task as a TaskDraft
// (task_draft.h) until CheckJobGraph (job_graph.h) has checked names and
// dependencies, and gathers every problem in an ErrorList (error_list.h).
#include "drover/job_spec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <optional>
#include <sstream>
#include <utility>

#include "ascii.h"
#include "error_list.h"
#include "job_graph.h"
#include "suggester.h"
#include "task_draft.h"
#include "toml_reader.h"

namespace drover {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr size_t kMaxTasks = 10000;
constexpr int64_t kMaxRetryLimit = 1000;

constexpr std::string_view kJobKeys[] = {
    "name", "description", "queue", "inputs", "secrets", "defaults", "tasks"};
constexpr std::string_view kTaskKeys[] = {
    "name",  "image",   "run",  "cmd",        "entrypoint",
    "env",   "workdir", "user", "volumes",    "network",
    "queue", "var",     "if",   "depends_on", "timeout",
    "retry", "limits",  "pre",  "post",       "runtime",
    "cap_add"};
// Keys a pre or post task may not set: it runs inside its parent's attempt.
constexpr std::string_view kHookForbidden[] = {"depends_on", "pre",   "post",
                                               "var",        "queue", "retry"};
constexpr std::string_view kHookKeys[] = {
    "name", "image",   "run",     "cmd", "entrypoint", "env",    "workdir",
    "user", "volumes", "network", "if",  "timeout",    "limits", "runtime",
    "cap_add"};
constexpr std::string_view kDefaultsKeys[] = {
    "timeout", "retry", "limits",  "queue", "network",
    "image",   "env",   "workdir", "user",  "runtime", "cap_add"};
constexpr std::string_view kRetryKeys[] = {"limit", "initial_delay",
                                           "max_delay", "scaling"};
constexpr std::string_view kLimitsKeys[] = {"cpus", "memory", "pids"};

bool Contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

bool IsIdentifier(std::string_view s) {
  return !s.empty() && !IsDigit(s[0]) &&
         std::all_of(s.begin(), s.end(), IsWordChar);
}

// Task and queue names: what can appear unquoted in logs and CLI flags.
bool IsName(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return IsWordChar(c) || c == '.' || c == '-';
  });
}

class Parser {
 public:
  Parser(std::string_view file,
         const std::map<std::string, std::string>& overrides)
      : file_(file), errors_(file), overrides_(overrides) {}

  ParseResult Parse(std::string_view text);

 private:
  void Error(Location at, std::string_view message) {
    errors_.Add(at, message);
  }

  bool ParseSetting(std::string_view key, const toml::node& v, TaskSettings& s);
  void ParseRetry(const toml::node& v, TaskSettings& s);
  void ParseLimits(const toml::node& v, TaskSettings& s);
  void ParseDefaults(const toml::node& v);
  TaskDraft ParseTask(const toml::table& t, TaskKind kind, size_t index,
                      const std::string& parent);
  void ParseTaskKey(std::string_view key, const toml::node& v, TaskDraft& d);
  std::vector<TaskDraft> ParseHooks(const toml::node& v, std::string_view key,
                                    TaskKind kind, const std::string& parent);
  TaskSpec Resolve(const TaskDraft& d, const std::string& parent_queue,
                   TaskKind kind);

  std::string file_;
  ErrorList errors_;
  Suggester suggest_;
  TomlReader reader_{errors_, suggest_};
  const std::map<std::string, std::string>& overrides_;
  TaskSettings defaults_;
  std::string job_queue_ = "default";
};

bool Parser::ParseSetting(std::string_view key, const toml::node& v,
                          TaskSettings& s) {
  if (key == "timeout") {
    s.timeout = reader_.Duration(v, key, /*allow_zero=*/false);
  } else if (key == "retry") {
    ParseRetry(v, s);
  } else if (key == "limits") {
    ParseLimits(v, s);
  } else if (key == "queue") {
    s.queue = reader_.NonEmpty(v, key);
    if (s.queue && !IsName(*s.queue)) {
      reader_.Bad(v, key, " may only hold letters, digits, '_', '.' and '-'");
      s.queue.reset();
    }
  } else if (key == "network") {
    s.network = reader_.NonEmpty(v, key);
  } else if (key == "image") {
    s.image = reader_.NonEmpty(v, key);
    if (s.image) reader_.Template(v, *s.image, key, /*allow_secrets=*/false);
  } else if (key == "env") {
    s.env = reader_.StringTable(v, key);
    const auto* tbl = v.as_table();
    for (auto it = tbl ? tbl->begin() : toml::table::const_iterator{};
         tbl && it != tbl->end(); ++it) {
      std::string_view n = it->first.str();
      if (n.empty() || n.find_first_of(std::string_view("=\0", 2)) !=
                           std::string_view::npos) {
        Error(Loc(it->first.source()), "environment variable name " +
                                           Quoted(n) + reader_.context() +
                                           " must be non-empty and must not "
                                           "contain '='");
        s.env.reset();
      }
      if (const auto* str = it->second.as_string()) {
        reader_.Template(it->second, str->get(), "env." + std::string(n), true);
      }
    }
  } else if (key == "cap_add") {
    s.cap_add = reader_.StringArray(v, key);
    if (s.cap_add) {
      const auto* arr = v.as_array();
      for (size_t i = 0; i < s.cap_add->size(); ++i) {
        std::string& cap = (*s.cap_add)[i];
        std::string name = CapabilityName(cap);
        if (name.empty()) {
          reader_.Bad(arr ? (*arr)[i] : v, Elem(key, i),
                      ": \"" + cap +
                          "\" is not a capability name such as \"NET_ADMIN\"");
        }
        cap = std::move(name);
      }
      std::erase(*s.cap_add, std::string());
    }
  } else if (key == "workdir") {
    s.workdir = reader_.String(v, key);
  } else if (key == "user") {
    s.user = reader_.String(v, key);
  } else if (key == "runtime") {
    if (auto r = reader_.String(v, key)) {
      if (*r == "docker" || *r == "shell") {
        s.runtime = *r == "docker" ? RuntimeKind::kDocker : RuntimeKind::kShell;
      } else {
        reader_.Bad(v, key,
                    " must be \"docker\" or \"shell\", not \"" + *r + "\"");
      }
      s.runtime_at = Loc(v);
    }
  } else {
    return false;
  }
  return true;
}

void Parser::ParseRetry(const toml::node& v, TaskSettings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr)
    return reader_.WrongType(v, "retry", "a table such as { limit = 2 }");
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "retry." + std::string(key);
    if (key == "limit") {
      const auto* i = n.as_integer();
      if (i == nullptr) {
        reader_.WrongType(n, name, "a non-negative integer");
      } else if (i->get() < 0) {
        reader_.Bad(n, name, " must be a non-negative integer");
      } else if (i->get() > kMaxRetryLimit) {
        reader_.Bad(n, name,
                    " must be at most " + std::to_string(kMaxRetryLimit));
      } else {
        s.retry_limit = static_cast<uint32_t>(i->get());
      }
    } else if (key == "initial_delay") {
      s.initial_delay = reader_.Duration(n, name, /*allow_zero=*/true);
    } else if (key == "max_delay") {
      s.max_delay = reader_.Duration(n, name, /*allow_zero=*/true);
    } else if (key == "scaling") {
      s.scaling = reader_.Number(n, name, "a number of at least 1.0",
                                 [](double x) { return x >= 1.0; });
    } else {
      reader_.Unknown(k, kRetryKeys, "retry.");
    }
  }
}

void Parser::ParseLimits(const toml::node& v, TaskSettings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr)
    return reader_.WrongType(v, "limits", "a table such as { cpus = 1 }");
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "limits." + std::string(key);
    if (key == "cpus") {
      s.cpus = reader_.Number(n, name, "a positive number",
                              [](double x) { return x > 0; });
    } else if (key == "memory") {
      std::optional<int64_t> bytes;
      if (const auto* i = n.as_integer()) {
        bytes = i->get();
      } else if (const auto* str = n.as_string()) {
        bytes = ParseSize(str->get());
        if (!bytes) {
          reader_.Bad(
              n, name,
              ": bad size \"" + str->get() +
                  "\"; use a number with an optional unit: k, m, g or t "
                  "(e.g. \"512m\", \"2g\")");
          continue;
        }
      } else {
        reader_.WrongType(n, name, "a size such as \"512m\"");
        continue;
      }
      if (*bytes > 0) {
        s.memory = bytes;
      } else {
        reader_.Bad(n, name, " must be positive");
      }
    } else if (key == "pids") {
      const auto* i = n.as_integer();
      if (i == nullptr) {
        reader_.WrongType(n, name, "a positive integer");
      } else if (i->get() <= 0) {
        reader_.Bad(n, name, " must be positive");
      } else {
        s.pids = i->get();
      }
    } else {
      reader_.Unknown(k, kLimitsKeys, "limits.");
    }
  }
}

void Parser::ParseDefaults(const toml::node& v) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr) return reader_.WrongType(v, "defaults", "a table");
  reader_.SetContext(" in [defaults]");
  for (auto&& [k, n] : *tbl) {
    if (ParseSetting(k.str(), n, defaults_)) continue;
    if (Contains(kTaskKeys, k.str())) {
      Error(Loc(k.source()), "key " + Quoted(k.str()) +
                                 " cannot have a default; set it in each task");
    } else {
      reader_.Unknown(k, kDefaultsKeys);
    }
  }
  reader_.SetContext("");
}

std::vector<TaskDraft> Parser::ParseHooks(const toml::node& v,
                                          std::string_view key, TaskKind kind,
                                          const std::string& parent) {
  std::vector<TaskDraft> out;
  const auto* arr = v.as_array();
  if (arr == nullptr) reader_.WrongType(v, key, "an array of task tables");
  for (size_t i = 0; arr && i < arr->size(); ++i) {
    if (const auto* t = (*arr)[i].as_table()) {
      out.push_back(ParseTask(*t, kind, i + 1, parent));
    } else {
      reader_.WrongType((*arr)[i], Elem(key, i), "a task table");
    }
  }
  return out;
}

TaskDraft Parser::ParseTask(const toml::table& t, TaskKind kind, size_t index,
                            const std::string& parent) {
  TaskDraft d;
  d.where = Loc(t);
  if (const auto* n = t.get("name"); n && n->is_string()) {
    d.name = n->as_string()->get();
  }
  std::string self = IsName(d.name) ? "task " + Quoted(d.name)
                                    : "task #" + std::to_string(index);
  d.label = kind == TaskKind::kTask  ? self
            : kind == TaskKind::kPre ? "pre " + self + " of " + parent
                                     : "post " + self + " of " + parent;
  std::string outer = reader_.SetContext(" in " + d.label);
  for (auto&& [k, v] : t) {
    std::string_view key = k.str();
    if (kind != TaskKind::kTask && Contains(kHookForbidden, key)) {
      Error(Loc(k.source()), "key " + Quoted(key) + " is not allowed" +
                                 reader_.context() +
                                 "; pre and post tasks run inside their task");
    } else if (!ParseSetting(key, v, d.own)) {
      ParseTaskKey(key, v, d);
      if (!Contains(kTaskKeys, key)) {
        reader_.Unknown(
            k, kind == TaskKind::kTask ? Keys(kTaskKeys) : Keys(kHookKeys));
      }
    }
  }
  if (!t.contains("name"))
    Error(d.where, "missing required key 'name'" + reader_.context());
  reader_.SetContext(std::move(outer));
  return d;
}

void Parser::ParseTaskKey(std::string_view key, const toml::node& v,
                          TaskDraft& d) {
  const auto* arr = v.as_array();
  if (key == "name") {
    auto name = reader_.String(v, key);
    if (name && !IsName(*name)) {
      Error(Loc(v), "task name \"" + *name +
                        "\" must be non-empty and hold only letters, digits, "
                        "'_', '.' and '-'");
    } else if (name) {
      d.named = true;
      d.name_at = Loc(v);
    }
  } else if (key == "run") {
    d.run_key = true;
    d.run = reader_.NonEmpty(v, key);
    if (d.run) reader_.Template(v, *d.run, key, /*allow_secrets=*/false);
  } else if (key == "cmd") {
    d.cmd_key = true;
    d.cmd_at = Loc(v);
    d.cmd = reader_.StringArray(v, key);
    if (d.cmd && d.cmd->empty()) {
      reader_.Bad(v, key, " must not be empty");
      d.cmd.reset();
    }
    for (size_t i = 0; d.cmd && i < d.cmd->size(); ++i) {
      reader_.Template((*arr)[i], (*d.cmd)[i], Elem(key, i),
                       /*allow_secrets=*/false);
    }
  } else if (key == "entrypoint") {
    d.entrypoint = reader_.StringArray(v, key).value_or(d.entrypoint);
  } else if (key == "volumes") {
    d.volumes = reader_.StringArray(v, key).value_or(d.volumes);
    for (size_t i = 0; i < d.volumes.size(); ++i) {
      const std::string& p = d.volumes[i];
      if (p.empty() || p[0] != '/' || p.find(':') != std::string::npos) {
        Error(Loc((*arr)[i]), "volume \"" + p + "\"" + reader_.context() +
                                  " must be an absolute container path "
                                  "without ':'");
      }
    }
  } else if (key == "var") {
    auto var = reader_.String(v, key);
    if (var && !IsIdentifier(*var)) {
      reader_.Bad(
          v, key,
          " must be an identifier (letters, digits and '_', not starting "
          "with a digit), not \"" +
              *var + "\"");
    } else if (var) {
      d.var = *var;
      d.var_at = Loc(v);
    }
  } else if (key == "if") {
    if (auto cond = reader_.String(v, key)) {
      d.if_expr = *cond;
      reader_.Template(v, *cond, key, /*allow_secrets=*/false);
    }
  } else if (key == "depends_on") {
    if (auto names = reader_.StringArray(v, key)) {
      d.depends_on.emplace();
      for (size_t i = 0; i < names->size(); ++i) {
        d.depends_on->push_back({(*names)[i], Loc((*arr)[i])});
      }
    }
  } else if (key == "pre" || key == "post") {
    (key == "pre" ? d.pre : d.post) = ParseHooks(
        v, key, key == "pre" ? TaskKind::kPre : TaskKind::kPost, d.label);
  }
}

TaskSpec Parser::Resolve(const TaskDraft& d, const std::string& parent_queue,
                         TaskKind kind) {
  const TaskSettings& o = d.own;
  const TaskSettings& f = defaults_;
  TaskSpec t;
  t.name = d.name;
  t.where = d.where;
  t.run = d.run.value_or("");
  t.cmd = d.cmd.value_or(std::vector<std::string>{});
  t.entrypoint = d.entrypoint;
  t.volumes = d.volumes;
  t.var = d.var;
  t.if_expr = d.if_expr;
  t.image = o.image.value_or(f.image.value_or(""));
  t.workdir = o.workdir.value_or(f.workdir.value_or(""));
  t.user = o.user.value_or(f.user.value_or(""));
  t.network = o.network.value_or(f.network.value_or("none"));
  t.queue = kind == TaskKind::kTask
                ? o.queue.value_or(f.queue.value_or(job_queue_))
                : parent_queue;
  t.timeout = o.timeout ? o.timeout : f.timeout;
  if (kind == TaskKind::kTask) {  // a pre or post task is retried with its task
    RetryPolicy r;
    t.retry.limit = o.retry_limit.value_or(f.retry_limit.value_or(r.limit));
    t.retry.initial_delay =
        o.initial_delay.value_or(f.initial_delay.value_or(r.initial_delay));
    t.retry.max_delay = o.max_delay.value_or(f.max_delay.value_or(r.max_delay));
    t.retry.scaling = o.scaling.value_or(f.scaling.value_or(r.scaling));
  }
  t.limits.cpus = o.cpus.value_or(f.cpus.value_or(0));
  t.limits.memory_bytes = o.memory.value_or(f.memory.value_or(0));
  t.limits.pids = o.pids.value_or(f.pids.value_or(0));
  t.cap_add = o.cap_add.value_or(f.cap_add.value_or(std::vector<std::string>{}));
  if (f.env) t.env = *f.env;
  if (o.env) {
    for (const auto& [k, v] : *o.env) t.env[k] = v;
  }
  t.runtime = o.runtime.value_or(f.runtime.value_or(
      t.image.empty() ? RuntimeKind::kShell : RuntimeKind::kDocker));

  if (t.runtime == RuntimeKind::kDocker && t.image.empty()) {
    Error(o.runtime ? o.runtime_at : d.where,
          d.label + " uses runtime 'docker' but has no 'image'");
  }
  if (d.run_key && d.cmd_key) {
    Error(d.cmd_at, d.label + " sets both 'run' and 'cmd'; use one of them");
  }
  // A container without run or cmd runs its image's default command; a
  // shell task has no such fallback.
  if (!d.run_key && !d.cmd_key && t.runtime == RuntimeKind::kShell) {
    Error(d.where, d.label + " has nothing to run; set 'run' or 'cmd'" +
                       (t.image.empty() ? "" : " (or use runtime 'docker')"));
  }
  // Pre and post tasks are reported by name in logs and status, so their
  // names must tell them apart.
  std::map<std::string, Location> hook_names;
  for (const auto* hooks : {&d.pre, &d.post}) {
    for (const TaskDraft& h : *hooks) {
      auto [it, fresh] = hook_names.emplace(h.name, h.name_at);
      if (h.named && !fresh) {
        Error(h.name_at, "duplicate pre/post task name " + Quoted(h.name) +
                             " in " + d.label + " (first defined at " +
                             At(it->second) + ")");
      }
      TaskSpec hs = Resolve(h, t.queue,
                            hooks == &d.pre ? TaskKind::kPre : TaskKind::kPost);
      // One runtime runs a task together with its pre and post tasks.
      if (hs.runtime != t.runtime) {
        Error(h.own.runtime ? h.own.runtime_at : h.where,
              h.label + " would use runtime '" +
                  std::string(RuntimeName(hs.runtime)) +
                  "' but its task uses '" +
                  std::string(RuntimeName(t.runtime)) +
                  "'; pre and post tasks run with their task's runtime");
      }
      (hooks == &d.pre ? t.pre : t.post).push_back(std::move(hs));
    }
  }
  return t;
}

ParseResult Parser::Parse(std::string_view text) {
  ParseResult result;
  toml::table root;
  if (text.size() > kMaxFileBytes) {
    Error({}, "job file is " + std::to_string(text.size()) +
                  " bytes; the limit is " + std::to_string(kMaxFileBytes));
  } else {
    try {
      root = toml::parse(text, file_);
    } catch (const toml::parse_error& e) {
      Error(Loc(e.source()), std::string(e.description()));
    }
  }
  if (!errors_.empty()) {
    result.errors = errors_.Take();
    return result;
  }

  JobSpec job;
  std::vector<TaskDraft> drafts;
  const toml::node* inputs_node = nullptr;
  // [defaults] and the job queue must be known before tasks are resolved,
  // whatever order the keys come in.
  if (const auto* q = root.get("queue")) {
    TaskSettings top;  // the top-level queue obeys the same rules as a task's
    ParseSetting("queue", *q, top);
    job.queue = job_queue_ = top.queue.value_or(job.queue);
  }
  if (const auto* dflt = root.get("defaults")) ParseDefaults(*dflt);
  for (auto&& [k, v] : root) {
    std::string_view key = k.str();
    if (key == "name") {
      job.name = reader_.NonEmpty(v, key).value_or("");
    } else if (key == "description") {
      job.description = reader_.String(v, key).value_or("");
    } else if (key == "inputs") {
      inputs_node = &v;
      job.inputs = reader_.StringTable(v, key).value_or(job.inputs);
    } else if (key == "secrets") {
      job.secrets = reader_.StringTable(v, key).value_or(job.secrets);
    } else if (key == "tasks") {
      const auto* arr = v.as_array();
      if (arr == nullptr) {
        reader_.WrongType(v, key, "an array of tables ([[tasks]])");
      } else if (arr->empty()) {
        Error(Loc(v), "'tasks' must not be empty; add a [[tasks]] table");
      } else if (arr->size() > kMaxTasks) {
        Error(Loc(v), "a job may have at most " + std::to_string(kMaxTasks) +
                          " tasks, not " + std::to_string(arr->size()));
      }
      for (size_t i = 0; arr && i < arr->size(); ++i) {
        if (const auto* t = (*arr)[i].as_table()) {
          drafts.push_back(ParseTask(*t, TaskKind::kTask, i + 1, ""));
        } else {
          reader_.WrongType((*arr)[i], Elem(key, i), "a task table");
        }
      }
    } else if (!Contains(kJobKeys, key)) {
      reader_.Unknown(k, kJobKeys);
    }
  }
  if (!root.contains("name")) Error({1, 1}, "missing required key 'name'");
  if (!root.contains("tasks")) {
    Error({1, 1}, "missing required key 'tasks'; add at least one [[tasks]]");
  }
  std::vector<std::string> declared;
  if (const auto* tbl = inputs_node ? inputs_node->as_table() : nullptr) {
    for (auto&& [k, v] : *tbl) declared.emplace_back(k.str());
  }
  for (const auto& [key, value] : overrides_) {
    if (std::find(declared.begin(), declared.end(), key) != declared.end()) {
      job.inputs[key] = value;
    } else {
      Error(inputs_node ? Loc(*inputs_node) : Location{},
            "--input " + Quoted(key) +
                ": the job declares no such input in [inputs]" +
                suggest_(key, declared));
    }
  }
  for (const TaskDraft& d : drafts) {
    job.tasks.push_back(Resolve(d, job.queue, TaskKind::kTask));
  }
  CheckJobGraph(drafts, job.tasks, errors_, suggest_);

  result.errors = errors_.Take();
  if (result.errors.empty()) result.job = std::move(job);
  return result;
}

}  // namespace

std::string_view RuntimeName(RuntimeKind kind) {
  return kind == RuntimeKind::kDocker ? "docker" : "shell";
}

ParseResult ParseJobText(
    std::string_view text, std::string_view file,
    const std::map<std::string, std::string>& input_overrides) {
  try {
    return Parser(file, input_overrides).Parse(text);
  } catch (const std::exception& e) {
    // Out of memory or a library bug: still an answer, never a crash.
    ParseResult r;
    r.errors.push_back(
        {std::string(file), {}, std::string("cannot parse: ") + e.what()});
    return r;
  }
}

ParseResult ParseJobFile(
    const std::string& path,
    const std::map<std::string, std::string>& input_overrides) {
  ParseResult failed;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st {};
  std::string text;
  if (fd < 0) {
    failed.errors.push_back(
        {path, {}, "cannot open: " + std::string(strerror(errno))});
  } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    failed.errors.push_back({path, {}, "not a regular file"});
  } else if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
    failed.errors.push_back({path,
                             {},
                             "job file is " + std::to_string(st.st_size) +
                                 " bytes; the limit is " +
                                 std::to_string(kMaxFileBytes)});
  } else {
    // Read one byte past the cap: the file may have grown since fstat.
    text.resize(kMaxFileBytes + 1);
    size_t got = 0;
    while (got < text.size()) {
      ssize_t n = read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        failed.errors.push_back(
            {path, {}, "cannot read: " + std::string(strerror(errno))});
      }
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    text.resize(got);
  }
  if (fd >= 0) close(fd);
  if (!failed.errors.empty()) return failed;
  return ParseJobText(text, path, input_overrides);
}

}  // namespace drover
namespace drover {
namespace {

// Byte offsets of (line, column) positions in `text`, as toml++ counts
// them: lines from 1, columns from 1 in code points.
class Positions {
 public:
  explicit Positions(std::string_view text) : text_(text) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') line_starts_.push_back(i + 1);
    }
  }
  std::optional<size_t> Offset(uint32_t line, uint32_t column) const {
    if (line == 0 || line > line_starts_.size() || column == 0) {
      return std::nullopt;
    }
    size_t at = line_starts_[line - 1];
    for (uint32_t c = 1; c < column; ++c) {
      if (at >= text_.size() || text_[at] == '\n') return std::nullopt;
      ++at;  // past the code point's first byte, then its continuation bytes
      while (at < text_.size() &&
             (static_cast<unsigned char>(text_[at]) & 0xC0) == 0x80) {
        ++at;
      }
    }
    return at;
  }

 private:
  std::string_view text_;
  std::vector<size_t> line_starts_;
};

// Whether `text` parses with a secrets table holding exactly `names`, each
// an empty string, and the rest as in `original`.
bool SecretsBlanked(std::string_view text, const toml::table& original) {
  try {
    toml::table t = toml::parse(text);
    const toml::table* secrets = t["secrets"].as_table();
    const toml::table* before = original["secrets"].as_table();
    if (secrets == nullptr || before == nullptr ||
        secrets->size() != before->size()) {
      return false;
    }
    for (const auto& [k, v] : *secrets) {
      if (!before->contains(k.str()) || v.value<std::string>() != "") {
        return false;
      }
    }
    t.erase("secrets");
    toml::table rest = original;
    rest.erase("secrets");
    return t == rest;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

std::string CapabilityName(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (IsAlpha(c) || c == '_') {
      out += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    } else {
      return "";
    }
  }
  if (out.rfind("CAP_", 0) == 0) out.erase(0, 4);
  return out;
}

std::string WithoutSecretValues(std::string_view text) {
  toml::table root;
  try {
    root = toml::parse(text);
  } catch (const std::exception&) {
    return std::string(text);
  }
  const toml::table* secrets = root["secrets"].as_table();
  if (secrets == nullptr || secrets->empty()) return std::string(text);
  // Each value's text becomes "", followed by the line breaks it held, so
  // that every later line keeps its number (for errors that name one).
  struct Span {
    size_t begin, end;
  };
  std::vector<Span> spans;
  const Positions at(text);
  bool located = true;
  for (const auto& [key, value] : *secrets) {
    const toml::source_region& r = value.source();
    auto b = at.Offset(r.begin.line, r.begin.column);
    auto e = at.Offset(r.end.line, r.end.column);
    if (!b || !e || *e < *b) {
      located = false;
      break;
    }
    spans.push_back({*b, *e});
  }
  if (located) {
    std::sort(spans.begin(), spans.end(),
              [](const Span& x, const Span& y) { return x.begin > y.begin; });
    std::string out(text);
    for (const Span& s : spans) {
      const size_t breaks = static_cast<size_t>(
          std::count(out.begin() + s.begin, out.begin() + s.end, '\n'));
      out.replace(s.begin, s.end - s.begin,
                  "\"\"" + std::string(breaks, '\n'));
    }
    if (SecretsBlanked(out, root)) return out;
  }
  // A layout the splice cannot keep (a multi-line string in an inline
  // table, say): the file is written anew, without its comments.
  toml::table* table = root["secrets"].as_table();
  std::vector<std::string> names;
  for (const auto& [key, value] : *table) names.emplace_back(key.str());
  for (const std::string& name : names) table->insert_or_assign(name, "");
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace drover
