// Expressions in a sandboxed Lua 5.4. See include/drover/expression.h.
//
// Sandbox: each call gets a fresh lua_State whose allocator refuses to grow
// the heap past ExpressionLimits::max_memory and whose count hook raises an
// error past max_steps. No standard library is opened: the globals table
// holds only the context tables and the functions registered below, so
// there is no way to reach files, processes, the clock, `load` or the
// string metatable. Chunks are loaded in text mode only.
//
// Lua reports errors with longjmp, which skips C++ destructors. Everything
// that can raise a Lua error therefore runs either inside lua_pcall with
// only trivially destructible locals (the C functions and BuildGlobals), or
// through luaL_loadbufferx, which protects itself.
#include "drover/expression.h"

#include <string.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <lua.hpp>
#include <memory>
#include <optional>

namespace drover {
namespace {

constexpr size_t kMaxQuotedSource = 60;

// Per-state bookkeeping: the allocator's ud, which the hook reads back
// with lua_getallocf.
struct Sandbox {
  size_t max_memory = 0;
  size_t used = 0;
  uint64_t max_steps = 0;
  uint64_t steps = 0;
  int hook_interval = 1000;
  bool steps_exceeded = false;
};

void* LimitedAlloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* box = static_cast<Sandbox*>(ud);
  // For a new block Lua passes the object type in osize, not a size.
  size_t old = ptr == nullptr ? 0 : osize;
  if (nsize == 0) {
    free(ptr);
    box->used -= old;
    return nullptr;
  }
  if (nsize > old && nsize - old > box->max_memory - box->used) {
    return nullptr;  // Lua collects garbage and retries, then fails cleanly.
  }
  void* p = realloc(ptr, nsize);
  if (p == nullptr) return nullptr;
  box->used = box->used - old + nsize;
  return p;
}

void CountHook(lua_State* L, lua_Debug*) {
  void* ud = nullptr;
  lua_getallocf(L, &ud);
  auto* box = static_cast<Sandbox*>(ud);
  box->steps += static_cast<uint64_t>(box->hook_interval);
  if (box->steps > box->max_steps) {
    box->steps_exceeded = true;
    lua_pushliteral(L, "step limit");
    lua_error(L);
  }
}

struct LuaCloser {
  void operator()(lua_State* L) const { lua_close(L); }
};
using LuaPtr = std::unique_ptr<lua_State, LuaCloser>;

// ---- Functions callable from expressions. --------------------------------

int FnLen(lua_State* L) {
  switch (lua_type(L, 1)) {
    case LUA_TNIL:
    case LUA_TNONE:
      lua_pushinteger(L, 0);
      return 1;
    case LUA_TTABLE:
      lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, 1)));
      return 1;
    case LUA_TSTRING:
      lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, 1)));
      return 1;
    default:
      return luaL_typeerror(L, 1, "string or table");
  }
}

int MapChars(lua_State* L, int (*fn)(int)) {
  size_t n = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char* out = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<char>(fn(static_cast<unsigned char>(s[i])));
  }
  luaL_pushresultsize(&b, n);
  return 1;
}

int AsciiLower(int c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }
int AsciiUpper(int c) { return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c; }
int FnLower(lua_State* L) { return MapChars(L, AsciiLower); }
int FnUpper(lua_State* L) { return MapChars(L, AsciiUpper); }

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

int FnTrim(lua_State* L) {
  size_t n = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  size_t b = 0;
  while (b < n && IsSpace(s[b])) ++b;
  while (n > b && IsSpace(s[n - 1])) --n;
  lua_pushlstring(L, s + b, n - b);
  return 1;
}

int FnContains(lua_State* L) {
  size_t n = 0, m = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  const char* sub = luaL_checklstring(L, 2, &m);
  // memmem is linear (two-way), so no input makes this quadratic.
  lua_pushboolean(L, m == 0 || memmem(s, n, sub, m) != nullptr);
  return 1;
}

int FnStartsWith(lua_State* L) {
  size_t n = 0, m = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  const char* p = luaL_checklstring(L, 2, &m);
  lua_pushboolean(L, m <= n && memcmp(s, p, m) == 0);
  return 1;
}

int FnEndsWith(lua_State* L) {
  size_t n = 0, m = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  const char* p = luaL_checklstring(L, 2, &m);
  lua_pushboolean(L, m <= n && memcmp(s + n - m, p, m) == 0);
  return 1;
}

