// ServiceNotifier: what droverd and drover-worker tell systemd when they
// run as Type=notify services: READY=1 once they serve, STATUS= lines,
// WATCHDOG=1 pings when the unit sets WatchdogSec=, and STOPPING=1 when they
// begin to shut down. Without $NOTIFY_SOCKET (not started by systemd) every
// call does nothing.
//
// The notification protocol is one datagram of "KEY=VALUE" lines sent to
// the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
// abstract namespace); sd_notify(3) documents it as a stable interface and
// gives a standalone implementation. It is spoken here directly rather than
// through libsystemd, whose own dependencies (libgcrypt, liblz4, libzstd,
// liblzma, libcap) cost each daemon about 1 MiB of resident memory for the
// sake of one sendto(2).
//
// Called by the two daemons' main(): Tick() from the event loop (through
// Server/Worker::set_tick_callback) every tick_period(), so a loop that
// hangs stops the pings and systemd restarts the service.
//
// Thread-compatible: use from the thread that runs the daemon's loop.
#ifndef DROVER_SERVICE_NOTIFIER_H_
#define DROVER_SERVICE_NOTIFIER_H_

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace drover {

class ServiceNotifier {
 public:
  // A status line that has not changed is sent again after this long, so
  // `systemctl status` never shows a line older than this.
  static constexpr std::chrono::seconds kStatusRefresh{5};

  ServiceNotifier() {
    // WATCHDOG_USEC (and WATCHDOG_PID, when set, naming this process), as
    // sd_watchdog_enabled(3) reads them.
    if (std::optional<uint64_t> usec = WatchdogUsec(); usec && *usec > 0) {
      watchdog_ = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::microseconds(*usec));
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

  static std::optional<uint64_t> ParseUnsigned(const char* text) {
    if (text == nullptr) return std::nullopt;
    const std::string_view v(text);
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
    return n;
  }

  static std::optional<uint64_t> WatchdogUsec() {
    if (const char* pid = std::getenv("WATCHDOG_PID"); pid != nullptr) {
      std::optional<uint64_t> n = ParseUnsigned(pid);
      if (!n || *n != static_cast<uint64_t>(getpid())) return std::nullopt;
    }
    return ParseUnsigned(std::getenv("WATCHDOG_USEC"));
  }

  // Errors are ignored: a service manager that cannot be told is not a
  // reason to stop serving.
  static void Send(const std::string& message) {
    const char* env = std::getenv("NOTIFY_SOCKET");
    if (env == nullptr) return;
    const std::string_view name(env);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    // Only unix sockets: a path, or '@' for the abstract namespace (the
    // vsock form of newer systemd is for virtual machines' managers).
    if (name.size() < 2 || name.size() >= sizeof addr.sun_path ||
        (name[0] != '/' && name[0] != '@')) {
      return;
    }
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') addr.sun_path[0] = '\0';
    // An abstract name is exactly its bytes; a path includes its NUL.
    const socklen_t len = static_cast<socklen_t>(
        offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '/'));
    const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    (void)sendto(fd, message.data(), message.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr), len);
    close(fd);
  }

  std::chrono::milliseconds watchdog_{0};
  std::string last_status_;
  Clock::time_point last_status_at_{};
  bool stopping_ = false;
};

}  // namespace drover

#endif  // DROVER_SERVICE_NOTIFIER_H_
