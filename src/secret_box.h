// SecretBox: how droverd keeps job secrets at rest. Each job's [secrets]
// are sealed with libsodium's secretbox (XSalsa20-Poly1305) under one key,
// kept in a file outside the data dir, so a copy or backup of the data dir
// alone reveals no secret (docs/SECURITY.md, docs/STORE.md).
//
// The key file (--secrets-key; by default secrets.key in the --auth dir,
// else in the data dir) holds 32 random bytes as one line of Z85 text and
// is made, mode 0600, on first start. A sealed value names the key it was
// sealed under (by a short hash), so a wrong key file is reported as such.
//
// Thread-safe: Seal and Open share only the immutable key.
#ifndef DROVER_SECRET_BOX_H_
#define DROVER_SECRET_BOX_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "drover/status.h"

namespace drover {

class SecretBox {
 public:
  // Reads the key file at `path`, making it first if it does not exist
  // (then `*created` is set). Errors name the file and say what to do.
  static Result<std::unique_ptr<SecretBox>> Open(const std::string& path,
                                                 bool* created = nullptr);
  // For tests and the fuzz target: a box with this 32-byte key.
  static std::unique_ptr<SecretBox> WithKey(std::string key);

  // A job's secrets, sealed: empty for none.
  std::string SealSecrets(const std::map<std::string, std::string>& secrets) const;
  // Opens what SealSecrets made. Corruption when it was tampered with or
  // is not a sealed value; InvalidArgument naming both keys when it was
  // sealed under another key.
  Result<std::map<std::string, std::string>> OpenSecrets(
      std::string_view sealed) const;

  // The key's short hash, as hex (in error messages).
  std::string key_id() const;

 private:
  explicit SecretBox(std::string key);
  std::string key_;     // 32 bytes
  std::string key_id_;  // 8 bytes
};

}  // namespace drover

#endif  // DROVER_SECRET_BOX_H_
