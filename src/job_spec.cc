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

struct Unit {
  std::string_view name;
  double scale;
};
constexpr Unit kDurationUnits[] = {
    {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}, {"d", 86400e3}};
// Every size unit is binary: "512MB" means what a Docker user expects.
constexpr Unit kSizeUnits[] = {{"", 1},        {"b", 1},        {"k", 0x1p10},
                               {"kb", 0x1p10}, {"kib", 0x1p10}, {"m", 0x1p20},
                               {"mb", 0x1p20}, {"mib", 0x1p20}, {"g", 0x1p30},
                               {"gb", 0x1p30}, {"gib", 0x1p30}, {"t", 0x1p40},
                               {"tb", 0x1p40}, {"tib", 0x1p40}};

bool Contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return Lower(c) >= 'a' && Lower(c) <= 'z'; }
bool IsWordChar(char c) { return IsAlpha(c) || IsDigit(c) || c == '_'; }

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
  size_t start = i, frac = 0;
  while (i < s.size() && (IsDigit(s[i]) || (s[i] == '.' && frac == 0))) {
    if (s[i++] == '.') frac = i;
  }
  if (i == start || s[start] == '.' || frac == i) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(s.data() + start, s.data() + i, v);
  if (ec != std::errc() || p != s.data() + i) return std::nullopt;
  return v;
}

std::optional<double> ScaleOf(std::span<const Unit> units,
                              std::string_view name) {
  for (const Unit& u : units) {
    if (u.name == name) return u.scale;
  }
  return std::nullopt;
}

std::string TypeName(const toml::node& n) {
  // Indexed by toml::node_type: none, table, array, string, integer,
  // floating_point, boolean, date, time, date_time.
  constexpr const char* kNames[] = {
      "nothing", "a table",   "an array", "a string", "an integer",
      "a float", "a boolean", "a date",   "a time",   "a date-time"};
  auto i = static_cast<size_t>(n.type());
  return i < std::size(kNames) ? kNames[i] : "nothing";
}

Location Loc(const toml::source_region& r) {
  return {r.begin.line, r.begin.column};
}
Location Loc(const toml::node& n) { return Loc(n.source()); }

std::string Elem(std::string_view key, size_t i) {
  return std::string(key) + "[" + std::to_string(i) + "]";
}

std::string At(Location l) {
  return "line " + std::to_string(l.line) + ", column " +
         std::to_string(l.column);
}

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