int FnToNumber(lua_State* L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_settop(L, 1);
    return 1;
  }
  if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n = 0;
    const char* s = lua_tolstring(L, 1, &n);
    // lua_stringtonumber wants a NUL-terminated string with no embedded NUL.
    if (strlen(s) == n && lua_stringtonumber(L, s) != 0) return 1;
  }
  lua_pushnil(L);
  return 1;
}

// Formats a number the way templates show it: integers (and floats with an
// integral value) without a fraction, other floats with 14 digits.
int FormatNumber(lua_State* L, int idx, char* buf, size_t size) {
  if (lua_isinteger(L, idx)) {
    return snprintf(buf, size, "%lld",
                    static_cast<long long>(lua_tointeger(L, idx)));
  }
  double d = lua_tonumber(L, idx);
  // Integral floats print as integers while they fit one (2^63).
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) {
    return snprintf(buf, size, "%.0f", d == 0 ? 0.0 : d);
  }
  if (std::isnan(d)) return snprintf(buf, size, "nan");
  return snprintf(buf, size, "%.14g", d);
}

int FnToString(lua_State* L) {
  char buf[64];
  switch (lua_type(L, 1)) {
    case LUA_TNUMBER:
      FormatNumber(L, 1, buf, sizeof buf);
      lua_pushstring(L, buf);
      return 1;
    case LUA_TSTRING:
      lua_settop(L, 1);
      return 1;
    case LUA_TBOOLEAN:
      lua_pushstring(L, lua_toboolean(L, 1) ? "true" : "false");
      return 1;
    case LUA_TNIL:
    case LUA_TNONE:
      lua_pushliteral(L, "nil");
      return 1;
    default:
      lua_pushstring(L, luaL_typename(L, 1));
      return 1;
  }
}

int FnDefault(lua_State* L) {
  int t = lua_type(L, 1);
  if (t == LUA_TNIL || t == LUA_TNONE ||
      (t == LUA_TSTRING && lua_rawlen(L, 1) == 0)) {
    lua_settop(L, 2);
    return 1;
  }
  lua_settop(L, 1);
  return 1;
}

constexpr luaL_Reg kFunctions[] = {
    {"len", FnLen},           {"lower", FnLower},
    {"upper", FnUpper},       {"trim", FnTrim},
    {"contains", FnContains}, {"startswith", FnStartsWith},
    {"endswith", FnEndsWith}, {"tonumber", FnToNumber},
    {"tostring", FnToString}, {"default", FnDefault},
};

void PushStringMap(lua_State* L, const std::map<std::string, std::string>& m,
                   const char* name) {
  lua_createtable(L, 0, static_cast<int>(std::min<size_t>(m.size(), 1024)));
  for (const auto& [k, v] : m) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k.c_str());
  }
  lua_setglobal(L, name);
}

// Fills the (empty) globals table; run under lua_pcall.
int BuildGlobals(lua_State* L) {
  const auto* ctx = static_cast<const ExpressionContext*>(lua_touserdata(L, 1));
  for (const luaL_Reg& fn : kFunctions) {
    lua_pushcfunction(L, fn.func);
    lua_setglobal(L, fn.name);
  }
  PushStringMap(L, ctx->inputs, "inputs");
  PushStringMap(L, ctx->tasks, "tasks");
  PushStringMap(L, ctx->secrets, "secrets");
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, ctx->job_id.data(), ctx->job_id.size());
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, ctx->job_name.data(), ctx->job_name.size());
  lua_setfield(L, -2, "name");
  lua_setglobal(L, "job");
  return 0;
}

// ---- Source scanning. ----------------------------------------------------

// What a light lexical scan of an expression found.
struct Scan {
  std::string code;  // with `!=` rewritten to `~=` outside literals
  bool uses_secrets = false;
  bool uses_env = false;
};

bool IsIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsIdentChar(char c) { return IsIdentStart(c) || (c >= '0' && c <= '9'); }

// Length of a long bracket opener `[==[` at `i`, or 0; sets `level`.
size_t LongBracket(std::string_view s, size_t i, size_t& level) {
  if (i >= s.size() || s[i] != '[') return 0;
  size_t j = i + 1;
  while (j < s.size() && s[j] == '=') ++j;
  if (j < s.size() && s[j] == '[') {
    level = j - i - 1;
    return j - i + 1;
  }
  return 0;
}

// Skips a long string or comment body; returns the index after its closer.
size_t SkipLong(std::string_view s, size_t i, size_t level) {
  std::string closer(level + 2, '=');
  closer.front() = closer.back() = ']';
  size_t end = s.find(closer, i);
  return end == std::string_view::npos ? s.size() : end + closer.size();
}

