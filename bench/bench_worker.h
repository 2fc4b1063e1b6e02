// BenchWorker: a simulated worker for the benchmark. It speaks the worker
// protocol (docs/PROTOCOL.md) on a thread of its own — a DEALER whose
// routing id is its name, an XSUB on the heartbeat channel — and completes
// every task the moment it arrives: `assign` is answered at once with a
// `result` (exit code 0) alone, as drover-worker reports an attempt that
// ends within its `started` hold (workers/worker.h). It says hello until welcomed
// (and again on `announce` or a new scheduler instance), publishes
// heartbeats listing the attempts whose results are not yet acknowledged,
// sends unacknowledged results again every 5 s, and counts `ack`s.
//
// So what the benchmark measures through it is the scheduler alone:
// dispatch, the transitions stored (group commit) and the messages.
//
// Thread-safety: the public methods may be called from any thread; the
// sockets belong to the worker's own thread.
#ifndef DROVER_BENCH_BENCH_WORKER_H_
#define DROVER_BENCH_BENCH_WORKER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "drover/keys.h"
#include "drover/protocol.h"

namespace drover::bench {

struct BenchWorkerOptions {
  std::string name;
  std::string tasks;      // droverd's worker channel
  std::string heartbeat;  // droverd's heartbeat channel
  std::string queue = "default";
  uint32_t slots = 64;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::optional<ClientKeys> keys;  // CURVE, for a droverd with --auth
};

// Acknowledged results across a pool of bench workers, with a wait that
// sleeps until a count is reached: the bench's own threads should not take
// CPU from the scheduler they measure by polling (a thread waking every
// 200 us to look at a counter makes thousands of system calls a second,
// each an exit to the hypervisor on the VMs drover is measured on).
// Any thread may Add; one thread at a time may wait.
class AckCounter {
 public:
  void Add() {
    const uint64_t n = count_.fetch_add(1) + 1;
    if (n >= want_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
  }
  uint64_t count() const { return count_.load(); }
  // Waits until count() >= n; false if `deadline` came first.
  bool WaitFor(uint64_t n, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    want_.store(n);
    const bool reached =
        cv_.wait_until(lock, deadline, [&] { return count_.load() >= n; });
    want_.store(UINT64_MAX);
    return reached;
  }

 private:
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> want_{UINT64_MAX};  // a waiter's target
  std::mutex mu_;
  std::condition_variable cv_;
};

class BenchWorker {
 public:
  // Called on the worker's thread when an `assign` arrives, before it is
  // answered, with the time it was received.
  using AssignFn = std::function<void(const AttemptRef&,
                                      std::chrono::steady_clock::time_point)>;

  // Each acknowledged result is also counted in `acks`, if given.
  BenchWorker(zmq::context_t& ctx, BenchWorkerOptions options,
              AssignFn on_assign = {}, AckCounter* acks = nullptr);
  ~BenchWorker();  // Stop()
  BenchWorker(const BenchWorker&) = delete;
  BenchWorker& operator=(const BenchWorker&) = delete;

  void Start();
  // Says goodbye (returning nothing: it holds nothing unfinished) and ends
  // the thread.
  void Stop();

  bool welcomed() const { return welcomed_.load(); }
  uint64_t assigned() const { return assigned_.load(); }
  uint64_t acked() const { return acked_.load(); }
  // When the latest ack arrived.
  std::chrono::steady_clock::time_point last_ack() const;

 private:
  void Loop(std::stop_token stop);

  zmq::context_t& ctx_;
  BenchWorkerOptions options_;
  AssignFn on_assign_;
  AckCounter* acks_;
  std::string instance_;
  std::atomic<bool> welcomed_{false};
  std::atomic<uint64_t> assigned_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<int64_t> last_ack_ns_{0};
  std::jthread thread_;
};

}  // namespace drover::bench

#endif  // DROVER_BENCH_BENCH_WORKER_H_
