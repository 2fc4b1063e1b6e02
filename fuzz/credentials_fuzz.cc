// Fuzz target: the credential and allowlist path. The bytes are read as a
// key file (ParseKeyText), as an allowlisted .pub file (Allowlist::Load),
// and as the frames of a ZAP request (DecideZap), whose answer must admit
// exactly the keys the allowlist gives the request's domain.
#include <unistd.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "allowlist.h"
#include "drover/keys.h"
#include "zap_handler.h"

namespace {

// Frames separated by the byte 0x00 0xff (a separator no test needs whole).
std::vector<std::string> Frames(std::string_view data) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = data.find(std::string_view("\0\xff", 2), start);
    if (at == std::string_view::npos) {
      out.emplace_back(data.substr(start));
      return out;
    }
    out.emplace_back(data.substr(start, at - start));
    start = at + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  // A key file.
  auto key = drover::ParseKeyText(data, "fuzz.pub");
  if (key.ok()) {
    auto raw = drover::DecodeKey(*key);
    assert(raw.ok() && raw->size() == drover::kKeyBytes);
    assert(drover::EncodeKey(*raw) == *key);
  }
  // The same bytes as a listed worker key, read by the allowlist.
  static const std::string dir =
      "/tmp/drover-credentials-fuzz-" + std::to_string(getpid());
  static const bool made = [] {
    for (const char* f : {"clients", "readers", "workers"}) {
      std::filesystem::create_directories(dir + "/" + f);
    }
    return true;
  }();
  (void)made;
  {
    std::ofstream out(dir + "/workers/w.pub", std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  std::vector<std::string> problems;
  drover::Allowlist list = drover::Allowlist::Load(dir, &problems);
  assert(list.workers() == (key.ok() ? 1u : 0u));
  // A ZAP request.
  const std::vector<std::string> request = Frames(data);
  drover::ZapAnswer a = drover::DecideZap(request, list);
  assert(a.status == "200" || a.status == "400" || a.status == "500");
  if (a.status == "200") {
    assert(request.size() == 7 && request[5] == "CURVE");
    assert(a.user_id == drover::EncodeKey(request[6]));
    const drover::Principal* p = list.Find(a.user_id);
    assert(p != nullptr && p->Allows(request[2]));
  } else {
    assert(a.user_id.empty());
  }
  return 0;
}
