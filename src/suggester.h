// Suggester: the "did you mean 'x'?" in job-file errors, for unknown keys,
// unknown dependencies and unknown `--input` names.
//
// Used by the job-file parser (through TomlReader) and the dependency check
// (CheckJobGraph); one Suggester serves one file, so its work budget is per
// file. Thread-compatible: it counts the work it has done.
#ifndef DROVER_SUGGESTER_H_
#define DROVER_SUGGESTER_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace drover {

// Optimal string alignment distance, case-insensitive: a swap of two
// neighbours counts as one edit, the most common typo.
size_t EditDistance(std::string_view a, std::string_view b);

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

}  // namespace drover

#endif  // DROVER_SUGGESTER_H_
