// Job files: TOML text to a validated JobSpec. See include/drover/job_spec.h
// and, for the format itself, docs/JOBS.md.
//
// The parser never stops at the first problem: it walks the whole document,
// records a Diagnostic for every bad value it meets, and only builds the
// JobSpec when there were none, so one `drover validate` run shows a user
// everything to fix.
#include "drover/job_spec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <set>
#include <span>
#include <tuple>

#include "drover/expression.h"

namespace drover {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr size_t kMaxTasks = 10000;
constexpr size_t kMaxDiagnostics = 1000;
constexpr size_t kMaxCyclesReported = 20;
constexpr size_t kCycleEnds = 5;  // tasks shown at each end of a long cycle
constexpr int64_t kMaxRetryLimit = 1000;
constexpr double kMaxDurationMs = 100.0 * 365 * 86400 * 1000;  // 100 years
constexpr double kMaxSizeBytes = 4611686018427387904.0;        // 2^62

using Keys = std::span<const std::string_view>;
constexpr std::string_view kJobKeys[] = {
    "name", "description", "queue", "inputs", "secrets", "defaults", "tasks"};
constexpr std::string_view kTaskKeys[] = {
    "name",  "image",   "run",  "cmd",        "entrypoint",
    "env",   "workdir", "user", "volumes",    "network",
    "queue", "var",     "if",   "depends_on", "timeout",
    "retry", "limits",  "pre",  "post",       "runtime"};
// Keys a pre or post task may not set: it runs inside its parent's attempt.
constexpr std::string_view kHookForbidden[] = {"depends_on", "pre",   "post",
                                               "var",        "queue", "retry"};
constexpr std::string_view kHookKeys[] = {
    "name", "image",   "run",     "cmd", "entrypoint", "env",    "workdir",
    "user", "volumes", "network", "if",  "timeout",    "limits", "runtime"};
constexpr std::string_view kDefaultsKeys[] = {
    "timeout", "retry", "limits",  "queue", "network",
    "image",   "env",   "workdir", "user",  "runtime"};
constexpr std::string_view kRetryKeys[] = {"limit", "initial_delay",
                                           "max_delay", "scaling"};
constexpr std::string_view kLimitsKeys[] = {"cpus", "memory"};

bool Contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

// Optimal string alignment distance, case-insensitive: a swap of two
// neighbours counts as one edit, the most common typo.
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1),
      cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = Lower(a[i - 1]) == Lower(b[j - 1]) ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && Lower(a[i - 1]) == Lower(b[j - 2]) &&
          Lower(a[i - 2]) == Lower(b[j - 1])) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Finds "did you mean" candidates. Comparing every unknown name with every
// task name is quadratic, so the work is capped per file: past the budget,
// messages simply come without a suggestion.
class Suggester {
 public:
  // "; did you mean 'PREFIX+x'?" for the nearest close candidate, else "".
  template <typename Range>
  std::string operator()(std::string_view word, const Range& candidates,
                         std::string_view prefix = "") {
    size_t limit = word.size() <= 3 ? 1 : word.size() <= 8 ? 2 : 3;
    size_t best = limit + 1;
    std::string_view pick;
    for (const auto& c : candidates) {
      std::string_view cand(c);
      size_t gap = cand.size() > word.size() ? cand.size() - word.size()
                                             : word.size() - cand.size();
      if (gap > limit) continue;  // cannot be close enough
      size_t cost = (word.size() + 1) * (cand.size() + 1);
      if (cost > budget_) return "";
      budget_ -= cost;
      if (size_t d = EditDistance(word, cand); d < best) {
        best = d;
        pick = cand;
      }
    }
    if (pick.empty()) return "";
    return "; did you mean '" + std::string(prefix) + std::string(pick) + "'?";
  }

 private:
  size_t budget_ = 20'000'000;  // table cells, some 50 ms of work
};

bool IsIdentifier(std::string_view s) {
  if (s.empty() ||
      !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// Task and queue names: what can appear unquoted in logs and CLI flags.
bool IsName(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "nothing";
  }
}

Location Loc(const toml::source_region& r) {
  return {r.begin.line, r.begin.column};
}
Location Loc(const toml::node& n) { return Loc(n.source()); }

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return s;
}

// Reads "12" or "1.5" at `i`; nullopt unless digits, optionally '.' digits.
std::optional<double> ReadNumber(std::string_view s, size_t& i) {
  size_t start = i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == start) return std::nullopt;
  if (i < s.size() && s[i] == '.') {
    size_t frac = ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
    }
    if (i == frac) return std::nullopt;
  }
  double v = 0;
  auto [p, ec] = std::from_chars(s.data() + start, s.data() + i, v);
  if (ec != std::errc() || p != s.data() + i) return std::nullopt;
  return v;
}

