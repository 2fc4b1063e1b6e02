// ServiceNotifier: what droverd and drover-worker tell systemd through
// sd_notify(3) when they run as Type=notify services: READY=1 once they
// serve, STATUS= lines, WATCHDOG=1 pings when the unit sets WatchdogSec=,
// and STOPPING=1 when they begin to shut down. Without $NOTIFY_SOCKET (not
// started by systemd) every call does nothing.
//
// Called by the two daemons' main(): Tick() from the event loop (through
// Server/Worker::set_tick_callback) every tick_period(), so a loop that
// hangs stops the pings and systemd restarts the service.
//
// Header-only on purpose: only droverd and drover-worker link libsystemd;
// the client shares their common library and must not need it.
//
// Thread-compatible: use from the thread that runs the daemon's loop.
#ifndef DROVER_SERVICE_NOTIFIER_H_
#define DROVER_SERVICE_NOTIFIER_H_

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

namespace drover {

class ServiceNotifier {
 public:
  // A status line that has not changed is sent again after this long, so
  // `systemctl status` never shows a line older than this.
  static constexpr std::chrono::seconds kStatusRefresh{5};

  ServiceNotifier() {
    uint64_t usec = 0;
    // WATCHDOG_USEC (and WATCHDOG_PID, when set, naming this process).
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
      watchdog_ = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::microseconds(usec));
    }
  }

  // How often Tick() must run: half the watchdog interval, as
  // sd_watchdog_enabled(3) advises, and at least once a second so that
  // status changes show promptly.
  std::chrono::milliseconds tick_period() const {
    if (watchdog_.count() == 0) return std::chrono::seconds(1);
    return std::clamp(watchdog_ / 2, std::chrono::milliseconds(10),
                      std::chrono::milliseconds(1000));
  }
  bool watchdog_enabled() const { return watchdog_.count() > 0; }

  void Ready(const std::string& status) {
    Send("READY=1\nSTATUS=" + status);
    last_status_ = status;
    last_status_at_ = Clock::now();
  }

  // Pings the watchdog, and reports `status` if it changed or has not been
  // reported for kStatusRefresh.
  void Tick(const std::string& status) {
    std::string message;
    if (watchdog_enabled()) message = "WATCHDOG=1";
    const auto now = Clock::now();
    if (status != last_status_ || now - last_status_at_ >= kStatusRefresh) {
      if (!message.empty()) message += "\n";
      message += "STATUS=" + status;
      last_status_ = status;
      last_status_at_ = now;
    }
    if (!message.empty()) Send(message);
  }

  // Once, when a stop was requested; later calls do nothing.
  void Stopping(const std::string& status) {
    if (stopping_) return;
    stopping_ = true;
    Send("STOPPING=1\nSTATUS=" + status);
  }

 private:
  using Clock = std::chrono::steady_clock;

  // Errors are ignored: a service manager that cannot be told is not a
  // reason to stop serving.
  static void Send(const std::string& message) {
    (void)sd_notify(0, message.c_str());
  }

  std::chrono::milliseconds watchdog_{0};
  std::string last_status_;
  Clock::time_point last_status_at_{};
  bool stopping_ = false;
};

}  // namespace drover

#endif  // DROVER_SERVICE_NOTIFIER_H_