// Walks Lua source outside string literals and comments. Malformed input
// is left for the Lua compiler to reject; this only has to be right for
// source that compiles.
Scan ScanSource(std::string_view s) {
  Scan out;
  out.code.reserve(s.size());
  size_t i = 0;
  char prev = 0, prev2 = 0;  // last two significant characters of code
  while (i < s.size()) {
    char c = s[i];
    size_t level = 0;
    if (c == '\'' || c == '"') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != c && s[j] != '\n') {
        j += s[j] == '\\' ? 2 : 1;
      }
      j = std::min(j + 1, s.size());
      out.code.append(s.substr(i, j - i));
      i = j;
      prev2 = prev;
      prev = c;
    } else if (size_t n = LongBracket(s, i, level); n != 0) {
      size_t j = SkipLong(s, i + n, level);
      out.code.append(s.substr(i, j - i));
      i = j;
      prev2 = prev;
      prev = ']';
    } else if (c == '-' && i + 1 < s.size() && s[i + 1] == '-') {
      size_t j;
      if (size_t n2 = LongBracket(s, i + 2, level); n2 != 0) {
        j = SkipLong(s, i + 2 + n2, level);
      } else {
        j = s.find('\n', i);
        if (j == std::string_view::npos) j = s.size();
      }
      out.code.append(s.substr(i, j - i));
      i = j;
    } else if (c == '!' && i + 1 < s.size() && s[i + 1] == '=') {
      out.code += "~=";
      i += 2;
      prev2 = '~';
      prev = '=';
    } else if (c >= '0' && c <= '9') {
      size_t j = i + 1;
      while (j < s.size() && (IsIdentChar(s[j]) || s[j] == '.' ||
                              ((s[j] == '+' || s[j] == '-') &&
                               (s[j - 1] == 'e' || s[j - 1] == 'E' ||
                                s[j - 1] == 'p' || s[j - 1] == 'P')))) {
        ++j;
      }
      out.code.append(s.substr(i, j - i));
      i = j;
      prev2 = prev;
      prev = '0';
    } else if (IsIdentStart(c)) {
      size_t j = i;
      while (j < s.size() && IsIdentChar(s[j])) ++j;
      std::string_view word = s.substr(i, j - i);
      // `a.secrets` and `a:secrets` are fields; `a .. secrets` is not.
      bool field = (prev == '.' && prev2 != '.') || prev == ':';
      if (word == "secrets" && !field) out.uses_secrets = true;
      if (word == "_ENV") out.uses_env = true;
      out.code.append(word);
      i = j;
      prev2 = prev;
      prev = 'a';
    } else {
      out.code += c;
      ++i;
      if (!IsSpace(c)) {
        prev2 = prev;
        prev = c;
      }
    }
  }
  return out;
}

// Messages end up as one line of `drover validate` output and in JSON, so
// control characters are escaped.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

std::string Quote(std::string_view expr) {
  std::string q = "expression '";
  if (expr.size() > kMaxQuotedSource) {
    // Cut before a UTF-8 continuation byte, never inside a character.
    size_t n = kMaxQuotedSource;
    while (n > 0 && (static_cast<unsigned char>(expr[n]) & 0xC0) == 0x80) --n;
    q += Printable(expr.substr(0, n)) + "...";
  } else {
    q += Printable(expr);
  }
  return q + "'";
}

// Lua prefixes messages with the chunk name and line ("expr:1: ").
std::string StripChunkName(std::string msg) {
  if (msg.rfind("expr:", 0) == 0) {
    size_t j = 5;
    while (j < msg.size() && msg[j] >= '0' && msg[j] <= '9') ++j;
    if (j > 5 && j + 1 < msg.size() && msg[j] == ':' && msg[j + 1] == ' ') {
      msg.erase(0, j + 2);
    }
  }
  return msg;
}

// Static checks shared by CheckExpression and evaluation; on success fills
// `code` with the chunk to compile.
Status Prepare(std::string_view expr, std::string& code) {
  if (expr.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return Status::InvalidArgument("empty expression '{{ }}'");
  }
  Scan scan = ScanSource(expr);
  if (scan.uses_env) {
    return Status::InvalidArgument(Quote(expr) +
                                   ": '_ENV' is not available in expressions");
  }
  code = "return " + scan.code;
  return Status::Ok();
}

// A Lua state set up for one API call.
class Evaluator {
 public:
  explicit Evaluator(const ExpressionLimits& limits) {
    box_.max_memory = limits.max_memory;
    box_.max_steps = limits.max_steps;
    box_.hook_interval =
        static_cast<int>(std::clamp<uint64_t>(limits.max_steps, 1, 1000));
  }