// Values a task table or [defaults] sets; what neither sets falls back to
// the built-in default.
struct Settings {
  std::optional<std::string> image, workdir, user, network, queue;
  std::optional<RuntimeKind> runtime;
  Location runtime_at;
  std::optional<Millis> timeout;
  std::optional<uint32_t> retry_limit;
  std::optional<Millis> initial_delay, max_delay;
  std::optional<double> scaling;
  std::optional<double> cpus;
  std::optional<int64_t> memory;
  std::optional<std::map<std::string, std::string>> env;
};

struct Dependency {
  std::string name;
  Location where;
};

enum class Kind { kTask, kPre, kPost };

// A task as written, before [defaults] and the ordering rule are applied.
struct TaskDraft {
  std::string name;
  bool named = false;
  Location where, name_at, var_at, cmd_at;
  std::string label;  // "task 'b'", "task #3", "pre task 'x' of task 'b'"
  bool run_key = false, cmd_key = false;  // present, valid or not
  std::optional<std::string> run;
  std::optional<std::vector<std::string>> cmd;
  std::vector<std::string> entrypoint, volumes;
  std::string var, if_expr;
  std::optional<std::vector<Dependency>> depends_on;
  Settings own;
  std::vector<TaskDraft> pre, post;
};

class Parser {
 public:
  Parser(std::string_view file,
         const std::map<std::string, std::string>& overrides)
      : file_(file), overrides_(overrides) {}

  ParseResult Parse(std::string_view text);

 private:
  void Error(Location at, std::string message);
  std::string Expect(std::string_view key, std::string_view ctx,
                     std::string_view what, const toml::node& got) {
    return Quoted(key) + std::string(ctx) + " must be " + std::string(what) +
           ", not " + TypeName(got);
  }
  // `prefix` names the enclosing table, as in "retry.".
  void Unknown(const toml::key& k, std::string_view ctx, Keys known,
               std::string_view prefix = "") {
    Error(Loc(k.source()),
          "unknown key " + Quoted(std::string(prefix) + std::string(k.str())) +
              std::string(ctx) + Suggest(k.str(), known, prefix));
  }

  std::optional<std::string> String(const toml::node& n, std::string_view key,
                                    std::string_view ctx);
  std::optional<std::string> NonEmpty(const toml::node& n, std::string_view key,
                                      std::string_view ctx);
  std::optional<std::vector<std::string>> StringArray(const toml::node& n,
                                                      std::string_view key,
                                                      std::string_view ctx);
  std::optional<std::map<std::string, std::string>> StringTable(
      const toml::node& n, std::string_view key, std::string_view ctx);
  std::optional<Millis> Duration(const toml::node& n, std::string_view key,
                                 std::string_view ctx, bool allow_zero);
  void Template(const toml::node& n, std::string_view text,
                std::string_view key, std::string_view ctx, bool allow_secrets);

  bool ParseSetting(std::string_view key, const toml::node& v,
                    std::string_view ctx, Settings& s);
  void ParseRetry(const toml::node& v, std::string_view ctx, Settings& s);
  void ParseLimits(const toml::node& v, std::string_view ctx, Settings& s);
  void ParseDefaults(const toml::node& v);
  TaskDraft ParseTask(const toml::table& t, Kind kind, size_t index,
                      const std::string& parent);
  void ParseTaskKey(std::string_view key, const toml::node& v,
                    const std::string& ctx, TaskDraft& d);
  std::vector<TaskDraft> ParseHooks(const toml::node& v, std::string_view key,
                                    const std::string& ctx, Kind kind,
                                    const std::string& parent);
  TaskSpec Resolve(const TaskDraft& d, const std::string& parent_queue,
                   Kind kind);
  void CheckGraph(const std::vector<TaskDraft>& drafts,
                  std::vector<TaskSpec>& tasks);

  template <typename Range>
  std::string Suggest(std::string_view word, const Range& candidates,
                      std::string_view prefix = "") {
    return suggest_(word, candidates, prefix);
  }

  std::string file_;
  const std::map<std::string, std::string>& overrides_;
  Suggester suggest_;
  std::vector<Diagnostic> errors_;
  Settings defaults_;
  std::string job_queue_ = "default";
};

void Parser::Error(Location at, std::string message) {
  errors_.push_back({file_, at, std::move(message)});
}

std::optional<std::string> Parser::String(const toml::node& n,
                                          std::string_view key,
                                          std::string_view ctx) {
  if (const auto* s = n.as_string()) return s->get();
  Error(Loc(n), Expect(key, ctx, "a string", n));
  return std::nullopt;
}

