// Fuzz target: what droverd reads back of job secrets. The bytes are opened
// as sealed secrets (SecretBox::OpenSecrets: any change must be refused,
// never crash), and read as a job file whose secret values are removed
// (WithoutSecretValues): the result must keep the TOML as it was, with
// every secret "".
#include <toml++/toml.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>

#include "drover/job_spec.h"
#include "secret_box.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string data(reinterpret_cast<const char*>(bytes), size);
  static const auto box = drover::SecretBox::WithKey(std::string(32, 'k'));
  auto opened = box->OpenSecrets(data);
  // Only a value sealed under this key opens, and random bytes never are.
  assert(!opened.ok() || data.empty());
  // A seal of what the bytes hold opens to the same.
  std::map<std::string, std::string> secrets = {{"K", data}};
  auto round = box->OpenSecrets(box->SealSecrets(secrets));
  assert(round.ok() && *round == secrets);

  const std::string kept = drover::WithoutSecretValues(data);
  toml::table before;
  try {
    before = toml::parse(data);
  } catch (const std::exception&) {
    assert(kept == data);  // not TOML: as it was
    return 0;
  }
  toml::table after = toml::parse(kept);  // throws (a crash) if broken
  const toml::table* secrets_after = after["secrets"].as_table();
  if (const toml::table* s = before["secrets"].as_table(); s && !s->empty()) {
    assert(secrets_after != nullptr && secrets_after->size() == s->size());
    for (const auto& [k, v] : *secrets_after) {
      assert(v.value<std::string>() == std::string());
    }
  } else {
    assert(kept == data);
  }
  before.erase("secrets");
  after.erase("secrets");
  assert(before == after);
  return 0;
}