  // Creates the state and, unless `ctx` is null (compile only), its
  // globals.
  Status Init(const ExpressionContext* ctx) {
    L_.reset(lua_newstate(LimitedAlloc, &box_));
    if (!L_) return MemoryError();
    if (ctx == nullptr) return Status::Ok();  // compiling needs no globals
    lua_pushcfunction(L_.get(), BuildGlobals);
    lua_pushlightuserdata(L_.get(), const_cast<ExpressionContext*>(ctx));
    if (lua_pcall(L_.get(), 1, 0, 0) != LUA_OK) return MemoryError();
    lua_sethook(L_.get(), CountHook, LUA_MASKCOUNT, box_.hook_interval);
    return Status::Ok();
  }

  // Compiles `expr`, leaving the chunk on the stack.
  Status Compile(std::string_view expr) {
    std::string code;
    if (Status s = Prepare(expr, code); !s.ok()) return s;
    int rc = luaL_loadbufferx(L_.get(), code.data(), code.size(), "=expr", "t");
    if (rc == LUA_OK) return Status::Ok();
    return PopError(expr, rc);
  }

  // Compiles and runs `expr`, leaving its first result on the stack.
  Status Run(std::string_view expr) {
    if (Status s = Compile(expr); !s.ok()) return s;
    box_.steps = 0;
    box_.steps_exceeded = false;
    int rc = lua_pcall(L_.get(), 0, 1, 0);
    if (rc == LUA_OK) return Status::Ok();
    return PopError(expr, rc);
  }

  lua_State* state() { return L_.get(); }

 private:
  Status MemoryError() {
    return Status::InvalidArgument("expression exceeded its memory limit");
  }

  Status PopError(std::string_view expr, int rc) {
    if (box_.steps_exceeded) {
      lua_settop(L_.get(), 0);
      return Status::InvalidArgument("expression exceeded " +
                                     std::to_string(box_.max_steps) + " steps");
    }
    if (rc == LUA_ERRMEM) {
      lua_settop(L_.get(), 0);
      return MemoryError();
    }
    std::string msg = "unknown error";
    // Only read the message when it is a string: converting anything else
    // could itself raise an error outside a protected call.
    if (lua_type(L_.get(), -1) == LUA_TSTRING) {
      size_t n = 0;
      const char* s = lua_tolstring(L_.get(), -1, &n);
      msg.assign(s, n);
    }
    lua_settop(L_.get(), 0);
    return Status::InvalidArgument(Quote(expr) + ": " +
                                   Printable(StripChunkName(std::move(msg))));
  }

  Sandbox box_;
  LuaPtr L_;  // after box_, so the state is closed while its box lives
};

// Appends the value on top of the stack as template text.
Status AppendValue(lua_State* L, std::string_view expr, std::string& out) {
  char buf[64];
  switch (lua_type(L, -1)) {
    case LUA_TNIL:
      break;
    case LUA_TBOOLEAN:
      out += lua_toboolean(L, -1) ? "true" : "false";
      break;
    case LUA_TNUMBER: {
      int n = FormatNumber(L, -1, buf, sizeof buf);
      out.append(buf, static_cast<size_t>(std::max(n, 0)));
      break;
    }
    case LUA_TSTRING: {
      size_t n = 0;
      const char* s = lua_tolstring(L, -1, &n);
      out.append(s, n);
      break;
    }
    default: {
      std::string type = luaL_typename(L, -1);
      lua_settop(L, 0);
      return Status::InvalidArgument(Quote(expr) + ": the value is a " + type +
                                     ", not a string, number, boolean or nil");
    }
  }
  lua_settop(L, 0);
  return Status::Ok();
}

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// A `{{ … }}` part with the offset just past its closing braces.
struct Span {
  size_t begin = 0;
  size_t end = 0;
  std::string source;
};

