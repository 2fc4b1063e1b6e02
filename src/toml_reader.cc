// TomlReader. See toml_reader.h.
#include "toml_reader.h"

#include <cmath>
#include <iterator>
#include <utility>

#include "drover/expression.h"

namespace drover {
namespace {

std::string TypeName(const toml::node& n) {
  // Indexed by toml::node_type: none, table, array, string, integer,
  // floating_point, boolean, date, time, date_time.
  constexpr const char* kNames[] = {
      "nothing", "a table",   "an array", "a string", "an integer",
      "a float", "a boolean", "a date",   "a time",   "a date-time"};
  auto i = static_cast<size_t>(n.type());
  return i < std::size(kNames) ? kNames[i] : "nothing";
}

}  // namespace

Location Loc(const toml::source_region& r) {
  return {r.begin.line, r.begin.column};
}
Location Loc(const toml::node& n) { return Loc(n.source()); }

std::string Elem(std::string_view key, size_t i) {
  return std::string(key) + "[" + std::to_string(i) + "]";
}

void TomlReader::Bad(const toml::node& n, std::string_view key,
                     std::string_view rest) {
  errors_.Add(Loc(n), Quoted(key) + ctx_ + std::string(rest));
}

void TomlReader::WrongType(const toml::node& n, std::string_view key,
                           std::string_view what) {
  Bad(n, key, " must be " + std::string(what) + ", not " + TypeName(n));
}

void TomlReader::Unknown(const toml::key& k, Keys known,
                         std::string_view prefix) {
  errors_.Add(Loc(k.source()),
              "unknown key " +
                  Quoted(std::string(prefix) + std::string(k.str())) + ctx_ +
                  suggest_(k.str(), known, prefix));
}

std::optional<std::string> TomlReader::String(const toml::node& n,
                                              std::string_view key) {
  if (const auto* s = n.as_string()) return s->get();
  WrongType(n, key, "a string");
  return std::nullopt;
}

std::optional<std::string> TomlReader::NonEmpty(const toml::node& n,
                                                std::string_view key) {
  auto s = String(n, key);
  if (!s || !s->empty()) return s;
  Bad(n, key, " must not be empty");
  return std::nullopt;
}

std::optional<std::vector<std::string>> TomlReader::StringArray(
    const toml::node& n, std::string_view key) {
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

std::optional<std::map<std::string, std::string>> TomlReader::StringTable(
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

std::optional<Millis> TomlReader::Duration(const toml::node& n,
                                           std::string_view key,
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

std::optional<double> TomlReader::Number(const toml::node& n,
                                         std::string_view key,
                                         std::string_view what,
                                         bool (*ok)(double)) {
  std::optional<double> x = n.value<double>();
  if (!n.is_number()) {
    WrongType(n, key, what);
  } else if (!x || !std::isfinite(*x) || !ok(*x)) {
    Bad(n, key, " must be " + std::string(what));
    x.reset();
  }
  return x;
}

void TomlReader::Template(const toml::node& n, std::string_view text,
                          std::string_view key, bool allow_secrets) {
  Status s = CheckTemplate(text, allow_secrets);
  if (!s.ok()) Bad(n, key, ": " + s.message());
}

}  // namespace drover