std::optional<std::string> Parser::NonEmpty(const toml::node& n,
                                            std::string_view key,
                                            std::string_view ctx) {
  auto s = String(n, key, ctx);
  if (s && s->empty()) {
    Error(Loc(n), Quoted(key) + std::string(ctx) + " must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<std::vector<std::string>> Parser::StringArray(
    const toml::node& n, std::string_view key, std::string_view ctx) {
  const auto* arr = n.as_array();
  if (arr == nullptr) {
    Error(Loc(n), Expect(key, ctx, "an array of strings", n));
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& e = (*arr)[i];
    if (const auto* s = e.as_string()) {
      out.push_back(s->get());
    } else {
      Error(Loc(e), Expect(std::string(key) + "[" + std::to_string(i) + "]",
                           ctx, "a string", e));
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::map<std::string, std::string>> Parser::StringTable(
    const toml::node& n, std::string_view key, std::string_view ctx) {
  const auto* tbl = n.as_table();
  if (tbl == nullptr) {
    Error(Loc(n), Expect(key, ctx, "a table of strings", n));
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  bool ok = true;
  for (auto&& [k, v] : *tbl) {
    std::string name = std::string(key) + "." + std::string(k.str());
    if (const auto* s = v.as_string()) {
      out.emplace(k.str(), s->get());
    } else {
      Error(Loc(v), Expect(name, ctx, "a string", v));
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<Millis> Parser::Duration(const toml::node& n,
                                       std::string_view key,
                                       std::string_view ctx, bool allow_zero) {
  const auto* s = n.as_string();
  if (s == nullptr) {
    Error(Loc(n), Expect(key, ctx, "a duration string such as \"30s\"", n));
    return std::nullopt;
  }
  auto d = ParseDuration(s->get());
  if (!d) {
    Error(Loc(n), Quoted(key) + std::string(ctx) + ": bad duration \"" +
                      s->get() +
                      "\"; use a number with a unit: ms, s, m, h or d "
                      "(e.g. \"1500ms\", \"30s\", \"1h30m\")");
    return std::nullopt;
  }
  if (!allow_zero && d->count() == 0) {
    Error(Loc(n), Quoted(key) + std::string(ctx) + " must be longer than 0");
    return std::nullopt;
  }
  return d;
}

void Parser::Template(const toml::node& n, std::string_view text,
                      std::string_view key, std::string_view ctx,
                      bool allow_secrets) {
  Status s = CheckTemplate(text, allow_secrets);
  if (!s.ok())
    Error(Loc(n), Quoted(key) + std::string(ctx) + ": " + s.message());
}

bool Parser::ParseSetting(std::string_view key, const toml::node& v,
                          std::string_view ctx, Settings& s) {
  if (key == "timeout") {
    s.timeout = Duration(v, key, ctx, /*allow_zero=*/false);
  } else if (key == "retry") {
    ParseRetry(v, ctx, s);
  } else if (key == "limits") {
    ParseLimits(v, ctx, s);
  } else if (key == "queue") {
    s.queue = NonEmpty(v, key, ctx);
    if (s.queue && !IsName(*s.queue)) {
      Error(Loc(v), Quoted(key) + std::string(ctx) +
                        " may only hold letters, digits, '_', '.' and '-'");
      s.queue.reset();
    }
  } else if (key == "network") {
    s.network = NonEmpty(v, key, ctx);
  } else if (key == "image") {
    s.image = NonEmpty(v, key, ctx);
    if (s.image) Template(v, *s.image, key, ctx, false);
  } else if (key == "env") {
    s.env = StringTable(v, key, ctx);
    if (const auto* tbl = v.as_table()) {
      for (auto&& [name, value] : *tbl) {
        if (name.str().empty() || name.str().find_first_of(std::string_view(
                                      "=\0", 2)) != std::string_view::npos) {
          Error(Loc(name.source()),
                "environment variable name " + Quoted(name.str()) +
                    std::string(ctx) +
                    " must be non-empty and must not contain '='");
          s.env.reset();
        }
        if (const auto* str = value.as_string()) {
          Template(value, str->get(), "env." + std::string(name.str()), ctx,
                   /*allow_secrets=*/true);
        }
      }
    }
  } else if (key == "workdir") {
    s.workdir = String(v, key, ctx);
  } else if (key == "user") {
    s.user = String(v, key, ctx);
  } else if (key == "runtime") {
    if (auto r = String(v, key, ctx)) {
      if (*r == "docker") {
        s.runtime = RuntimeKind::kDocker;
      } else if (*r == "shell") {
        s.runtime = RuntimeKind::kShell;
      } else {
        Error(Loc(v), "'runtime'" + std::string(ctx) +
                          " must be \"docker\" or \"shell\", not \"" + *r +
                          "\"");
      }
      s.runtime_at = Loc(v);
    }
  } else {
    return false;
  }
  return true;
}

void Parser::ParseRetry(const toml::node& v, std::string_view ctx,
                        Settings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr) {
    Error(Loc(v), Expect("retry", ctx, "a table such as { limit = 2 }", v));
    return;
  }
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "retry." + std::string(key);
    if (key == "limit") {
      const auto* i = n.as_integer();
      if (i == nullptr || i->get() < 0) {
        Error(Loc(n), i ? Quoted(name) + std::string(ctx) +
                              " must be a non-negative integer"
                        : Expect(name, ctx, "a non-negative integer", n));
      } else if (i->get() > kMaxRetryLimit) {
        Error(Loc(n), Quoted(name) + std::string(ctx) + " must be at most " +
                          std::to_string(kMaxRetryLimit));
      } else {
        s.retry_limit = static_cast<uint32_t>(i->get());
      }
    } else if (key == "initial_delay") {
      s.initial_delay = Duration(n, name, ctx, /*allow_zero=*/true);
    } else if (key == "max_delay") {
      s.max_delay = Duration(n, name, ctx, /*allow_zero=*/true);
    } else if (key == "scaling") {
      std::optional<double> x = n.value<double>();
      if (!n.is_number()) {
        Error(Loc(n), Expect(name, ctx, "a number of at least 1.0", n));
      } else if (!x || !(*x >= 1.0) || !std::isfinite(*x)) {
        Error(Loc(n), Quoted(name) + std::string(ctx) +
                          " must be a number of at least 1.0");
      } else {
        s.scaling = *x;
      }
    } else {
      Unknown(k, ctx, kRetryKeys, "retry.");
    }
  }
}

void Parser::ParseLimits(const toml::node& v, std::string_view ctx,
                         Settings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr) {
    Error(Loc(v), Expect("limits", ctx, "a table such as { cpus = 1 }", v));
    return;
  }
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "limits." + std::string(key);
    if (key == "cpus") {
      std::optional<double> x = n.value<double>();
      if (!n.is_number()) {
        Error(Loc(n), Expect(name, ctx, "a positive number", n));
      } else if (!x || !(*x > 0) || !std::isfinite(*x)) {
        Error(Loc(n),
              Quoted(name) + std::string(ctx) + " must be a positive number");
      } else {
        s.cpus = *x;
      }
    } else if (key == "memory") {
      std::optional<int64_t> bytes;
      if (const auto* i = n.as_integer()) {
        bytes = i->get();
      } else if (const auto* str = n.as_string()) {
        bytes = ParseSize(str->get());
        if (!bytes) {
          Error(Loc(n), Quoted(name) + std::string(ctx) + ": bad size \"" +
                            str->get() +
                            "\"; use a number with an optional unit: k, m, "
                            "g or t (e.g. \"512m\", \"2g\")");
          continue;
        }
      } else {
        Error(Loc(n), Expect(name, ctx, "a size such as \"512m\"", n));
        continue;
      }
      if (*bytes <= 0) {
        Error(Loc(n), Quoted(name) + std::string(ctx) + " must be positive");
      } else {
        s.memory = bytes;
      }
    } else {
      Unknown(k, ctx, kLimitsKeys, "limits.");
    }
  }
}

void Parser::ParseDefaults(const toml::node& v) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr) {
    Error(Loc(v), Expect("defaults", "", "a table", v));
    return;
  }
  const std::string ctx = " in [defaults]";
  for (auto&& [k, n] : *tbl) {
    if (ParseSetting(k.str(), n, ctx, defaults_)) continue;
    if (Contains(kTaskKeys, k.str())) {
      Error(Loc(k.source()), "key " + Quoted(k.str()) +
                                 " cannot have a default; set it in each task");
    } else {
      Unknown(k, ctx, kDefaultsKeys);
    }
  }
}

std::vector<TaskDraft> Parser::ParseHooks(const toml::node& v,
                                          std::string_view key,
                                          const std::string& ctx, Kind kind,
                                          const std::string& parent) {
  std::vector<TaskDraft> out;
  const auto* arr = v.as_array();
  if (arr == nullptr) {
    Error(Loc(v), Expect(key, ctx, "an array of task tables", v));
    return out;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& e = (*arr)[i];
    if (const auto* t = e.as_table()) {
      out.push_back(ParseTask(*t, kind, i + 1, parent));
    } else {
      Error(Loc(e), Expect(std::string(key) + "[" + std::to_string(i) + "]",
                           ctx, "a task table", e));
    }
  }
  return out;
}

TaskDraft Parser::ParseTask(const toml::table& t, Kind kind, size_t index,
                            const std::string& parent) {
  TaskDraft d;
  d.where = Loc(t);
  if (const auto* n = t.get("name"); n && n->is_string()) {
    d.name = n->as_string()->get();
  }
  std::string self = IsName(d.name) ? "task " + Quoted(d.name)
                                    : "task #" + std::to_string(index);
  d.label = kind == Kind::kTask  ? self
            : kind == Kind::kPre ? "pre " + self + " of " + parent
                                 : "post " + self + " of " + parent;
  const std::string ctx = " in " + d.label;
  for (auto&& [k, v] : t) {
    std::string_view key = k.str();
    if (kind != Kind::kTask && Contains(kHookForbidden, key)) {
      Error(Loc(k.source()), "key " + Quoted(key) + " is not allowed" + ctx +
                                 "; pre and post tasks run inside their task");
    } else if (!ParseSetting(key, v, ctx, d.own)) {
      ParseTaskKey(key, v, ctx, d);
      if (!Contains(kTaskKeys, key)) {
        Unknown(k, ctx,
                kind == Kind::kTask ? Keys(kTaskKeys) : Keys(kHookKeys));
      }
    }
  }
  if (!t.contains("name")) {
    Error(d.where, "missing required key 'name'" + ctx);
  }
  return d;
}

void Parser::ParseTaskKey(std::string_view key, const toml::node& v,
                          const std::string& ctx, TaskDraft& d) {
  if (key == "name") {
    auto name = String(v, key, ctx);
    if (!name) return;
    if (!IsName(*name)) {
      Error(Loc(v), "task name \"" + *name +
                        "\" must be non-empty and hold only letters, digits, "
                        "'_', '.' and '-'");
      return;
    }
    d.named = true;
    d.name_at = Loc(v);
  } else if (key == "run") {
    d.run_key = true;
    d.run = NonEmpty(v, key, ctx);
    if (d.run) Template(v, *d.run, key, ctx, false);
  } else if (key == "cmd") {
    d.cmd_key = true;
    d.cmd = StringArray(v, key, ctx);
    d.cmd_at = Loc(v);
    if (d.cmd && d.cmd->empty()) {
      Error(Loc(v), "'cmd'" + ctx + " must not be empty");
      d.cmd.reset();
    }
    const auto* arr = v.as_array();
    for (size_t i = 0; d.cmd && i < arr->size(); ++i) {
      Template((*arr)[i], (*d.cmd)[i], "cmd[" + std::to_string(i) + "]", ctx,
               false);
    }
  } else if (key == "entrypoint") {
    d.entrypoint = StringArray(v, key, ctx).value_or(d.entrypoint);
  } else if (key == "volumes") {
    auto vols = StringArray(v, key, ctx);
    const auto* arr = v.as_array();
    for (size_t i = 0; vols && i < vols->size(); ++i) {
      const std::string& p = (*vols)[i];
      if (p.empty() || p[0] != '/' || p.find(':') != std::string::npos) {
        Error(Loc((*arr)[i]), "volume \"" + p + "\"" + ctx +
                                  " must be an absolute container path "
                                  "without ':'");
      }
    }
    d.volumes = vols.value_or(d.volumes);
  } else if (key == "var") {
    auto var = String(v, key, ctx);
    if (var && !IsIdentifier(*var)) {
      Error(Loc(v), "'var'" + ctx +
                        " must be an identifier (letters, "
                        "digits and '_', not starting with a "
                        "digit), not \"" +
                        *var + "\"");
    } else if (var) {
      d.var = *var;
      d.var_at = Loc(v);
    }
  } else if (key == "if") {
    if (auto cond = String(v, key, ctx)) {
      d.if_expr = *cond;
      Template(v, *cond, key, ctx, false);
    }
  } else if (key == "depends_on") {
    const auto* arr = v.as_array();
    auto names = StringArray(v, key, ctx);
    if (!names) return;
    d.depends_on.emplace();
    for (size_t i = 0; i < names->size(); ++i) {
      d.depends_on->push_back({(*names)[i], Loc((*arr)[i])});
    }
  } else if (key == "pre") {
    d.pre = ParseHooks(v, key, ctx, Kind::kPre, d.label);
  } else if (key == "post") {
    d.post = ParseHooks(v, key, ctx, Kind::kPost, d.label);
  }
}

TaskSpec Parser::Resolve(const TaskDraft& d, const std::string& parent_queue,
                         Kind kind) {
  const Settings& o = d.own;
  const Settings& f = defaults_;
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
  t.queue = kind == Kind::kTask ? o.queue.value_or(f.queue.value_or(job_queue_))
                                : parent_queue;
  t.timeout = o.timeout ? o.timeout : f.timeout;
  if (kind == Kind::kTask) {
    RetryPolicy r;
    t.retry.limit = o.retry_limit.value_or(f.retry_limit.value_or(r.limit));
    t.retry.initial_delay =
        o.initial_delay.value_or(f.initial_delay.value_or(r.initial_delay));
    t.retry.max_delay = o.max_delay.value_or(f.max_delay.value_or(r.max_delay));
    t.retry.scaling = o.scaling.value_or(f.scaling.value_or(r.scaling));
  }
  t.limits.cpus = o.cpus.value_or(f.cpus.value_or(0));
  t.limits.memory_bytes = o.memory.value_or(f.memory.value_or(0));
  if (f.env) t.env = *f.env;
  if (o.env) {
    for (const auto& [k, v] : *o.env) t.env[k] = v;
  }
  std::optional<RuntimeKind> runtime = o.runtime ? o.runtime : f.runtime;
  t.runtime = runtime.value_or(t.image.empty() ? RuntimeKind::kShell
                                               : RuntimeKind::kDocker);

  const std::string ctx = " in " + d.label;
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
  for (const auto* list : {&d.pre, &d.post}) {
    for (const TaskDraft& h : *list) {
      if (!h.named) continue;
      auto [it, fresh] = hook_names.emplace(h.name, h.name_at);
      if (!fresh) {
        Error(h.name_at, "duplicate pre/post task name " + Quoted(h.name) +
                             ctx + " (first defined at line " +
                             std::to_string(it->second.line) + ", column " +
                             std::to_string(it->second.column) + ")");
      }
    }
  }
  for (const TaskDraft& h : d.pre) {
    t.pre.push_back(Resolve(h, t.queue, Kind::kPre));
  }
  for (const TaskDraft& h : d.post) {
    t.post.push_back(Resolve(h, t.queue, Kind::kPost));
  }
  // One runtime runs a task together with its pre and post tasks.
  for (size_t i = 0; i < d.pre.size() + d.post.size(); ++i) {
    bool pre = i < d.pre.size();
    const TaskDraft& h = pre ? d.pre[i] : d.post[i - d.pre.size()];
    const TaskSpec& hs = pre ? t.pre[i] : t.post[i - d.pre.size()];
    if (hs.runtime != t.runtime) {
      Error(h.own.runtime ? h.own.runtime_at : h.where,
            h.label + " would use runtime '" +
                std::string(RuntimeName(hs.runtime)) + "' but its task uses '" +
                std::string(RuntimeName(t.runtime)) +
                "'; pre and post tasks run with their task's runtime");
    }
  }
  return t;
}

void Parser::CheckGraph(const std::vector<TaskDraft>& drafts,
                        std::vector<TaskSpec>& tasks) {
  // Names and vars first: everything below resolves names to indexes.
  std::map<std::string, size_t> index;
  std::map<std::string, size_t> vars;
  std::vector<std::string> names;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TaskDraft& d = drafts[i];
    if (d.named) {
      auto [it, fresh] = index.emplace(d.name, i);
      if (fresh) {
        names.push_back(d.name);
      } else {
        Location first = drafts[it->second].name_at;
        Error(d.name_at, "duplicate task name " + Quoted(d.name) +
                             " (first defined at line " +
                             std::to_string(first.line) + ", column " +
                             std::to_string(first.column) + ")");
      }
    }
    if (!d.var.empty()) {
      auto [it, fresh] = vars.emplace(d.var, i);
      if (!fresh) {
        Error(d.var_at, "var " + Quoted(d.var) + " of " + d.label +
                            " is already used by " + drafts[it->second].label);
      }
    }
  }

  // Edges: i depends on target, declared at `where`.
  struct Edge {
    size_t target;
    Location where;
  };
  std::vector<std::vector<Edge>> edges(drafts.size());
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TaskDraft& d = drafts[i];
    if (!d.depends_on) {
      // The ordering rule: no depends_on means "after the task above".
      if (i > 0 && drafts[i - 1].named) {
        edges[i].push_back({i - 1, d.where});
        tasks[i].depends_on.push_back(drafts[i - 1].name);
      }
      continue;
    }
    std::set<std::string> seen;
    for (const Dependency& dep : *d.depends_on) {
      auto it = index.find(dep.name);
      if (!seen.insert(dep.name).second) {
        Error(dep.where, d.label + " lists dependency " + Quoted(dep.name) +
                             " more than once");
      } else if (d.named && dep.name == d.name) {
        Error(dep.where, d.label + " depends on itself");
      } else if (it == index.end()) {
        Error(dep.where, d.label + " depends on unknown task " +
                             Quoted(dep.name) + Suggest(dep.name, names));
      } else {
        edges[i].push_back({it->second, dep.where});
        tasks[i].depends_on.push_back(dep.name);
      }
    }
  }

  // Cycles: an iterative depth-first search (a 10,000-task chain must not
  // exhaust the stack); every back edge closes one cycle.
  enum Color : uint8_t { kWhite, kGray, kBlack };
  std::vector<Color> color(drafts.size(), kWhite);
  std::vector<size_t> path;
  size_t cycles = 0;
  for (size_t root = 0; root < drafts.size(); ++root) {
    if (color[root] != kWhite) continue;
    std::vector<std::pair<size_t, size_t>> stack{{root, 0}};
    color[root] = kGray;
    path.assign(1, root);
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == edges[node].size()) {
        color[node] = kBlack;
        stack.pop_back();
        path.pop_back();
        continue;
      }
      const Edge& e = edges[node][next++];
      if (color[e.target] == kWhite) {
        color[e.target] = kGray;
        path.push_back(e.target);
        stack.push_back({e.target, 0});
      } else if (color[e.target] == kGray && ++cycles <= kMaxCyclesReported) {
        auto from = std::find(path.begin(), path.end(), e.target);
        size_t len = static_cast<size_t>(path.end() - from);
        std::string msg = "dependency cycle: ";
        for (size_t k = 0; k < len; ++k) {
          // A long cycle keeps its ends; the middle adds nothing to fix.
          if (len > 2 * kCycleEnds && k == kCycleEnds) {
            msg +=
                "... (" + std::to_string(len - 2 * kCycleEnds) + " more) -> ";
            k = len - kCycleEnds;
          }
          msg += drafts[*(from + static_cast<ptrdiff_t>(k))].name + " -> ";
        }
        msg += drafts[e.target].name;
        Error(e.where, msg);
      }
    }
  }
  if (cycles > kMaxCyclesReported) {
    Error({}, std::to_string(cycles - kMaxCyclesReported) +
                  " more dependency cycles not shown");
  }
}

