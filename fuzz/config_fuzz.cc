// Fuzz target: config files (--config) for droverd and drover-worker.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "drover/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      "/tmp/drover-config-fuzz-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data),
              static_cast<std::streamsize>(size));
  }
  using drover::ConfigKind;
  static const std::vector<drover::ConfigKey> keys = {
      {"data-dir", ConfigKind::kString},
      {"heartbeat-interval", ConfigKind::kDuration},
      {"heartbeat-liveness", ConfigKind::kInteger},
      {"queue", ConfigKind::kStringList},
      {"insecure", ConfigKind::kBool},
      {"default-limits", ConfigKind::kTable},
  };
  drover::ConfigFile file = drover::ReadConfigFile(path, keys);
  for (const auto& d : file.errors) (void)d.ToString();
  return 0;
}
