// Durations and sizes as people write them. See include/drover/duration.h.
//
// Both parsers are strict: a number, then a known unit, and nothing else, so
// a typo such as "1h30" or "5mins" is an error rather than a surprise.
// Results are capped at 100 years and 2^62 bytes, well inside int64_t.
#include "drover/duration.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <span>
#include <utility>

#include "ascii.h"

namespace drover {
namespace {

constexpr double kMaxDurationMs = 100.0 * 365 * 86400 * 1000;  // 100 years
constexpr double kMaxSizeBytes = 4611686018427387904.0;        // 2^62

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

}  // namespace

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

}  // namespace drover
