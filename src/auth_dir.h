// AuthDir: droverd's --auth directory. Holds the scheduler's key pair
// (server.key, server.key.pub, made on first start) and the allowlists
// (clients/, readers/, workers/, see allowlist.h), and watches those
// folders with inotify so that droverd takes changes without a restart.
//
//   DIR/server.key       the scheduler's secret key (0600)
//   DIR/server.key.pub   its public key: what workers and clients pin
//   DIR/clients/*.pub    keys that may submit, cancel and read
//   DIR/readers/*.pub    keys that may only read
//   DIR/workers/*.pub    keys that may serve as workers
//
// Thread-compatible: owned by droverd's loop.
#ifndef DROVER_AUTH_DIR_H_
#define DROVER_AUTH_DIR_H_

#include <memory>
#include <string>

#include "allowlist.h"
#include "drover/keys.h"
#include "drover/status.h"

namespace drover {

class AuthDir {
 public:
  explicit AuthDir(std::string dir);
  ~AuthDir();
  AuthDir(const AuthDir&) = delete;
  AuthDir& operator=(const AuthDir&) = delete;

  // Creates what is missing (the folders; the key pair, saying so in the
  // log), reads the key pair and the allowlists, and starts watching.
  Status Open();

  const KeyPair& server_key() const { return server_key_; }
  std::shared_ptr<const Allowlist> allowlist() const { return list_; }
  // The same, for a look-up on the loop's thread (no reference counting).
  const Allowlist& list() const { return *list_; }
  // The inotify descriptor: readable when a folder changed.
  int fd() const { return fd_; }
  // After fd() polled readable: reads its events and the allowlists again.
  // True if they were read again.
  bool Reload();

 private:
  void Read();

  std::string dir_;
  KeyPair server_key_;
  std::shared_ptr<const Allowlist> list_;
  int fd_ = -1;
};

}  // namespace drover

#endif  // DROVER_AUTH_DIR_H_
