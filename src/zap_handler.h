// ZapHandler: droverd's ZeroMQ authentication handler (ZAP, ZeroMQ RFC 27).
// With --auth, every socket of droverd is a CURVE server; before a peer's
// handshake completes, libzmq asks the handler bound at
// inproc://zeromq.zap.01 in the same context whether the peer's public key
// may connect to that socket's domain (api, tasks, heartbeat). The handler
// answers from the current Allowlist: 200 with the key as the connection's
// User-Id, which droverd reads on every message, or 400.
//
// libzmq admits any key when no handler answers, so droverd starts the
// handler before it binds a socket, and sets ZMQ_ZAP_ENFORCE_DOMAIN on its
// sockets: should the handler be gone, every handshake fails instead.
//
// Threads: the handler runs on a thread of its own, which owns its socket;
// Update may be called from any thread. A refused key is logged at most
// once a minute.
#ifndef DROVER_ZAP_HANDLER_H_
#define DROVER_ZAP_HANDLER_H_

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "allowlist.h"
#include "drover/status.h"

namespace drover {

// The answer to one ZAP request.
struct ZapAnswer {
  std::string status = "400";  // "200", "400" or "500"
  std::string text;            // why, for the peer's log
  std::string user_id;         // the key (Z85) when admitted
  std::string key;             // the key (Z85) when there was one
  std::string domain;
  std::string address;         // the peer's address, for logs
};

// Decides a ZAP request (its frames, after the REP envelope) against
// `list`. Pure: the fuzz target calls it with any frames.
ZapAnswer DecideZap(const std::vector<std::string>& request,
                    const Allowlist& list);

class ZapHandler {
 public:
  explicit ZapHandler(zmq::context_t& ctx);
  ~ZapHandler();  // stops the thread, which closes its socket
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Binds the handler's socket and starts answering from `list`; returns
  // once it is bound, or with the reason it could not be.
  Status Start(std::shared_ptr<const Allowlist> list);
  // Answers from `list` from now on.
  void Update(std::shared_ptr<const Allowlist> list);

 private:
  void Serve(zmq::socket_t& socket, std::stop_token stop);
  void LogRefusal(const ZapAnswer& a);

  zmq::context_t& ctx_;
  std::mutex mu_;
  std::shared_ptr<const Allowlist> list_;  // guarded by mu_
  // When each refused key was last logged; the handler thread's own.
  std::unordered_map<std::string, int64_t> logged_;
  std::jthread thread_;
};

}  // namespace drover

#endif  // DROVER_ZAP_HANDLER_H_