ParseResult Parser::Parse(std::string_view text) {
  ParseResult result;
  if (text.size() > kMaxFileBytes) {
    Error({}, "job file is " + std::to_string(text.size()) +
                  " bytes; the limit is " + std::to_string(kMaxFileBytes));
    result.errors = std::move(errors_);
    return result;
  }
  toml::table root;
  try {
    root = toml::parse(text, file_);
  } catch (const toml::parse_error& e) {
    Error(Loc(e.source()), std::string(e.description()));
    result.errors = std::move(errors_);
    return result;
  }

  JobSpec job;
  std::vector<TaskDraft> drafts;
  const toml::node* inputs_node = nullptr;
  // [defaults] and the job queue must be known before tasks are resolved,
  // whatever order the keys come in.
  if (const auto* q = root.get("queue")) {
    if (auto s = NonEmpty(*q, "queue", "")) {
      if (IsName(*s)) {
        job.queue = job_queue_ = *s;
      } else {
        Error(Loc(*q),
              "'queue' may only hold letters, digits, '_', '.' and "
              "'-'");
      }
    }
  }
  if (const auto* dflt = root.get("defaults")) ParseDefaults(*dflt);
  for (auto&& [k, v] : root) {
    std::string_view key = k.str();
    if (key == "name") {
      job.name = NonEmpty(v, key, "").value_or("");
    } else if (key == "description") {
      job.description = String(v, key, "").value_or("");
    } else if (key == "inputs") {
      inputs_node = &v;
      job.inputs = StringTable(v, key, "").value_or(job.inputs);
    } else if (key == "secrets") {
      job.secrets = StringTable(v, key, "").value_or(job.secrets);
    } else if (key == "tasks") {
      const auto* arr = v.as_array();
      if (arr == nullptr || arr->empty()) {
        Error(Loc(v),
              arr ? "'tasks' must not be empty; add a [[tasks]] table"
                  : Expect(key, "", "an array of tables ([[tasks]])", v));
        continue;
      }
      if (arr->size() > kMaxTasks) {
        Error(Loc(v), "a job may have at most " + std::to_string(kMaxTasks) +
                          " tasks, not " + std::to_string(arr->size()));
      }
      for (size_t i = 0; i < arr->size(); ++i) {
        if (const auto* t = (*arr)[i].as_table()) {
          drafts.push_back(ParseTask(*t, Kind::kTask, i + 1, ""));
        } else {
          Error(Loc((*arr)[i]), Expect("tasks[" + std::to_string(i) + "]", "",
                                       "a task table", (*arr)[i]));
        }
      }
    } else if (!Contains(kJobKeys, key)) {
      Unknown(k, "", kJobKeys);
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
    if (std::find(declared.begin(), declared.end(), key) == declared.end()) {
      Error(inputs_node ? Loc(*inputs_node) : Location{},
            "--input " + Quoted(key) +
                ": the job declares no such input in "
                "[inputs]" +
                Suggest(key, declared));
    } else {
      job.inputs[key] = value;
    }
  }
  for (const TaskDraft& d : drafts) {
    job.tasks.push_back(Resolve(d, job.queue, Kind::kTask));
  }
  CheckGraph(drafts, job.tasks);

  std::stable_sort(errors_.begin(), errors_.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::tie(a.where.line, a.where.column) <
                            std::tie(b.where.line, b.where.column);
                   });
  if (errors_.size() > kMaxDiagnostics) {
    size_t dropped = errors_.size() - kMaxDiagnostics;
    errors_.resize(kMaxDiagnostics);
    errors_.push_back(
        {file_, {}, std::to_string(dropped) + " more errors not shown"});
  }
  result.errors = std::move(errors_);
  if (result.errors.empty()) result.job = std::move(job);
  return result;
}

}  // namespace