// Values a task table or [defaults] sets; what neither sets falls back to
// the built-in default.
struct Settings {
  std::optional<std::string> image, workdir, user, network, queue;
  std::optional<RuntimeKind> runtime;
  Location runtime_at;
  std::optional<Millis> timeout, initial_delay, max_delay;
  std::optional<uint32_t> retry_limit;
  std::optional<double> scaling, cpus;
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
  bool named = false;  // has a valid name
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
  // Messages quote the user's keys and values; escaping control characters
  // keeps each diagnostic on its one line.
  void Error(Location at, std::string_view message) {
    std::string line;
    for (char c : message) {
      auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u != 0x7f) {
        line += c;
      } else {
        char buf[8];
        snprintf(buf, sizeof buf, c == '\n' ? "\\n" : "\\x%02x", u);
        line += buf;
      }
    }
    errors_.push_back({file_, at, std::move(line)});
  }
  // "'KEY' in task 'b'" followed by `rest`, reported at `n`.
  void Bad(const toml::node& n, std::string_view key, std::string_view rest) {
    Error(Loc(n), Quoted(key) + ctx_ + std::string(rest));
  }
  void WrongType(const toml::node& n, std::string_view key,
                 std::string_view what) {
    Bad(n, key, " must be " + std::string(what) + ", not " + TypeName(n));
  }
  // `prefix` names the enclosing table, as in "retry.".
  void Unknown(const toml::key& k, Keys known, std::string_view prefix = "") {
    Error(Loc(k.source()),
          "unknown key " + Quoted(std::string(prefix) + std::string(k.str())) +
              ctx_ + suggest_(k.str(), known, prefix));
  }

  std::optional<std::string> String(const toml::node& n, std::string_view key) {
    if (const auto* s = n.as_string()) return s->get();
    WrongType(n, key, "a string");
    return std::nullopt;
  }

  std::optional<std::string> NonEmpty(const toml::node& n,
                                      std::string_view key) {
    auto s = String(n, key);
    if (!s || !s->empty()) return s;
    Bad(n, key, " must not be empty");
    return std::nullopt;
  }

  std::optional<std::vector<std::string>> StringArray(const toml::node& n,
                                                      std::string_view key) {
    const auto* arr = n.as_array();
    if (arr == nullptr) {
      WrongType(n, key, "an array of strings");
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < arr->size(); ++i) {
      if (auto s = String((*arr)[i], Elem(key, i))) out.push_back(*s);
    }
    if (out.size() != arr->size()) return std::nullopt;
    return out;
  }

  std::optional<std::map<std::string, std::string>> StringTable(
      const toml::node& n, std::string_view key) {
    const auto* tbl = n.as_table();
    if (tbl == nullptr) {
      WrongType(n, key, "a table of strings");
      return std::nullopt;
    }
    std::map<std::string, std::string> out;
    for (auto&& [k, v] : *tbl) {
      auto s = String(v, std::string(key) + "." + std::string(k.str()));
      if (s) out.emplace(k.str(), *s);
    }
    if (out.size() != tbl->size()) return std::nullopt;
    return out;
  }

  std::optional<Millis> Duration(const toml::node& n, std::string_view key,
                                 bool allow_zero) {
    const auto* s = n.as_string();
    if (s == nullptr) {
      WrongType(n, key, "a duration string such as \"30s\"");
      return std::nullopt;
    }
    auto d = ParseDuration(s->get());
    if (!d) {
      Bad(n, key,
          ": bad duration \"" + s->get() +
              "\"; use a number with a unit: ms, s, m, h or d (e.g. "
              "\"1500ms\", \"30s\", \"1h30m\")");
    } else if (!allow_zero && d->count() == 0) {
      Bad(n, key, " must be longer than 0");
      d.reset();
    }
    return d;
  }

  // A number checked by `ok`; `what` is the requirement in messages.
  std::optional<double> Number(const toml::node& n, std::string_view key,
                               std::string_view what, bool (*ok)(double)) {
    std::optional<double> x = n.value<double>();
    if (!n.is_number()) {
      WrongType(n, key, what);
    } else if (!x || !std::isfinite(*x) || !ok(*x)) {
      Bad(n, key, " must be " + std::string(what));
      x.reset();
    }
    return x;
  }

  void Template(const toml::node& n, std::string_view text,
                std::string_view key, bool allow_secrets) {
    Status s = CheckTemplate(text, allow_secrets);
    if (!s.ok()) Bad(n, key, ": " + s.message());
  }

  bool ParseSetting(std::string_view key, const toml::node& v, Settings& s);
  void ParseRetry(const toml::node& v, Settings& s);
  void ParseLimits(const toml::node& v, Settings& s);
  void ParseDefaults(const toml::node& v);
  TaskDraft ParseTask(const toml::table& t, Kind kind, size_t index,
                      const std::string& parent);
  void ParseTaskKey(std::string_view key, const toml::node& v, TaskDraft& d);
  std::vector<TaskDraft> ParseHooks(const toml::node& v, std::string_view key,
                                    Kind kind, const std::string& parent);
  TaskSpec Resolve(const TaskDraft& d, const std::string& parent_queue,
                   Kind kind);
  void CheckGraph(const std::vector<TaskDraft>& drafts,
                  std::vector<TaskSpec>& tasks);

  std::string file_;
  const std::map<std::string, std::string>& overrides_;
  std::vector<Diagnostic> errors_;
  Suggester suggest_;
  std::string ctx_;  // where messages are: " in task 'b'", or "" at the top
  Settings defaults_;
  std::string job_queue_ = "default";
};

