#include "zap_handler.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <future>

#include "drover/keys.h"

namespace drover {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr size_t kMaxZapFrames = 16;

std::string_view DomainRole(std::string_view domain) {
  return domain == kApiDomain ? "clients/ or readers/" : "workers/";
}

}  // namespace

ZapAnswer DecideZap(const std::vector<std::string>& request,
                    const Allowlist& list) {
  // version, request id, domain, address, routing id, mechanism,
  // credentials...
  ZapAnswer a;
  if (request.size() < 6 || request[0] != "1.0") {
    a.status = "500";
    a.text = "malformed ZAP request";
    return a;
  }
  a.domain = request[2];
  a.address = request[3];
  if (a.domain != kApiDomain && a.domain != kTasksDomain &&
      a.domain != kHeartbeatDomain) {
    a.text = "unknown domain";
    return a;
  }
  if (request[5] != "CURVE" || request.size() != 7 ||
      request[6].size() != kKeyBytes) {
    a.text = "CURVE keys required";
    return a;
  }
  a.key = EncodeKey(request[6]);
  const Principal* p = list.Find(a.key);
  if (p == nullptr) {
    a.text = "unknown key";
    return a;
  }
  if (!p->Allows(a.domain)) {
    a.text = "key not allowed here";
    return a;
  }
  a.status = "200";
  a.text = "OK";
  a.user_id = a.key;
  return a;
}

ZapHandler::ZapHandler(zmq::context_t& ctx) : ctx_(ctx) {}

ZapHandler::~ZapHandler() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

Status ZapHandler::Start(std::shared_ptr<const Allowlist> list) {
  Update(std::move(list));
  std::promise<Status> bound;
  std::future<Status> result = bound.get_future();
  thread_ = std::jthread([this, &bound](std::stop_token stop) {
    // The socket is made, bound and closed on this thread: it is its own.
    zmq::socket_t socket(ctx_, zmq::socket_type::rep);
    try {
      socket.set(zmq::sockopt::linger, 0);
      socket.bind(kZapEndpoint);
    } catch (const zmq::error_t& e) {
      bound.set_value(Status::Internal(
          std::string("cannot start the authentication handler: ") +
          e.what()));
      return;
    }
    bound.set_value(Status::Ok());
    Serve(socket, stop);
  });
  Status st = result.get();
  if (!st.ok()) thread_.join();
  return st;
}

void ZapHandler::Update(std::shared_ptr<const Allowlist> list) {
  std::lock_guard lock(mu_);
  list_ = std::move(list);
}

void ZapHandler::LogRefusal(const ZapAnswer& a) {
  const std::string who = a.key.empty() ? a.address : a.key;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  auto it = logged_.find(who);
  if (it != logged_.end() && now - it->second < 60'000) return;
  if (logged_.size() >= 4096) logged_.clear();  // bounded, whatever comes
  logged_[who] = now;
  if (a.key.empty()) {
    spdlog::warn("refused a connection to the {} channel from {}: {}",
                 a.domain.empty() ? "?" : a.domain, a.address, a.text);
  } else {
    spdlog::warn(
        "refused key {} on the {} channel from {}: {} (allowed keys are in "
        "{} of the --auth directory)",
        a.key, a.domain, a.address, a.text, DomainRole(a.domain));
  }
}

void ZapHandler::Serve(zmq::socket_t& socket, std::stop_token stop) {
  while (!stop.stop_requested()) {
    try {
      zmq_pollitem_t item = {socket.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 100) <= 0 || !(item.revents & ZMQ_POLLIN)) {
        continue;
      }
      std::vector<std::string> request;
      zmq::message_t frame;
      bool more = true;
      while (more && socket.recv(frame, zmq::recv_flags::none)) {
        more = frame.more();
        if (request.size() < kMaxZapFrames) request.push_back(frame.to_string());
      }
      std::shared_ptr<const Allowlist> list;
      {
        std::lock_guard lock(mu_);
        list = list_;
      }
      ZapAnswer a = DecideZap(request, *list);
      if (a.status != "200") LogRefusal(a);
      const std::string id = request.size() > 1 ? request[1] : "";
      const std::string frames[] = {"1.0", id, a.status, a.text, a.user_id, ""};
      for (size_t i = 0; i < 6; ++i) {
        socket.send(zmq::buffer(frames[i]),
                    i < 5 ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    } catch (const std::exception& e) {
      // Never let the thread end: with no handler every handshake would
      // fail (ZMQ_ZAP_ENFORCE_DOMAIN), and droverd would serve nobody.
      spdlog::error("authentication handler: {}", e.what());
    }
  }
}

}  // namespace drover
