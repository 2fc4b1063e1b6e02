// TomlReader: reads typed values — strings, string arrays and tables,
// durations, bounded numbers, templates — out of a job file's TOML nodes,
// and reports each bad one with its key, where it is, and what is wanted
// instead ("'timeout' in task 'b' must be a duration string such as
// \"30s\", not an integer").
//
// Used by the Parser in job_spec.cc, one TomlReader per parse. A reader
// returns nullopt for a bad value after reporting it, so the parser carries
// on and reports everything in one pass. Thread-compatible.
#ifndef DROVER_TOML_READER_H_
#define DROVER_TOML_READER_H_

#include <toml++/toml.h>

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "drover/job_spec.h"
#include "error_list.h"
#include "suggester.h"

namespace drover {

// The keys a table may hold, for "unknown key" checks and suggestions.
using Keys = std::span<const std::string_view>;

// Where a node or a key is in the file.
Location Loc(const toml::source_region& r);
Location Loc(const toml::node& n);

// "key[i]", naming an array element in messages.
std::string Elem(std::string_view key, size_t i);

class TomlReader {
 public:
  // Both must outlive the reader.
  TomlReader(ErrorList& errors, Suggester& suggest)
      : errors_(errors), suggest_(suggest) {}

  // Where messages are: " in task 'b'", " in [defaults]", or "" at the top.
  // SetContext returns the context it replaces, for nested tables.
  const std::string& context() const { return ctx_; }
  std::string SetContext(std::string ctx) {
    return std::exchange(ctx_, std::move(ctx));
  }

  // "'KEY' in task 'b'" followed by `rest`, reported at `n`.
  void Bad(const toml::node& n, std::string_view key, std::string_view rest);
  // "... must be WHAT, not an integer".
  void WrongType(const toml::node& n, std::string_view key,
                 std::string_view what);
  // An unknown key, with a suggestion from `known`. `prefix` names the
  // enclosing table, as in "retry.".
  void Unknown(const toml::key& k, Keys known, std::string_view prefix = "");

  std::optional<std::string> String(const toml::node& n, std::string_view key);
  std::optional<std::string> NonEmpty(const toml::node& n,
                                      std::string_view key);
  // Every element must be a string; one bad element fails the whole array.
  std::optional<std::vector<std::string>> StringArray(const toml::node& n,
                                                      std::string_view key);
  std::optional<std::map<std::string, std::string>> StringTable(
      const toml::node& n, std::string_view key);
  // A duration string (see ParseDuration); 0 only when `allow_zero`.
  std::optional<Millis> Duration(const toml::node& n, std::string_view key,
                                 bool allow_zero);
  // A number checked by `ok`; `what` is the requirement in messages.
  std::optional<double> Number(const toml::node& n, std::string_view key,
                               std::string_view what, bool (*ok)(double));
  // Checks the {{ }} templates in `text`, the value of `n`.
  void Template(const toml::node& n, std::string_view text,
                std::string_view key, bool allow_secrets);

 private:
  ErrorList& errors_;
  Suggester& suggest_;
  std::string ctx_;
};

}  // namespace drover

#endif  // DROVER_TOML_READER_H_
