// ErrorList. See error_list.h.
#include "error_list.h"

#include <algorithm>
#include <cstdio>
#include <tuple>
#include <utility>

namespace drover {
namespace {

constexpr size_t kMaxDiagnostics = 1000;

}  // namespace

// Here rather than in job_spec.cc: config files report their errors the
// same way, and the worker and the CLI, which read config files but never
// job files, then link neither the job parser nor Lua.
std::string Diagnostic::ToString() const {
  return file + ":" + std::to_string(where.line) + ":" +
         std::to_string(where.column) + ": error: " + message;
}

void ErrorList::Add(Location at, std::string_view message) {
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

std::vector<Diagnostic> ErrorList::Take() {
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
  return std::exchange(errors_, {});
}

std::string At(Location l) {
  return "line " + std::to_string(l.line) + ", column " +
         std::to_string(l.column);
}

}  // namespace drover