bool Parser::ParseSetting(std::string_view key, const toml::node& v,
                          Settings& s) {
  if (key == "timeout") {
    s.timeout = Duration(v, key, /*allow_zero=*/false);
  } else if (key == "retry") {
    ParseRetry(v, s);
  } else if (key == "limits") {
    ParseLimits(v, s);
  } else if (key == "queue") {
    s.queue = NonEmpty(v, key);
    if (s.queue && !IsName(*s.queue)) {
      Bad(v, key, " may only hold letters, digits, '_', '.' and '-'");
      s.queue.reset();
    }
  } else if (key == "network") {
    s.network = NonEmpty(v, key);
  } else if (key == "image") {
    s.image = NonEmpty(v, key);
    if (s.image) Template(v, *s.image, key, /*allow_secrets=*/false);
  } else if (key == "env") {
    s.env = StringTable(v, key);
    const auto* tbl = v.as_table();
    for (auto it = tbl ? tbl->begin() : toml::table::const_iterator{};
         tbl && it != tbl->end(); ++it) {
      std::string_view n = it->first.str();
      if (n.empty() || n.find_first_of(std::string_view("=\0", 2)) !=
                           std::string_view::npos) {
        Error(Loc(it->first.source()), "environment variable name " +
                                           Quoted(n) + ctx_ +
                                           " must be non-empty and must not "
                                           "contain '='");
        s.env.reset();
      }
      if (const auto* str = it->second.as_string()) {
        Template(it->second, str->get(), "env." + std::string(n), true);
      }
    }
  } else if (key == "workdir") {
    s.workdir = String(v, key);
  } else if (key == "user") {
    s.user = String(v, key);
  } else if (key == "runtime") {
    if (auto r = String(v, key)) {
      if (*r == "docker" || *r == "shell") {
        s.runtime = *r == "docker" ? RuntimeKind::kDocker : RuntimeKind::kShell;
      } else {
        Bad(v, key, " must be \"docker\" or \"shell\", not \"" + *r + "\"");
      }
      s.runtime_at = Loc(v);
    }
  } else {
    return false;
  }
  return true;
}

void Parser::ParseRetry(const toml::node& v, Settings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr)
    return WrongType(v, "retry", "a table such as { limit = 2 }");
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "retry." + std::string(key);
    if (key == "limit") {
      const auto* i = n.as_integer();
      if (i == nullptr) {
        WrongType(n, name, "a non-negative integer");
      } else if (i->get() < 0) {
        Bad(n, name, " must be a non-negative integer");
      } else if (i->get() > kMaxRetryLimit) {
        Bad(n, name, " must be at most " + std::to_string(kMaxRetryLimit));
      } else {
        s.retry_limit = static_cast<uint32_t>(i->get());
      }
    } else if (key == "initial_delay") {
      s.initial_delay = Duration(n, name, /*allow_zero=*/true);
    } else if (key == "max_delay") {
      s.max_delay = Duration(n, name, /*allow_zero=*/true);
    } else if (key == "scaling") {
      s.scaling = Number(n, name, "a number of at least 1.0",
                         [](double x) { return x >= 1.0; });
    } else {
      Unknown(k, kRetryKeys, "retry.");
    }
  }
}

void Parser::ParseLimits(const toml::node& v, Settings& s) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr)
    return WrongType(v, "limits", "a table such as { cpus = 1 }");
  for (auto&& [k, n] : *tbl) {
    std::string_view key = k.str();
    std::string name = "limits." + std::string(key);
    if (key == "cpus") {
      s.cpus =
          Number(n, name, "a positive number", [](double x) { return x > 0; });
    } else if (key == "memory") {
      std::optional<int64_t> bytes;
      if (const auto* i = n.as_integer()) {
        bytes = i->get();
      } else if (const auto* str = n.as_string()) {
        bytes = ParseSize(str->get());
        if (!bytes) {
          Bad(n, name,
              ": bad size \"" + str->get() +
                  "\"; use a number with an optional unit: k, m, g or t "
                  "(e.g. \"512m\", \"2g\")");
          continue;
        }
      } else {
        WrongType(n, name, "a size such as \"512m\"");
        continue;
      }
      if (*bytes > 0) {
        s.memory = bytes;
      } else {
        Bad(n, name, " must be positive");
      }
    } else {
      Unknown(k, kLimitsKeys, "limits.");
    }
  }
}

void Parser::ParseDefaults(const toml::node& v) {
  const auto* tbl = v.as_table();
  if (tbl == nullptr) return WrongType(v, "defaults", "a table");
  ctx_ = " in [defaults]";
  for (auto&& [k, n] : *tbl) {
    if (ParseSetting(k.str(), n, defaults_)) continue;
    if (Contains(kTaskKeys, k.str())) {
      Error(Loc(k.source()), "key " + Quoted(k.str()) +
                                 " cannot have a default; set it in each task");
    } else {
      Unknown(k, kDefaultsKeys);
    }
  }
  ctx_.clear();
}

