// Container policy: what a worker lets the Docker tasks it runs ask for
// (ContainerPolicy, declared with the wire messages: a worker sends its
// own in its hello). The worker enforces it on every attempt; droverd uses
// the same checks to dispatch a task only to workers that allow it, and to
// refuse a job that no connected worker would run. docs/SECURITY.md.
//
// Thread-safe: pure functions.
#ifndef DROVER_POLICY_H_
#define DROVER_POLICY_H_

#include <string>
#include <string_view>
#include <vector>

#include "drover/job_spec.h"
#include "drover/protocol.h"
#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

// Docker's default capabilities less NET_RAW: what every container gets
// (after dropping all), before the capabilities a task adds.
const std::vector<std::string>& BaseCapabilities();

// Whether `user` (a task's `user`: "", "root", "0", "0:0", "root:wheel")
// runs as root in the container; "" runs as the image's user, root unless
// the image says otherwise.
bool IsRootUser(std::string_view user);
inline constexpr std::string_view kNobody = "65534:65534";

// Why `policy` forbids a Docker task, naming the policy key
// (FailedPrecondition), or OK. For a task spec, pre and post tasks are
// checked too (with the task's image when they name none), and an image
// that is a {{ template }} is left to the check at assignment.
Status CheckTask(const ContainerPolicy& policy, const TaskSpec& task);
Status CheckTask(const ContainerPolicy& policy, const TaskRun& task);

// The limits a container runs with: the task's own, else the policy's
// default, else its maximum.
WireLimits EffectiveLimits(const ContainerPolicy& policy,
                           const TaskRun& task);

// Limits as flags and config files write them: "memory=1g,cpus=1.5,
// pids=100" (any of the three; memory a size, cpus a number, pids an
// integer; 0 for none). InvalidArgument naming the part that is wrong.
Result<WireLimits> ParseLimits(std::string_view text);
// The other way round, e.g. "memory=1g,cpus=0,pids=1024".
std::string FormatLimits(const WireLimits& limits);

// Checks a worker's policy on its own: patterns and capability names, and
// that its default limits are within its maximum.
Status ValidatePolicy(const ContainerPolicy& policy);

}  // namespace drover

#endif  // DROVER_POLICY_H_
