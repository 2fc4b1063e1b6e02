// ErrorList: the diagnostics gathered while one job file is parsed, and the
// small helpers that word them.
//
// The parser never stops at the first problem, so everything that checks a
// part of the file (TomlReader, the Parser in job_spec.cc, CheckJobGraph)
// adds to one ErrorList, and the parser takes the finished list at the end.
// Thread-compatible: owned by one parse.
#ifndef DROVER_ERROR_LIST_H_
#define DROVER_ERROR_LIST_H_

#include <string>
#include <string_view>
#include <vector>

#include "drover/job_spec.h"

namespace drover {

class ErrorList {
 public:
  // `file` names the job file in every diagnostic.
  explicit ErrorList(std::string_view file) : file_(file) {}

  // Records `message` at `at` ({} when the place is unknown). Messages quote
  // the user's keys and values; control characters in them are escaped so
  // that each diagnostic stays on its one line.
  void Add(Location at, std::string_view message);

  bool empty() const { return errors_.empty(); }

  // The diagnostics in file order (stable for one place), at most 1,000 of
  // them plus one line saying how many more there were. Leaves the list
  // empty.
  std::vector<Diagnostic> Take();

 private:
  std::string file_;
  std::vector<Diagnostic> errors_;
};

// `s` in single quotes, the way messages show keys and names.
inline std::string Quoted(std::string_view s) {
  return "'" + std::string(s) + "'";
}

// "line 3, column 5", for messages that point at a second place.
std::string At(Location l);

}  // namespace drover

#endif  // DROVER_ERROR_LIST_H_