Result<std::vector<Span>> FindSpans(std::string_view text) {
  std::vector<Span> spans;
  size_t i = 0;
  while ((i = text.find("{{", i)) != std::string_view::npos) {
    // The closing `}}` is looked for outside quotes and Lua braces, so
    // `{{ '}}' }}` and `{{ {a = 1} }}` work.
    size_t j = i + 2;
    int depth = 0;
    std::optional<size_t> close;
    while (j < text.size()) {
      char c = text[j];
      if (c == '\'' || c == '"') {
        size_t k = j + 1;
        while (k < text.size() && text[k] != c) k += text[k] == '\\' ? 2 : 1;
        j = k + 1;
      } else if (c == '{') {
        ++depth;
        ++j;
      } else if (c == '}' && depth > 0) {
        --depth;
        ++j;
      } else if (c == '}' && j + 1 < text.size() && text[j + 1] == '}') {
        close = j;
        break;
      } else {
        ++j;
      }
    }
    if (!close) {
      return Status::InvalidArgument("unterminated '{{' at offset " +
                                     std::to_string(i));
    }
    spans.push_back(
        {i, *close + 2,
         std::string(TrimView(text.substr(i + 2, *close - i - 2)))});
    i = *close + 2;
  }
  return spans;
}

Status RenderSpans(std::string_view text, const std::vector<Span>& spans,
                   const ExpressionContext& ctx, const ExpressionLimits& limits,
                   std::string& out) {
  auto too_long = [&] {
    return Status::InvalidArgument("rendered text exceeds " +
                                   std::to_string(limits.max_result) +
                                   " bytes");
  };
  size_t pos = 0;
  if (!spans.empty()) {
    Evaluator ev(limits);
    if (Status s = ev.Init(&ctx); !s.ok()) return s;
    for (const Span& span : spans) {
      out.append(text.substr(pos, span.begin - pos));
      if (Status s = ev.Run(span.source); !s.ok()) return s;
      if (Status s = AppendValue(ev.state(), span.source, out); !s.ok()) {
        return s;
      }
      if (out.size() > limits.max_result) return too_long();
      pos = span.end;
    }
  }
  out.append(text.substr(pos));
  if (out.size() > limits.max_result) return too_long();
  return Status::Ok();
}

}  // namespace

Result<std::vector<ExpressionPart>> FindExpressions(std::string_view text) {
  auto spans = FindSpans(text);
  if (!spans.ok()) return spans.status();
  std::vector<ExpressionPart> parts;
  parts.reserve(spans->size());
  for (Span& span : *spans) {
    parts.push_back({span.begin, std::move(span.source)});
  }
  return parts;
}

Status CheckExpression(std::string_view expr) {
  Evaluator ev(ExpressionLimits{});
  if (Status s = ev.Init(nullptr); !s.ok()) return s;
  return ev.Compile(expr);
}

Status CheckTemplate(std::string_view text, bool allow_secrets) {
  auto spans = FindSpans(text);
  if (!spans.ok()) return spans.status();
  if (spans->empty()) return Status::Ok();
  Evaluator ev(ExpressionLimits{});
  if (Status s = ev.Init(nullptr); !s.ok()) return s;
  for (const Span& part : *spans) {
    if (!allow_secrets && ScanSource(part.source).uses_secrets) {
      return Status::InvalidArgument(
          Quote(part.source) + ": secrets can only be used in env values");
    }
    if (Status s = ev.Compile(part.source); !s.ok()) return s;
    lua_settop(ev.state(), 0);
  }
  return Status::Ok();
}

Result<std::string> RenderTemplate(std::string_view text,
                                   const ExpressionContext& ctx,
                                   const ExpressionLimits& limits) {
  auto spans = FindSpans(text);
  if (!spans.ok()) return spans.status();
  std::string out;
  if (Status s = RenderSpans(text, *spans, ctx, limits, out); !s.ok()) {
    return s;
  }
  return out;
}

Result<bool> EvaluateCondition(std::string_view text,
                               const ExpressionContext& ctx,
                               const ExpressionLimits& limits) {
  std::string_view trimmed = TrimView(text);
  if (trimmed.empty()) return true;
  auto spans = FindSpans(trimmed);
  if (!spans.ok()) return spans.status();
  if (spans->size() == 1 && (*spans)[0].begin == 0 &&
      (*spans)[0].end == trimmed.size()) {
    // A lone expression is judged by its value, so `{{ len(x) > 0 }}` and
    // `{{ inputs.flag }}` mean what they say.
    Evaluator ev(limits);
    if (Status s = ev.Init(&ctx); !s.ok()) return s;
    if (Status s = ev.Run((*spans)[0].source); !s.ok()) return s;
    bool value = lua_toboolean(ev.state(), -1) != 0;
    lua_settop(ev.state(), 0);
    return value;
  }
  std::string rendered;
  if (Status s = RenderSpans(trimmed, *spans, ctx, limits, rendered); !s.ok()) {
    return s;
  }
  std::string_view v = TrimView(rendered);
  return !(v.empty() || v == "false" || v == "0");
}

}  // namespace drover
