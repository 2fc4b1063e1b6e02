// Keys: the CURVE key pairs that authenticate drover's three programs to
// one another, and the files they live in (docs/SECURITY.md).
//
// A key file holds one 32-byte key as one line of Z85 text (40 characters,
// ZeroMQ's own encoding); blank lines and lines starting with '#' are
// ignored. `drover keygen FILE` writes a pair: FILE, the secret key (mode
// 0600), and FILE.pub, the public key. A secret key file that other users
// may read is refused, as ssh refuses such a private key.
//
// Called by the three mains (their --key and --server-key flags, droverd's
// --auth dir), the scheduler's allowlists and secrets box, and the fuzz
// target. Thread-safe: pure functions, and file I/O on the caller's thread.
#ifndef DROVER_KEYS_H_
#define DROVER_KEYS_H_

#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "drover/status.h"

namespace drover {

inline constexpr size_t kKeyBytes = 32;
inline constexpr size_t kKeyTextBytes = 40;  // Z85 of 32 bytes

// A CURVE key pair, both halves as Z85 text.
struct KeyPair {
  std::string public_key;
  std::string secret_key;
};

// A fresh CURVE key pair.
Result<KeyPair> NewKeyPair();
// 32 random bytes as Z85 text: a new secretbox key.
Result<std::string> NewSymmetricKey();

// The key in a key file's text, as Z85. `file` names it in errors, which
// are located: "FILE:LINE:COL: error: ..." (InvalidArgument).
Result<std::string> ParseKeyText(std::string_view text, std::string_view file);
// Z85 text to its 32 bytes; InvalidArgument if it is not a key.
Result<std::string> DecodeKey(std::string_view z85);
std::string EncodeKey(std::string_view bytes);  // 32 bytes to Z85

// Reads a key file. With `secret`, a file that its group or other users may
// read (or write) is refused with PermissionDenied, saying how to fix it.
// NotFound when it does not exist.
Result<std::string> ReadKeyFile(const std::string& path, bool secret);
// Reads a CURVE secret key file and derives its public half.
Result<KeyPair> ReadSecretKey(const std::string& path);
// Creates `path` holding `key` (Z85) under a comment line, with `mode`,
// never over an existing file (AlreadyExists), synced to disk.
Status WriteKeyFile(const std::string& path, std::string_view key,
                    std::string_view comment, unsigned mode);
// `drover keygen FILE`: FILE (the secret key, 0600) and FILE.pub (0644).
Status WriteKeyPair(const std::string& path, const KeyPair& pair);

// The keys a client or a worker connects with: its own pair and the
// scheduler's public key, which it pins.
struct ClientKeys {
  KeyPair own;
  std::string server_key;  // Z85
};
// Reads --key and --server-key files; both or neither must be given. An
// empty result when neither is: the connection is not encrypted.
Result<std::optional<ClientKeys>> LoadClientKeys(const std::string& key_file,
                                                 const std::string& server_key_file);
// Makes `socket` a CURVE client with these keys; before it connects.
void UseClientKeys(zmq::socket_t& socket, const ClientKeys& keys);

}  // namespace drover

#endif  // DROVER_KEYS_H_
