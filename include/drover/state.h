// Job and task states, and the one place that says which transitions are
// legal. The store refuses any other transition (see store.h).
//
// Pure functions; thread-safe.
#ifndef DROVER_STATE_H_
#define DROVER_STATE_H_

#include <optional>
#include <string_view>

#include "drover/status.h"

namespace drover {

enum class JobState { kPending, kRunning, kCompleted, kFailed, kCancelled };

enum class TaskState {
  kCreated,    // stored, waiting for its dependencies
  kPending,    // dependencies met (or requeued), waiting for a worker slot
  kScheduled,  // sent to a worker, not yet reported started
  kRunning,    // the worker reported it started
  kCompleted,
  kFailed,     // failed after its last attempt
  kCancelled,
  kSkipped,    // its `if` was false
};

// "PENDING", "RUNNING", … as in the spec; Parse* accept these names in any
// letter case and return nullopt for anything else.
std::string_view JobStateName(JobState s);
std::string_view TaskStateName(TaskState s);
std::optional<JobState> ParseJobState(std::string_view name);
std::optional<TaskState> ParseTaskState(std::string_view name);

bool IsTerminal(JobState s);
bool IsTerminal(TaskState s);

// OK when `from -> to` is legal, else FailedPrecondition naming both states.
// Setting a state to itself is legal (an update of other fields).
//
// Jobs:  PENDING -> RUNNING | CANCELLED | FAILED
//        RUNNING -> COMPLETED | FAILED | CANCELLED
// Tasks: CREATED   -> PENDING | SKIPPED | CANCELLED | FAILED
//        PENDING   -> SCHEDULED | SKIPPED | CANCELLED | FAILED
//        SCHEDULED -> RUNNING | PENDING (requeue) | COMPLETED | FAILED
//                     | CANCELLED
//        RUNNING   -> PENDING (retry or requeue) | COMPLETED | FAILED
//                     | CANCELLED
// Terminal states (COMPLETED, FAILED, CANCELLED, SKIPPED) have no way out.
Status CheckJobTransition(JobState from, JobState to);
Status CheckTaskTransition(TaskState from, TaskState to);

}  // namespace drover

#endif  // DROVER_STATE_H_
