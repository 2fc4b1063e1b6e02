#include "drover/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <iostream>

namespace drover {

bool SetUpLogging(const std::string& level, const std::string& name) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") return false;
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>(
      isatty(STDERR_FILENO) ? spdlog::color_mode::automatic
                            : spdlog::color_mode::never);
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  // Under systemd the journal adds its own timestamp; the level stays
  // first so `journalctl -p` style filtering by eye is easy.
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  return true;
}

bool ApplyConfig(CLI::App& app, const std::string& path,
                 const std::vector<ConfigKey>& keys) {
  if (path.empty()) return true;
  ConfigFile file = ReadConfigFile(path, keys);
  for (const Diagnostic& d : file.errors) std::cerr << d.ToString() << "\n";
  if (!file.ok()) return false;
  for (const auto& [key, value] : file.values) {
    CLI::Option* opt = app.get_option_no_throw("--" + key);
    if (opt == nullptr || opt->count() > 0) continue;  // the flag wins
    try {
      for (const std::string& v : value.values) opt->add_result(v);
      opt->run_callback();
    } catch (const CLI::ParseError& e) {
      std::cerr << Diagnostic{path, value.where,
                              "'" + key + "': " + e.what()}
                       .ToString()
                << "\n";
      return false;
    }
  }
  return true;
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
