// Small text helpers shared by the scheduler and the worker.
//
// Thread-safe.
#ifndef DROVER_TEXT_H_
#define DROVER_TEXT_H_

#include <string>
#include <string_view>
#include <vector>

namespace drover {

// What a secret's value is replaced with wherever it would be shown.
inline constexpr std::string_view kRedacted = "[redacted]";

// `text` with every occurrence of each non-empty secret replaced by
// kRedacted.
std::string RedactSecrets(std::string text,
                          const std::vector<std::string>& secrets);

// `n` random lowercase hex digits (ids that change at every start).
std::string RandomHex(size_t n);

}  // namespace drover

#endif  // DROVER_TEXT_H_
