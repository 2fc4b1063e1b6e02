// Allowlist: which CURVE keys may talk to droverd, and as what. Read from
// droverd's --auth directory: DIR/clients/*.pub may submit, cancel and
// read; DIR/readers/*.pub may only read; DIR/workers/*.pub may serve as
// workers. A key's name is its file's name without ".pub"
// (clients/alice.pub is "alice"); names are for logs, keys decide.
//
// ZeroMQ's ZAP handler (zap_handler.h) admits connections by it; droverd's
// loop checks every message against the current one, so a key removed
// from a folder loses its rights at once, on connections already made
// too (docs/SECURITY.md).
//
// Thread-compatible; droverd shares immutable snapshots (shared_ptr<const>)
// between its loop and the ZAP thread.
#ifndef DROVER_ALLOWLIST_H_
#define DROVER_ALLOWLIST_H_

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace drover {

// The ZAP domains of droverd's three sockets.
inline constexpr std::string_view kApiDomain = "api";
inline constexpr std::string_view kTasksDomain = "tasks";
inline constexpr std::string_view kHeartbeatDomain = "heartbeat";

// What one key may do.
struct Principal {
  std::string name;  // from its first file: workers/, clients/, readers/
  bool client = false;
  bool reader = false;
  bool worker = false;
  // Whether it may use a socket of `domain`: the API for clients and
  // readers, the worker and heartbeat channels for workers.
  bool Allows(std::string_view domain) const;
  // "client alice", "reader bob", "worker edge-1".
  std::string Describe() const;
};

class Allowlist {
 public:
  // Reads the three folders of `dir` (a missing folder is empty). A file
  // that is not a key, or a key listed twice in one folder, is skipped and
  // described in `problems`.
  static Allowlist Load(const std::string& dir,
                        std::vector<std::string>* problems);

  // Adds `key` (Z85) under `folder` ("clients", "readers" or "workers").
  void Add(std::string_view folder, const std::string& name,
           const std::string& key);
  const Principal* Find(const std::string& key) const;
  size_t size() const { return keys_.size(); }
  // How many keys each folder lists, for logs.
  size_t clients() const { return clients_; }
  size_t readers() const { return readers_; }
  size_t workers() const { return workers_; }

 private:
  std::unordered_map<std::string, Principal> keys_;
  size_t clients_ = 0, readers_ = 0, workers_ = 0;
};

}  // namespace drover

#endif  // DROVER_ALLOWLIST_H_
