#include "drover/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

namespace drover {
namespace {

Location Where(const toml::source_region& r) {
  return {static_cast<uint32_t>(r.begin.line),
          static_cast<uint32_t>(r.begin.column)};
}

Location Where(const toml::node& n) { return Where(n.source()); }

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1,
                         prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

ConfigFile ReadConfigFile(const std::string& path,
                          const std::vector<ConfigKey>& keys) {
  ConfigFile out;
  auto error = [&](Location where, std::string message) {
    out.errors.push_back(Diagnostic{path, where, std::move(message)});
  };
  // toml++ says only "File could not be opened"; say why, as `drover
  // validate` does for a job file.
  if (std::ifstream probe(path); !probe) {
    error({}, std::string("cannot open: ") + std::strerror(errno));
    return out;
  }
  // A directory opens, then reads as an empty file: all defaults, silently.
  if (std::error_code ec; std::filesystem::is_directory(path, ec)) {
    error({}, "cannot read: it is a directory");
    return out;
  }
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    error(Where(e.source()), std::string(e.description()));
    return out;
  }
  std::map<std::string, uint32_t> lines;  // each known key's first line
  for (const auto& [key, node] : table) {
    const std::string written(key.str());
    std::string name = written;
    std::replace(name.begin(), name.end(), '_', '-');
    auto known =
        std::find_if(keys.begin(), keys.end(),
                     [&](const ConfigKey& k) { return k.name == name; });
    if (known == keys.end()) {
      std::string best;
      size_t best_d = 3;
      for (const ConfigKey& k : keys) {
        size_t d = EditDistance(name, k.name);
        if (d < best_d) best_d = d, best = k.name;
      }
      error(Where(key.source()),
            "unknown key '" + written + "'" +
                (best.empty() ? "" : "; did you mean '" + best + "'?"));
      continue;
    }
    if (auto [seen, fresh] = lines.emplace(name, Where(key.source()).line);
        !fresh) {
      // `a_b` and `a-b` are one key: the file says it twice.
      error(Where(key.source()),
            "'" + written + "' is '" + name + "' again (line " +
                std::to_string(seen->second) + "); write each key once");
      continue;
    }
    ConfigValue v;
    v.where = Where(node);
    switch (known->kind) {
      case ConfigKind::kString:
        if (!node.is_string()) {
          error(v.where, "'" + name + "' must be a string");
          continue;
        }
        v.values.push_back(std::string(*node.value<std::string>()));
        break;
      case ConfigKind::kDuration: {
        auto s = node.value<std::string>();
        if (!node.is_string() || !ParseDuration(*s)) {
          error(v.where, "'" + name +
                             "' must be a duration string such as \"1s\" or "
                             "\"500ms\"");
          continue;
        }
        v.values.push_back(*s);
        break;
      }
      case ConfigKind::kTable: {
        const toml::table* tbl = node.as_table();
        if (tbl == nullptr) {
          error(v.where, "'" + name +
                             "' must be a table such as { memory = \"1g\" }");
          continue;
        }
        std::string text;
        bool good = true;
        for (const auto& [k, n] : *tbl) {
          std::string value;
          if (auto str = n.value_exact<std::string>()) {
            value = *str;
          } else if (auto i = n.value_exact<int64_t>()) {
            value = std::to_string(*i);
          } else if (auto d = n.value_exact<double>()) {
            char buf[32];
            snprintf(buf, sizeof buf, "%g", *d);
            value = buf;
          } else {
            error(Where(n), "'" + name + "." + std::string(k.str()) +
                                "' must be a string or a number");
            good = false;
            break;
          }
          text += (text.empty() ? "" : ",") + std::string(k.str()) + "=" + value;
        }
        if (!good) continue;
        v.values.push_back(text);
        break;
      }
      case ConfigKind::kBool:
        if (!node.is_boolean()) {
          error(v.where, "'" + name + "' must be true or false");
          continue;
        }
        v.values.push_back(*node.value<bool>() ? "true" : "false");
        break;
      case ConfigKind::kInteger: {
        auto i = node.value<int64_t>();
        if (!node.is_integer() || *i < 0) {
          error(v.where, "'" + name + "' must be a non-negative integer");
          continue;
        }
        v.values.push_back(std::to_string(*i));
        break;
      }
      case ConfigKind::kStringList:
        if (node.is_string()) {
          v.values.push_back(*node.value<std::string>());
        } else if (const toml::array* arr = node.as_array()) {
          bool good = true;
          for (const auto& el : *arr) {
            if (!el.is_string()) {
              error(Where(el), "'" + name + "' must hold only strings");
              good = false;
              break;
            }
            v.values.push_back(*el.value<std::string>());
          }
          if (!good) continue;
        } else {
          error(v.where, "'" + name + "' must be an array of strings");
          continue;
        }
        break;
    }
    out.values[name] = std::move(v);
  }
  // toml++ iterates keys alphabetically; people read files top to bottom.
  std::stable_sort(out.errors.begin(), out.errors.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::tie(a.where.line, a.where.column) <
                            std::tie(b.where.line, b.where.column);
                   });
  return out;
}

const std::vector<ConfigKey>& DroverdConfigKeys() {
  static const std::vector<ConfigKey> kKeys = {
      {"data-dir", ConfigKind::kString},
      {"api", ConfigKind::kString},
      {"tasks", ConfigKind::kString},
      {"heartbeat", ConfigKind::kString},
      {"watch-dir", ConfigKind::kString},
      {"auth", ConfigKind::kString},
      {"secrets-key", ConfigKind::kString},
      {"insecure", ConfigKind::kBool},
      {"heartbeat-interval", ConfigKind::kDuration},
      {"heartbeat-liveness", ConfigKind::kInteger},
      {"log-level", ConfigKind::kString},
  };
  return kKeys;
}

const std::vector<ConfigKey>& WorkerConfigKeys() {
  static const std::vector<ConfigKey> kKeys = {
      {"tasks", ConfigKind::kString},
      {"heartbeat", ConfigKind::kString},
      {"key", ConfigKind::kString},
      {"server-key", ConfigKind::kString},
      {"name", ConfigKind::kString},
      {"queue", ConfigKind::kStringList},
      {"prefetch", ConfigKind::kInteger},
      {"runtime", ConfigKind::kStringList},
      {"allowed-images", ConfigKind::kStringList},
      {"allowed-networks", ConfigKind::kStringList},
      {"allow-root", ConfigKind::kBool},
      {"default-limits", ConfigKind::kTable},
      {"max-limits", ConfigKind::kTable},
      {"cap-add-allowed", ConfigKind::kStringList},
      {"max-log-bytes", ConfigKind::kString},
      {"shell-uids", ConfigKind::kString},
      {"docker-socket", ConfigKind::kString},
      {"docker-output", ConfigKind::kString},
      {"docker-daemon-work-dir", ConfigKind::kString},
      {"work-dir", ConfigKind::kString},
      {"heartbeat-interval", ConfigKind::kDuration},
      {"shutdown-grace", ConfigKind::kDuration},
      {"log-level", ConfigKind::kString},
  };
  return kKeys;
}

}  // namespace drover
