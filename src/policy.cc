#include "drover/policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace drover {
namespace {

std::string List(const std::vector<std::string>& v) {
  if (v.empty()) return "none";
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// A size as people write it back: "1g", "512m", else bytes.
std::string Size(int64_t bytes) {
  static constexpr std::pair<int64_t, const char*> kUnits[] = {
      {int64_t{1} << 40, "t"}, {1 << 30, "g"}, {1 << 20, "m"}, {1 << 10, "k"}};
  for (const auto& [unit, suffix] : kUnits) {
    if (bytes >= unit && bytes % unit == 0) {
      return std::to_string(bytes / unit) + suffix;
    }
  }
  return std::to_string(bytes);
}

std::string Cpus(double cpus) {
  char buf[32];
  snprintf(buf, sizeof buf, "%g", cpus);
  return buf;
}

bool Matches(const std::vector<std::string>& patterns, const std::string& s) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const auto& p) {
    return fnmatch(p.c_str(), s.c_str(), 0) == 0;
  });
}

Status Refused(std::string message) {
  return Status::FailedPrecondition(std::move(message));
}

// The checks on one container's requests; `what` names it in messages
// ("", "pre task 'x'").
Status CheckOne(const ContainerPolicy& p, std::string_view what,
                const std::string& image, bool image_known,
                const std::string& network, double cpus, int64_t memory,
                int64_t pids, const std::vector<std::string>& cap_add) {
  const std::string of = what.empty() ? "" : " of " + std::string(what);
  if (image_known && !Matches(p.allowed_images, image)) {
    return Refused("image '" + image + "'" + of +
                   " is not allowed by allowed_images (" +
                   List(p.allowed_images) + ")");
  }
  const std::string net = network.empty() ? "none" : network;
  // host and container: modes share the host's or another container's
  // network: only when listed as such, never by a pattern such as "*".
  bool allowed;
  if (net == "host") {
    allowed = std::find(p.allowed_networks.begin(), p.allowed_networks.end(),
                        "host") != p.allowed_networks.end();
  } else if (net.rfind("container:", 0) == 0) {
    allowed = std::any_of(
        p.allowed_networks.begin(), p.allowed_networks.end(),
        [&](const std::string& pattern) {
          return pattern.rfind("container:", 0) == 0 &&
                 fnmatch(pattern.c_str(), net.c_str(), 0) == 0;
        });
  } else {
    allowed = Matches(p.allowed_networks, net);
  }
  if (!allowed) {
    return Refused("network '" + net + "'" + of +
                   " is not allowed by allowed_networks (" +
                   List(p.allowed_networks) + ")");
  }
  const WireLimits& max = p.max_limits;
  if (max.memory_bytes > 0 && memory > max.memory_bytes) {
    return Refused("limits.memory " + Size(memory) + of +
                   " is over max_limits.memory " + Size(max.memory_bytes));
  }
  if (max.cpus > 0 && cpus > max.cpus) {
    return Refused("limits.cpus " + Cpus(cpus) + of +
                   " is over max_limits.cpus " + Cpus(max.cpus));
  }
  if (max.pids > 0 && pids > max.pids) {
    return Refused("limits.pids " + std::to_string(pids) + of +
                   " is over max_limits.pids " + std::to_string(max.pids));
  }
  for (const std::string& cap : cap_add) {
    if (std::find(p.cap_add_allowed.begin(), p.cap_add_allowed.end(), cap) ==
        p.cap_add_allowed.end()) {
      return Refused("cap_add " + cap + of + " is not in cap_add_allowed (" +
                     List(p.cap_add_allowed) + ")");
    }
  }
  return Status::Ok();
}

bool IsTemplate(const std::string& s) {
  return s.find("{{") != std::string::npos;
}

}  // namespace

const std::vector<std::string>& BaseCapabilities() {
  // moby's oci/caps defaults, without NET_RAW (raw sockets: spoofing and
  // sniffing on the container's network).
  static const std::vector<std::string> kCaps = {
      "CHOWN",  "DAC_OVERRIDE", "FSETID",     "FOWNER",
      "MKNOD",  "SETGID",       "SETUID",     "SETFCAP",
      "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
      "AUDIT_WRITE"};
  return kCaps;
}

bool IsRootUser(std::string_view user) {
  const std::string_view who = user.substr(0, user.find(':'));
  if (who.empty() || who == "root") return true;
  return who.find_first_not_of('0') == std::string_view::npos;
}

namespace {

// A task and its pre and post tasks, each checked by `one(t, image, what)`
// with the image it runs (its own, or the task's).
template <typename T, typename One>
Status CheckWithHooks(const T& task, const std::string& (*name)(const T&),
                      One one) {
  if (Status s = one(task, task.image, ""); !s.ok()) return s;
  for (const auto* hooks : {&task.pre, &task.post}) {
    for (const T& h : *hooks) {
      const std::string what = std::string(hooks == &task.pre ? "pre" : "post") +
                               " task '" + name(h) + "'";
      if (Status s = one(h, h.image.empty() ? task.image : h.image, what);
          !s.ok()) {
        return s;
      }
    }
  }
  return Status::Ok();
}

const std::string& SpecName(const TaskSpec& t) { return t.name; }
const std::string& RunName(const TaskRun& t) { return t.task_name; }

}  // namespace

