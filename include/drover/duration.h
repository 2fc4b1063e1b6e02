// Durations and sizes as people write them: "1h30m", "512m".
//
// Called by the job-file parser (timeouts, retry delays, memory limits), the
// config files and flags (`--heartbeat-interval`, `--timeout`), and wherever
// a duration is shown (CLI output, scheduler messages, JSON). Thread-safe:
// the functions share no state.
#ifndef DROVER_DURATION_H_
#define DROVER_DURATION_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace drover {

using Millis = std::chrono::milliseconds;

// Durations: "1500ms", "30s", "5m", "2h", "1h30m", "1d"; a bare number is
// seconds. Sizes: "512m", "1g", "64k", "1024" (bytes), binary multiples;
// "512MiB"/"512MB" forms accepted too. nullopt on anything else.
std::optional<Millis> ParseDuration(std::string_view text);
std::optional<int64_t> ParseSize(std::string_view text);
// "1.5s", "250ms", "2m" — a short human form, used in messages and JSON.
std::string FormatDuration(Millis d);

}  // namespace drover

#endif  // DROVER_DURATION_H_