std::string Diagnostic::ToString() const {
  return file + ":" + std::to_string(where.line) + ":" +
         std::to_string(where.column) + ": error: " + message;
}

std::string_view RuntimeName(RuntimeKind kind) {
  return kind == RuntimeKind::kDocker ? "docker" : "shell";
}

std::optional<Millis> ParseDuration(std::string_view text) {
  text = Trim(text);
  if (text.empty()) return std::nullopt;
  double total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    auto value = ReadNumber(text, i);
    if (!value) return std::nullopt;
    size_t unit_start = i;
    while (i < text.size() &&
           std::isalpha(static_cast<unsigned char>(text[i]))) {
      ++i;
    }
    std::string_view unit = text.substr(unit_start, i - unit_start);
    double scale;
    if (unit.empty()) {
      // A bare number is seconds, but only on its own: "1h30" is a typo.
      if (start != 0 || i != text.size()) return std::nullopt;
      scale = 1000;
    } else if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60e3;
    } else if (unit == "h") {
      scale = 3600e3;
    } else if (unit == "d") {
      scale = 86400e3;
    } else {
      return std::nullopt;
    }
    total += *value * scale;
    if (!(total <= kMaxDurationMs)) return std::nullopt;
  }
  return Millis(static_cast<int64_t>(std::llround(total)));
}

