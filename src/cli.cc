#include "drover/cli.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string_view>
#include <tuple>

#include "drover/job_spec.h"

namespace drover {

namespace {

// A syslog priority prefix ("<6>") that journald strips and records as the
// entry's PRIORITY=, so that `journalctl -p warning` filters by level.
class JournalPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    // trace, debug, info, warn, error, critical, off
    static constexpr std::string_view kPrefix[] = {"<7>", "<7>", "<6>", "<4>",
                                                   "<3>", "<2>", "<6>"};
    const std::string_view p = kPrefix[static_cast<size_t>(msg.level) % 7];
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JournalPriority>();
  }
};

// systemd sets $JOURNAL_STREAM to the device and inode of the stream it
// connected stdout/stderr to; stderr is the journal only if they match
// (not, say, when a service's child redirected it to a file).
bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st;
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

bool SetUpLogging(const std::string& level, const std::string& name) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") return false;
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>(
      isatty(STDERR_FILENO) ? spdlog::color_mode::automatic
                            : spdlog::color_mode::never);
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (StderrIsJournal()) {
    // The journal stamps each line itself and records its priority from
    // the prefix; the level word stays for `journalctl -o cat` readers.
    formatter->add_flag<JournalPriority>('*').set_pattern("%*%l %v");
  } else {
    // The level stays right after the time so that filtering by eye (or
    // grep) is easy.
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  return true;
}

bool ApplyConfig(CLI::App& app, const std::string& path,
                 const std::vector<ConfigKey>& keys) {
  if (path.empty()) return true;
  ConfigFile file = ReadConfigFile(path, keys);
  // Values of the right type are applied (and checked) even when others
  // are not, so that one run reports every problem in the file.
  std::vector<Diagnostic> errors = file.errors;
  for (const auto& [key, value] : file.values) {
    CLI::Option* opt = app.get_option_no_throw("--" + key);
    if (opt == nullptr || opt->count() > 0) continue;  // the flag wins
    if (value.values.empty()) continue;  // an empty list: the default
    try {
      for (const std::string& v : value.values) opt->add_result(v);
      opt->run_callback();
    } catch (const CLI::ParseError& e) {
      // CLI11 names the flag ("--api: ..."); the file names the key.
      std::string why = e.what();
      const std::string flag = "--" + key + ": ";
      if (why.rfind(flag, 0) == 0) why.erase(0, flag.size());
      errors.push_back(Diagnostic{path, value.where, "'" + key + "': " + why});
    }
  }
  std::stable_sort(errors.begin(), errors.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::tie(a.where.line, a.where.column) <
                            std::tie(b.where.line, b.where.column);
                   });
  for (const Diagnostic& d : errors) std::cerr << d.ToString() << "\n";
  return errors.empty();
}

CLI::Validator DurationValidator(std::chrono::milliseconds min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        auto d = ParseDuration(value);
        if (!d) {
          return "'" + value +
                 "' is not a duration such as \"1s\", \"500ms\" or \"2m\"";
        }
        if (*d < min) {
          return "'" + value + "' is shorter than the minimum, " +
                 FormatDuration(min);
        }
        return "";
      },
      "DURATION");
}

CLI::Validator LogLevelValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        for (const char* level : {"trace", "debug", "info", "warn", "error"}) {
          if (value == level) return "";
        }
        return "'" + value + "' is not one of trace, debug, info, warn, error";
      },
      "LEVEL");
}

CLI::Validator EndpointValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        for (const char* scheme : {"tcp://", "ipc://"}) {
          const size_t n = std::char_traits<char>::length(scheme);
          if (value.size() > n && value.compare(0, n, scheme) == 0) return "";
        }
        return "'" + value +
               "' is not an endpoint such as tcp://127.0.0.1:7700 or "
               "ipc:///run/drover/api";
      },
      "ENDPOINT");
}

void AddKeyOptions(CLI::App& app, const std::string& who, std::string* key,
                   std::string* server_key) {
  const char* env_key = std::getenv("DROVER_KEY");
  const char* env_server_key = std::getenv("DROVER_SERVER_KEY");
  *key = env_key ? env_key : "";
  *server_key = env_server_key ? env_server_key : "";
  app.add_option("--key", *key,
                 "this " + who +
                     "'s secret key file, for a scheduler that requires keys "
                     "(or $DROVER_KEY)");
  app.add_option("--server-key", *server_key,
                 "the scheduler's public key file, which the " + who +
                     " pins (or $DROVER_SERVER_KEY)");
}

void ProtectProcessMemory() {
  const rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

bool IsLocalEndpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  // tcp://SOURCE;HOST:PORT connects from SOURCE; HOST is what counts.
  if (size_t semi = host.rfind(';'); semi != std::string_view::npos) {
    host = host.substr(semi + 1);
  }
  const size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "lo" || host == "::1") return true;
  // 127.0.0.0/8, written as four decimal numbers.
  if (!host.starts_with("127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace drover
