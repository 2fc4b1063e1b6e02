#include "secret_box.h"

#include <sodium.h>

#include <msgpack.hpp>

#include "drover/keys.h"

namespace drover {
namespace {

// "dsb1", the key's id, the nonce, then the box.
constexpr std::string_view kMagic = "dsb1";
constexpr size_t kKeyIdBytes = 8;
constexpr size_t kHeaderBytes =
    kMagic.size() + kKeyIdBytes + crypto_secretbox_NONCEBYTES;
// A job's secrets come from a job file, at most 1 MiB.
constexpr size_t kMaxSealedBytes = 2 << 20;

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

}  // namespace

SecretBox::SecretBox(std::string key) : key_(std::move(key)) {
  unsigned char id[crypto_generichash_BYTES_MIN];
  crypto_generichash(id, sizeof id,
                     reinterpret_cast<const unsigned char*>(key_.data()),
                     key_.size(), nullptr, 0);
  key_id_.assign(reinterpret_cast<const char*>(id), kKeyIdBytes);
}

std::unique_ptr<SecretBox> SecretBox::WithKey(std::string key) {
  if (sodium_init() < 0) return nullptr;
  return std::unique_ptr<SecretBox>(new SecretBox(std::move(key)));
}

Result<std::unique_ptr<SecretBox>> SecretBox::Open(const std::string& path,
                                                   bool* created) {
  if (sodium_init() < 0) return Status::Internal("libsodium cannot start");
  if (created != nullptr) *created = false;
  auto text = ReadKeyFile(path, /*secret=*/true);
  if (!text.ok() && text.status().code() == Code::kNotFound) {
    auto fresh = NewSymmetricKey();
    if (!fresh.ok()) return fresh.status();
    Status st = WriteKeyFile(path, *fresh,
                             "drover secrets key: job secrets in the store are "
                             "sealed with it; back it up apart from the data "
                             "dir",
                             0600);
    if (!st.ok()) return st;
    if (created != nullptr) *created = true;
    text = *fresh;
  }
  if (!text.ok()) return text.status();
  auto key = DecodeKey(*text);
  if (!key.ok()) return Status::InvalidArgument(path + ": " + key.status().message());
  return std::unique_ptr<SecretBox>(new SecretBox(std::move(*key)));
}

std::string SecretBox::key_id() const { return Hex(key_id_); }

std::string SecretBox::SealSecrets(
    const std::map<std::string, std::string>& secrets) const {
  if (secrets.empty()) return "";
  msgpack::sbuffer plain;
  msgpack::pack(plain, secrets);
  std::string out(kHeaderBytes + crypto_secretbox_MACBYTES + plain.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  std::copy(kMagic.begin(), kMagic.end(), out.begin());
  std::copy(key_id_.begin(), key_id_.end(), out.begin() + kMagic.size());
  unsigned char* nonce = p + kMagic.size() + kKeyIdBytes;
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(p + kHeaderBytes,
                        reinterpret_cast<const unsigned char*>(plain.data()),
                        plain.size(), nonce,
                        reinterpret_cast<const unsigned char*>(key_.data()));
  sodium_memzero(plain.data(), plain.size());
  return out;
}

Result<std::map<std::string, std::string>> SecretBox::OpenSecrets(
    std::string_view sealed) const {
  if (sealed.empty()) return std::map<std::string, std::string>();
  if (sealed.size() < kHeaderBytes + crypto_secretbox_MACBYTES ||
      sealed.size() > kMaxSealedBytes || !sealed.starts_with(kMagic)) {
    return Status::Corruption("the sealed secrets are not a sealed value");
  }
  const std::string_view id = sealed.substr(kMagic.size(), kKeyIdBytes);
  if (id != key_id_) {
    return Status::InvalidArgument(
        "the secrets were sealed under another secrets key (id " + Hex(id) +
        "; this one is " + key_id() + "): give droverd that key file with "
        "--secrets-key");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(sealed.data());
  const size_t box = sealed.size() - kHeaderBytes;
  std::string plain(box - crypto_secretbox_MACBYTES, '\0');
  if (crypto_secretbox_open_easy(
          reinterpret_cast<unsigned char*>(plain.data()), p + kHeaderBytes,
          box, p + kMagic.size() + kKeyIdBytes,
          reinterpret_cast<const unsigned char*>(key_.data())) != 0) {
    return Status::Corruption("the sealed secrets do not open: they were "
                              "altered");
  }
  std::map<std::string, std::string> secrets;
  try {
    msgpack::object_handle h = msgpack::unpack(plain.data(), plain.size());
    h.get().convert(secrets);
  } catch (const std::exception& e) {
    sodium_memzero(plain.data(), plain.size());
    return Status::Corruption(std::string("the opened secrets do not decode: ") +
                              e.what());
  }
  sodium_memzero(plain.data(), plain.size());
  return secrets;
}

}  // namespace drover
