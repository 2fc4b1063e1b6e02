#include "bench_worker.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>

#include "drover/clock.h"

namespace drover::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The part of an `assign` the bench worker needs; the rest of the map (the
// wire task) is skipped by the decoder, as the protocol allows.
struct AssignHead {
  uint32_t v = kProtocolVersion;
  std::string type;
  AttemptRef ref;
  DROVER_DEFINE_MAP(v, type, ref);
};

std::string RandomInstance() {
  std::mt19937_64 rng(std::random_device{}());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace

BenchWorker::BenchWorker(zmq::context_t& ctx, BenchWorkerOptions options,
                         AssignFn on_assign, AckCounter* acks)
    : ctx_(ctx),
      options_(std::move(options)),
      on_assign_(std::move(on_assign)),
      acks_(acks),
      instance_(RandomInstance()) {}

BenchWorker::~BenchWorker() { Stop(); }

void BenchWorker::Start() {
  thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
}

void BenchWorker::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

SteadyClock::time_point BenchWorker::last_ack() const {
  return SteadyClock::time_point(SteadyClock::duration(last_ack_ns_.load()));
}

void BenchWorker::Loop(std::stop_token stop) {
  SystemClock wall;
  zmq::socket_t dealer(ctx_, zmq::socket_type::dealer);
  zmq::socket_t hb(ctx_, zmq::socket_type::xsub);
  dealer.set(zmq::sockopt::routing_id, options_.name);
  dealer.set(zmq::sockopt::linger, 0);
  // Never drop on this side: frames wait here until droverd takes them.
  dealer.set(zmq::sockopt::sndhwm, 0);
  dealer.set(zmq::sockopt::rcvhwm, 0);
  hb.set(zmq::sockopt::linger, 0);
  if (options_.keys) {
    UseClientKeys(dealer, *options_.keys);
    UseClientKeys(hb, *options_.keys);
  }
  dealer.connect(options_.tasks);
  hb.connect(options_.heartbeat);
  const char subscribe_all = 1;
  hb.send(zmq::buffer(&subscribe_all, 1), zmq::send_flags::none);

  std::map<AttemptRef, std::string> unacked;  // result frames
  std::string scheduler;
  auto send = [&](const std::string& body) {
    try {
      dealer.send(zmq::buffer(body), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
      // Gone or full: a result is kept in `unacked` and sent again.
    }
  };
  auto hello = [&] {
    Hello h;
    h.name = options_.name;
    h.instance = instance_;
    h.queues[options_.queue] = options_.slots;
    h.runtimes = {"shell", "docker"};
    welcomed_ = false;
    send(Encode(h));
  };
  hello();
  TimeMs last_hello = wall.Now();
  TimeMs next_heartbeat = 0;
  TimeMs next_resend = wall.Now() + 5000;

  while (!stop.stop_requested()) {
    TimeMs now = wall.Now();
    if (now >= next_heartbeat) {
      WorkerHeartbeat beat;
      beat.name = options_.name;
      beat.instance = instance_;
      beat.state = "ready";
      beat.at_ms = now;
      for (const auto& [ref, frame] : unacked) beat.attempts.push_back(ref);
      try {
        hb.send(zmq::buffer(Encode(beat)), zmq::send_flags::dontwait);
      } catch (const zmq::error_t&) {
      }
      next_heartbeat = now + options_.heartbeat_interval.count();
    }
    if (!welcomed_ && now - last_hello >= 1000) {
      hello();
      last_hello = now;
    }
    if (now >= next_resend) {
      for (const auto& [ref, frame] : unacked) send(frame);
      next_resend = now + 5000;
    }
    zmq_pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0},
                              {hb.handle(), 0, ZMQ_POLLIN, 0}};
    const long timeout =
        std::clamp<long>(static_cast<long>(next_heartbeat - now), 0, 50);
    if (zmq_poll(items, 2, timeout) < 0) continue;

    zmq::message_t msg;
    while (dealer.recv(msg, zmq::recv_flags::dontwait)) {
      const auto received = SteadyClock::now();
      auto frame = Frame::Parse(msg.to_string());
      if (!frame.ok()) continue;
      const std::string& type = frame->type();
      if (type == Assign::kType) {
        auto a = frame->As<AssignHead>();
        if (!a.ok() || unacked.count(a->ref)) continue;
        ++assigned_;
        if (on_assign_) on_assign_(a->ref, received);
        const TimeMs at = wall.Now();
        // Done at once, so well within drover-worker's kStartedHold: like
        // a real worker, it reports the attempt by its result alone.
        TaskResult result;
        result.ref = a->ref;
        result.exit_code = 0;
        result.started_at_ms = at;
        result.finished_at_ms = at;
        std::string body = Encode(result);
        send(body);
        unacked.emplace(a->ref, std::move(body));
      } else if (type == ResultAck::kType) {
        auto ack = frame->As<ResultAck>();
        if (ack.ok() && unacked.erase(ack->ref) > 0) {
          ++acked_;
          last_ack_ns_ = received.time_since_epoch().count();
          if (acks_ != nullptr) acks_->Add();
        }
      } else if (type == Welcome::kType) {
        auto w = frame->As<Welcome>();
        if (w.ok()) scheduler = w->scheduler;
        welcomed_ = true;
        for (const auto& [ref, body] : unacked) send(body);
      } else if (type == Announce::kType) {
        hello();
        last_hello = wall.Now();
      }
    }
    // Read only when it polled readable: reading an empty socket costs
    // system calls, and each one costs the scheduler under test CPU.
    while ((items[1].revents & ZMQ_POLLIN) &&
           hb.recv(msg, zmq::recv_flags::dontwait)) {
      auto frame = Frame::Parse(msg.to_string());
      if (!frame.ok() || frame->type() != SchedulerHeartbeat::kType) continue;
      auto m = frame->As<SchedulerHeartbeat>();
      if (m.ok() && !scheduler.empty() && m->instance != scheduler) {
        scheduler = m->instance;
        hello();
        last_hello = wall.Now();
      }
    }
  }
  // Give the goodbye a moment to leave before the socket closes.
  dealer.set(zmq::sockopt::linger, 200);
  send(Encode(Goodbye{}));
}

}  // namespace drover::bench