std::optional<int64_t> ParseSize(std::string_view text) {
  text = Trim(text);
  size_t i = 0;
  auto value = ReadNumber(text, i);
  if (!value) return std::nullopt;
  std::string unit(Trim(text.substr(i)));
  for (char& c : unit) c = Lower(c);
  // Every unit is binary: "512MB" means what a Docker user expects, 512 MiB.
  double scale;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = 1024.0 * 1024 * 1024;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  double bytes = std::floor(*value * scale);
  if (!(bytes <= kMaxSizeBytes)) return std::nullopt;
  return static_cast<int64_t>(bytes);
}

std::string FormatDuration(Millis d) {
  std::string out;
  uint64_t ms = static_cast<uint64_t>(d.count());
  if (d.count() < 0) {
    out = "-";
    ms = ~ms + 1;  // the magnitude, without overflow for the minimum value
  }
  if (ms == 0) return "0s";
  if (ms < 1000) return out + std::to_string(ms) + "ms";
  auto part = [&](uint64_t unit, const char* suffix) {
    if (ms >= unit) {
      out += std::to_string(ms / unit) + suffix;
      ms %= unit;
    }
  };
  part(86400000, "d");
  part(3600000, "h");
  part(60000, "m");
  if (ms > 0) {
    out += std::to_string(ms / 1000);
    if (uint64_t frac = ms % 1000; frac != 0) {
      char buf[8];
      snprintf(buf, sizeof buf, ".%03d", static_cast<int>(frac));
      std::string f = buf;
      while (f.back() == '0') f.pop_back();
      out += f;
    }
    out += "s";
  }
  return out;
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
  auto fail = [&](std::string message) {
    ParseResult r;
    r.errors.push_back({path, {}, std::move(message)});
    return r;
  };
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail("cannot open: " + std::string(strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail("not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
    close(fd);
    return fail("job file is " + std::to_string(st.st_size) +
                " bytes; the limit is " + std::to_string(kMaxFileBytes));
  }
  // Read one byte past the cap so an oversized file is reported as such.
  std::string text;
  text.resize(kMaxFileBytes + 1);
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return fail("cannot read: " + std::string(strerror(err)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  text.resize(got);
  return ParseJobText(text, path, input_overrides);
}

}  // namespace drover
