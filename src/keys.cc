#include "drover/keys.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "drover/job_spec.h"

namespace drover {
namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";

// Key files are a line or two: anything much larger is not one.
constexpr size_t kMaxKeyFileBytes = 4096;

Status Located(std::string_view file, uint32_t line, uint32_t column,
               std::string message) {
  return Status::InvalidArgument(
      Diagnostic{std::string(file), {line, column}, std::move(message)}
          .ToString());
}

std::string Octal(unsigned mode) {
  char buf[8];
  snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

}  // namespace

Result<KeyPair> NewKeyPair() {
  char pub[kKeyTextBytes + 1], sec[kKeyTextBytes + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::Internal(std::string("cannot make a CURVE key pair: ") +
                            zmq_strerror(zmq_errno()));
  }
  return KeyPair{pub, sec};
}

Result<std::string> NewSymmetricKey() {
  std::string bytes(kKeyBytes, '\0');
  // The kernel's CSPRNG; blocks only until it is seeded, early at boot.
  if (getrandom(bytes.data(), bytes.size(), 0) !=
      static_cast<ssize_t>(bytes.size())) {
    return Status::Internal(std::string("getrandom: ") + strerror(errno));
  }
  return EncodeKey(bytes);
}

std::string EncodeKey(std::string_view bytes) {
  char out[kKeyTextBytes + 1];
  zmq_z85_encode(out, reinterpret_cast<const uint8_t*>(bytes.data()),
                 bytes.size());
  return out;
}

Result<std::string> DecodeKey(std::string_view z85) {
  if (z85.size() != kKeyTextBytes) {
    return Status::InvalidArgument("a key is " +
                                   std::to_string(kKeyTextBytes) +
                                   " characters of Z85 text, not " +
                                   std::to_string(z85.size()));
  }
  for (char c : z85) {
    if (kZ85Alphabet.find(c) == std::string_view::npos) {
      return Status::InvalidArgument(
          std::string("a key holds only Z85 characters, not '") + c + "'");
    }
  }
  const std::string text(z85);
  std::string bytes(kKeyBytes, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(bytes.data()),
                     text.c_str()) == nullptr) {
    return Status::InvalidArgument("not a Z85-encoded key");
  }
  return bytes;
}

Result<std::string> ParseKeyText(std::string_view text, std::string_view file) {
  if (text.size() > kMaxKeyFileBytes) {
    return Located(file, 0, 0,
                   "a key file is a line of text; this one has " +
                       std::to_string(text.size()) + " bytes");
  }
  std::optional<std::string> key;
  uint32_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    size_t last = line.find_last_not_of(" \t\r");
    std::string_view word = line.substr(first, last - first + 1);
    const uint32_t column = static_cast<uint32_t>(first + 1);
    if (key) {
      return Located(file, line_no, column,
                     "a key file holds one key; this is a second line");
    }
    if (auto bytes = DecodeKey(word); !bytes.ok()) {
      return Located(file, line_no, column, bytes.status().message());
    }
    key = std::string(word);
  }
  if (!key) return Located(file, line_no, 0, "no key in the file");
  return *key;
}

Result<std::string> ReadKeyFile(const std::string& path, bool secret) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const std::string why = strerror(errno);
    if (errno == ENOENT) return Status::NotFound(path + ": no such key file");
    return Status::IOError("cannot read the key file " + path + ": " + why);
  }
  struct stat st;
  std::string text;
  Status st_read;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    st_read = Status::InvalidArgument(path + ": not a regular file");
  } else if (secret && (st.st_mode & 077) != 0) {
    st_read = Status::PermissionDenied(
        path + ": this secret key may be read by other users (mode " +
        Octal(st.st_mode) + "); run: chmod 600 " + path);
  } else {
    char buf[kMaxKeyFileBytes + 1];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0 &&
           text.size() <= kMaxKeyFileBytes) {
      text.append(buf, static_cast<size_t>(n));
    }
    if (n < 0) st_read = Status::IOError(path + ": " + strerror(errno));
  }
  close(fd);
  if (!st_read.ok()) return st_read;
  return ParseKeyText(text, path);
}

Result<KeyPair> ReadSecretKey(const std::string& path) {
  auto secret = ReadKeyFile(path, /*secret=*/true);
  if (!secret.ok()) return secret.status();
  char pub[kKeyTextBytes + 1];
  if (zmq_curve_public(pub, secret->c_str()) != 0) {
    return Status::InvalidArgument(path + ": not a CURVE secret key");
  }
  return KeyPair{pub, *secret};
}

Status WriteKeyFile(const std::string& path, std::string_view key,
                    std::string_view comment, unsigned mode) {
  const int fd = open(path.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      mode);
  if (fd < 0) {
    const std::string why = strerror(errno);
    if (errno == EEXIST) {
      return Status::AlreadyExists(path +
                                   " exists; remove it first to replace it");
    }
    return Status::IOError("cannot create " + path + ": " + why);
  }
  std::string text;
  if (!comment.empty()) text += "# " + std::string(comment) + "\n";
  text += std::string(key) + "\n";
  // The umask may have taken bits away; it never adds any.
  const bool ok = fchmod(fd, mode) == 0 &&
                  write(fd, text.data(), text.size()) ==
                      static_cast<ssize_t>(text.size()) &&
                  fsync(fd) == 0;
  const std::string why = strerror(errno);
  close(fd);
  if (!ok) {
    unlink(path.c_str());
    return Status::IOError("cannot write " + path + ": " + why);
  }
  return Status::Ok();
}

Status WriteKeyPair(const std::string& path, const KeyPair& pair) {
  const std::string pub = path + ".pub";
  if (access(pub.c_str(), F_OK) == 0) {
    return Status::AlreadyExists(pub + " exists; remove it first to replace it");
  }
  Status st = WriteKeyFile(path, pair.secret_key,
                           "drover secret key: keep it private; its public "
                           "half is " + pub, 0600);
  if (!st.ok()) return st;
  st = WriteKeyFile(pub, pair.public_key, "", 0644);
  if (!st.ok()) unlink(path.c_str());
  return st;
}

Result<std::optional<ClientKeys>> LoadClientKeys(
    const std::string& key_file, const std::string& server_key_file) {
  if (key_file.empty() && server_key_file.empty()) {
    return std::optional<ClientKeys>();
  }
  if (key_file.empty() || server_key_file.empty()) {
    return Status::InvalidArgument(
        "--key and --server-key go together: the first is this side's "
        "secret key, the second the scheduler's public key");
  }
  auto own = ReadSecretKey(key_file);
  if (!own.ok()) return own.status();
  auto server = ReadKeyFile(server_key_file, /*secret=*/false);
  if (!server.ok()) return server.status();
  return std::optional<ClientKeys>(ClientKeys{*own, *server});
}

void UseClientKeys(zmq::socket_t& socket, const ClientKeys& keys) {
  socket.set(zmq::sockopt::curve_serverkey, keys.server_key);
  socket.set(zmq::sockopt::curve_publickey, keys.own.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.own.secret_key);
}

}  // namespace drover
