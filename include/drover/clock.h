// Clock: the seam through which drover reads the time, so that heartbeat,
// retry and timeout logic can be tested with a fake clock and no sleeps.
// Also the one place that formats times for people (RFC 3339).
//
// SystemClock is thread-safe; FakeClock belongs to one test thread.
#ifndef DROVER_CLOCK_H_
#define DROVER_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace drover {

using TimeMs = int64_t;  // milliseconds since the Unix epoch

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, for records people read.
  virtual TimeMs Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimeMs Now() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimeMs start = 1'700'000'000'000) : now_(start) {}
  TimeMs Now() const override { return now_; }
  void Advance(std::chrono::milliseconds d) { now_ += d.count(); }

 private:
  TimeMs now_;
};

// "2026-11-23T16:01:12.345Z".
std::string FormatTime(TimeMs t);

}  // namespace drover

#endif  // DROVER_CLOCK_H_