std::vector<TaskDraft> Parser::ParseHooks(const toml::node& v,
                                          std::string_view key, Kind kind,
                                          const std::string& parent) {
  std::vector<TaskDraft> out;
  const auto* arr = v.as_array();
  if (arr == nullptr) WrongType(v, key, "an array of task tables");
  for (size_t i = 0; arr && i < arr->size(); ++i) {
    if (const auto* t = (*arr)[i].as_table()) {
      out.push_back(ParseTask(*t, kind, i + 1, parent));
    } else {
      WrongType((*arr)[i], Elem(key, i), "a task table");
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
  std::string outer = std::exchange(ctx_, " in " + d.label);
  for (auto&& [k, v] : t) {
    std::string_view key = k.str();
    if (kind != Kind::kTask && Contains(kHookForbidden, key)) {
      Error(Loc(k.source()), "key " + Quoted(key) + " is not allowed" + ctx_ +
                                 "; pre and post tasks run inside their task");
    } else if (!ParseSetting(key, v, d.own)) {
      ParseTaskKey(key, v, d);
      if (!Contains(kTaskKeys, key)) {
        Unknown(k, kind == Kind::kTask ? Keys(kTaskKeys) : Keys(kHookKeys));
      }
    }
  }
  if (!t.contains("name")) Error(d.where, "missing required key 'name'" + ctx_);
  ctx_ = std::move(outer);
  return d;
}

void Parser::ParseTaskKey(std::string_view key, const toml::node& v,
                          TaskDraft& d) {
  const auto* arr = v.as_array();
  if (key == "name") {
    auto name = String(v, key);
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
    d.run = NonEmpty(v, key);
    if (d.run) Template(v, *d.run, key, /*allow_secrets=*/false);
  } else if (key == "cmd") {
    d.cmd_key = true;
    d.cmd_at = Loc(v);
    d.cmd = StringArray(v, key);
    if (d.cmd && d.cmd->empty()) {
      Bad(v, key, " must not be empty");
      d.cmd.reset();
    }
    for (size_t i = 0; d.cmd && i < d.cmd->size(); ++i) {
      Template((*arr)[i], (*d.cmd)[i], Elem(key, i), /*allow_secrets=*/false);
    }
  } else if (key == "entrypoint") {
    d.entrypoint = StringArray(v, key).value_or(d.entrypoint);
  } else if (key == "volumes") {
    d.volumes = StringArray(v, key).value_or(d.volumes);
    for (size_t i = 0; i < d.volumes.size(); ++i) {
      const std::string& p = d.volumes[i];
      if (p.empty() || p[0] != '/' || p.find(':') != std::string::npos) {
        Error(Loc((*arr)[i]), "volume \"" + p + "\"" + ctx_ +
                                  " must be an absolute container path "
                                  "without ':'");
      }
    }
  } else if (key == "var") {
    auto var = String(v, key);
    if (var && !IsIdentifier(*var)) {
      Bad(v, key,
          " must be an identifier (letters, digits and '_', not starting "
          "with a digit), not \"" +
              *var + "\"");
    } else if (var) {
      d.var = *var;
      d.var_at = Loc(v);
    }
  } else if (key == "if") {
    if (auto cond = String(v, key)) {
      d.if_expr = *cond;
      Template(v, *cond, key, /*allow_secrets=*/false);
    }
  } else if (key == "depends_on") {
    if (auto names = StringArray(v, key)) {
      d.depends_on.emplace();
      for (size_t i = 0; i < names->size(); ++i) {
        d.depends_on->push_back({(*names)[i], Loc((*arr)[i])});
      }
    }
  } else if (key == "pre" || key == "post") {
    (key == "pre" ? d.pre : d.post) =
        ParseHooks(v, key, key == "pre" ? Kind::kPre : Kind::kPost, d.label);
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
  if (kind == Kind::kTask) {  // a pre or post task is retried with its task
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
      TaskSpec hs =
          Resolve(h, t.queue, hooks == &d.pre ? Kind::kPre : Kind::kPost);
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

void Parser::CheckGraph(const std::vector<TaskDraft>& drafts,
                        std::vector<TaskSpec>& tasks) {
  // Names and vars first: everything below resolves names to indexes.
  std::map<std::string, size_t> index, vars;
  std::vector<std::string> names;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TaskDraft& d = drafts[i];
    if (d.named) {
      auto [it, fresh] = index.emplace(d.name, i);
      if (fresh) names.push_back(d.name);
      if (!fresh) {
        Error(d.name_at, "duplicate task name " + Quoted(d.name) +
                             " (first defined at " +
                             At(drafts[it->second].name_at) + ")");
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

  struct Edge {  // the task depends on `target`, as declared at `where`
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
                             Quoted(dep.name) + suggest_(dep.name, names));
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
        Error(e.where, msg + drafts[e.target].name);
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
    result.errors = std::move(errors_);
    return result;
  }

  JobSpec job;
  std::vector<TaskDraft> drafts;
  const toml::node* inputs_node = nullptr;
  // [defaults] and the job queue must be known before tasks are resolved,
  // whatever order the keys come in.
  if (const auto* q = root.get("queue")) {
    Settings top;  // the top-level queue obeys the same rules as a task's
    ParseSetting("queue", *q, top);
    job.queue = job_queue_ = top.queue.value_or(job.queue);
  }
  if (const auto* dflt = root.get("defaults")) ParseDefaults(*dflt);
  for (auto&& [k, v] : root) {
    std::string_view key = k.str();
    if (key == "name") {
      job.name = NonEmpty(v, key).value_or("");
    } else if (key == "description") {
      job.description = String(v, key).value_or("");
    } else if (key == "inputs") {
      inputs_node = &v;
      job.inputs = StringTable(v, key).value_or(job.inputs);
    } else if (key == "secrets") {
      job.secrets = StringTable(v, key).value_or(job.secrets);
    } else if (key == "tasks") {
      const auto* arr = v.as_array();
      if (arr == nullptr) {
        WrongType(v, key, "an array of tables ([[tasks]])");
      } else if (arr->empty()) {
        Error(Loc(v), "'tasks' must not be empty; add a [[tasks]] table");
      } else if (arr->size() > kMaxTasks) {
        Error(Loc(v), "a job may have at most " + std::to_string(kMaxTasks) +
                          " tasks, not " + std::to_string(arr->size()));
      }
      for (size_t i = 0; arr && i < arr->size(); ++i) {
        if (const auto* t = (*arr)[i].as_table()) {
          drafts.push_back(ParseTask(*t, Kind::kTask, i + 1, ""));
        } else {
          WrongType((*arr)[i], Elem(key, i), "a task table");
        }
      }
    } else if (!Contains(kJobKeys, key)) {
      Unknown(k, kJobKeys);
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
  for (size_t i = 0; i < text.size();) {
    size_t start = i;
    auto value = ReadNumber(text, i);
    if (!value) return std::nullopt;
    size_t unit = i;
    while (i < text.size() && IsAlpha(text[i])) ++i;
    // A bare number is seconds, but only on its own: "1h30" is a typo.
    bool bare = unit == i && start == 0 && i == text.size();
    auto scale =
        bare ? 1e3 : ScaleOf(kDurationUnits, text.substr(unit, i - unit));
    if (!scale) return std::nullopt;
    total += *value * *scale;
    if (!(total <= kMaxDurationMs)) return std::nullopt;
  }
  return Millis(static_cast<int64_t>(std::llround(total)));
}

std::optional<int64_t> ParseSize(std::string_view text) {
  text = Trim(text);
  size_t i = 0;
  auto value = ReadNumber(text, i);
  std::string unit(Trim(text.substr(i)));
  for (char& c : unit) c = Lower(c);
  auto scale = ScaleOf(kSizeUnits, unit);
  if (!value || !scale) return std::nullopt;
  double bytes = std::floor(*value * *scale);
  if (!(bytes <= kMaxSizeBytes)) return std::nullopt;
  return static_cast<int64_t>(bytes);
}

std::string FormatDuration(Millis d) {
  std::string out = d.count() < 0 ? "-" : "";
  uint64_t ms = static_cast<uint64_t>(d.count());
  if (d.count() < 0) ms = ~ms + 1;  // the magnitude, even of the minimum
  if (ms == 0) return "0s";
  if (ms < 1000) return out + std::to_string(ms) + "ms";
  for (auto [unit, suffix] : {std::pair<uint64_t, const char*>{86400000, "d"},
                              {3600000, "h"},
                              {60000, "m"}}) {
    if (ms >= unit) out += std::to_string(ms / unit) + suffix;
    ms %= unit;
  }
  if (ms > 0) {
    out += std::to_string(ms / 1000);
    if (ms % 1000 != 0) {
      char frac[8];
      snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms % 1000));
      out += std::string_view(frac).substr(
          0, std::string_view(frac).find_last_not_of('0') + 1);
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
