// Fuzz target: what the Docker daemon streams back — the multiplexed log
// stream and the tar archive of the output file — cut at arbitrary points.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "docker_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte chooses the piece size, so splits land everywhere.
  const size_t piece = 1 + data[0] % 97;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t bytes = 0;
  drover::StreamDemuxer demux(
      [&](std::string_view s) { bytes += s.size(); },
      [&](std::string_view s) { bytes += s.size(); },
      [&](std::string_view s) { bytes += s.size(); });
  drover::TarFileReader tar(4096);
  bool more = true;
  for (size_t at = 0; at < rest.size(); at += piece) {
    std::string_view chunk = rest.substr(at, piece);
    demux.Feed(chunk);
    if (more) more = tar.Feed(chunk);
  }
  (void)demux.AtFrameBoundary();
  if (tar.contents().size() > 4096) __builtin_trap();  // the cap holds
  return 0;
}