Status CheckTask(const ContainerPolicy& policy, const TaskSpec& task) {
  return CheckWithHooks(
      task, &SpecName,
      [&](const TaskSpec& t, const std::string& image, std::string_view what) {
        return CheckOne(policy, what, image, !IsTemplate(image), t.network,
                        t.limits.cpus, t.limits.memory_bytes, t.limits.pids,
                        t.cap_add);
      });
}

Status CheckTask(const ContainerPolicy& policy, const TaskRun& task) {
  return CheckWithHooks(
      task, &RunName,
      [&](const TaskRun& t, const std::string& image, std::string_view what) {
        return CheckOne(policy, what, image, true, t.network, t.cpus,
                        t.memory_bytes, t.pids, t.cap_add);
      });
}

WireLimits EffectiveLimits(const ContainerPolicy& policy,
                           const TaskRun& task) {
  auto pick = [](auto own, auto def, auto max) {
    return own > 0 ? own : def > 0 ? def : max;
  };
  const WireLimits& d = policy.default_limits;
  const WireLimits& m = policy.max_limits;
  return WireLimits{pick(task.cpus, d.cpus, m.cpus),
                    pick(task.memory_bytes, d.memory_bytes, m.memory_bytes),
                    pick(task.pids, d.pids, m.pids)};
}

Result<WireLimits> ParseLimits(std::string_view text) {
  WireLimits out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view part = text.substr(start, end - start);
    start = end + 1;
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    if (part.empty()) continue;
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument("'" + std::string(part) +
                                     "' is not NAME=VALUE (memory, cpus or "
                                     "pids)");
    }
    const std::string_view name = part.substr(0, eq);
    const std::string value(part.substr(eq + 1));
    auto bad = [&](std::string_view what) {
      return Status::InvalidArgument(std::string(name) + "=" + value +
                                     ": " + std::string(what));
    };
    if (name == "memory") {
      auto bytes = value == "0" ? std::optional<int64_t>(0) : ParseSize(value);
      if (!bytes || *bytes < 0) return bad("not a size such as 512m or 1g");
      out.memory_bytes = *bytes;
    } else if (name == "cpus") {
      double cpus = 0;
      auto [p, ec] =
          std::from_chars(value.data(), value.data() + value.size(), cpus);
      if (ec != std::errc() || p != value.data() + value.size() || cpus < 0) {
        return bad("not a number of CPUs such as 1.5");
      }
      out.cpus = cpus;
    } else if (name == "pids") {
      int64_t pids = 0;
      auto [p, ec] =
          std::from_chars(value.data(), value.data() + value.size(), pids);
      if (ec != std::errc() || p != value.data() + value.size() || pids < 0) {
        return bad("not a number of processes");
      }
      out.pids = pids;
    } else {
      return Status::InvalidArgument("unknown limit '" + std::string(name) +
                                     "': memory, cpus or pids");
    }
  }
  return out;
}

std::string FormatLimits(const WireLimits& limits) {
  return "memory=" + Size(limits.memory_bytes) + ",cpus=" + Cpus(limits.cpus) +
         ",pids=" + std::to_string(limits.pids);
}

Status ValidatePolicy(const ContainerPolicy& p) {
  for (const std::string& cap : p.cap_add_allowed) {
    if (CapabilityName(cap) != cap) {
      return Status::InvalidArgument(
          "cap_add_allowed: '" + cap +
          "' is not a capability name such as NET_ADMIN");
    }
  }
  const WireLimits& d = p.default_limits;
  const WireLimits& m = p.max_limits;
  if (m.memory_bytes > 0 && d.memory_bytes > m.memory_bytes) {
    return Status::InvalidArgument("default_limits.memory " +
                                   Size(d.memory_bytes) +
                                   " is over max_limits.memory " +
                                   Size(m.memory_bytes));
  }
  if (m.cpus > 0 && d.cpus > m.cpus) {
    return Status::InvalidArgument("default_limits.cpus " + Cpus(d.cpus) +
                                   " is over max_limits.cpus " + Cpus(m.cpus));
  }
  if (m.pids > 0 && d.pids > m.pids) {
    return Status::InvalidArgument(
        "default_limits.pids " + std::to_string(d.pids) +
        " is over max_limits.pids " + std::to_string(m.pids));
  }
  if (p.max_log_bytes <= 0) {
    return Status::InvalidArgument("max_log_bytes must be positive");
  }
  return Status::Ok();
}

}  // namespace drover
