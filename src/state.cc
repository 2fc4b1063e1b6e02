#include "drover/state.h"

#include <array>
#include <cctype>
#include <string>
#include <type_traits>

namespace drover {
namespace {

constexpr std::array<std::string_view, 5> kJobNames = {
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"};
constexpr std::array<std::string_view, 8> kTaskNames = {
    "CREATED",   "PENDING", "SCHEDULED", "RUNNING",
    "COMPLETED", "FAILED",  "CANCELLED", "SKIPPED"};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) !=
        std::toupper(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

template <typename State, size_t N>
std::optional<State> ParseName(const std::array<std::string_view, N>& names,
                               std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (EqualsIgnoreCase(names[i], name)) return static_cast<State>(i);
  }
  return std::nullopt;
}

// One bit per target state: kJobMoves[from] has bit `to` set when
// `from -> to` is legal. Kept as data, beside the table in state.h, so the
// two can be compared line by line.
constexpr unsigned Bit(JobState s) { return 1u << static_cast<unsigned>(s); }
constexpr unsigned Bit(TaskState s) { return 1u << static_cast<unsigned>(s); }

constexpr std::array<unsigned, 5> kJobMoves = {
    /* PENDING   */ Bit(JobState::kRunning) | Bit(JobState::kCancelled) |
        Bit(JobState::kFailed),
    /* RUNNING   */ Bit(JobState::kCompleted) | Bit(JobState::kFailed) |
        Bit(JobState::kCancelled),
    /* COMPLETED */ 0,
    /* FAILED    */ 0,
    /* CANCELLED */ 0,
};

constexpr std::array<unsigned, 8> kTaskMoves = {
    /* CREATED   */ Bit(TaskState::kPending) | Bit(TaskState::kSkipped) |
        Bit(TaskState::kCancelled) | Bit(TaskState::kFailed),
    /* PENDING   */ Bit(TaskState::kScheduled) | Bit(TaskState::kSkipped) |
        Bit(TaskState::kCancelled) | Bit(TaskState::kFailed),
    /* SCHEDULED */ Bit(TaskState::kRunning) | Bit(TaskState::kPending) |
        Bit(TaskState::kCompleted) | Bit(TaskState::kFailed) |
        Bit(TaskState::kCancelled),
    /* RUNNING   */ Bit(TaskState::kPending) | Bit(TaskState::kCompleted) |
        Bit(TaskState::kFailed) | Bit(TaskState::kCancelled),
    /* COMPLETED */ 0,
    /* FAILED    */ 0,
    /* CANCELLED */ 0,
    /* SKIPPED   */ 0,
};

template <typename State>
Status CannotGo(State from, State to) {
  std::string m = "cannot go from ";
  if constexpr (std::is_same_v<State, JobState>) {
    m += JobStateName(from);
    m += " to ";
    m += JobStateName(to);
  } else {
    m += TaskStateName(from);
    m += " to ";
    m += TaskStateName(to);
  }
  return Status::FailedPrecondition(std::move(m));
}

}  // namespace

std::string_view JobStateName(JobState s) {
  auto i = static_cast<size_t>(s);
  return i < kJobNames.size() ? kJobNames[i] : "UNKNOWN";
}

std::string_view TaskStateName(TaskState s) {
  auto i = static_cast<size_t>(s);
  return i < kTaskNames.size() ? kTaskNames[i] : "UNKNOWN";
}

std::optional<JobState> ParseJobState(std::string_view name) {
  return ParseName<JobState>(kJobNames, name);
}

std::optional<TaskState> ParseTaskState(std::string_view name) {
  return ParseName<TaskState>(kTaskNames, name);
}

bool IsTerminal(JobState s) {
  return s == JobState::kCompleted || s == JobState::kFailed ||
         s == JobState::kCancelled;
}

bool IsTerminal(TaskState s) {
  return s == TaskState::kCompleted || s == TaskState::kFailed ||
         s == TaskState::kCancelled || s == TaskState::kSkipped;
}

Status CheckJobTransition(JobState from, JobState to) {
  auto f = static_cast<size_t>(from);
  if (f >= kJobMoves.size() || static_cast<size_t>(to) >= kJobNames.size()) {
    return CannotGo(from, to);
  }
  if (from == to || (kJobMoves[f] & Bit(to)) != 0) return Status::Ok();
  return CannotGo(from, to);
}

Status CheckTaskTransition(TaskState from, TaskState to) {
  auto f = static_cast<size_t>(from);
  if (f >= kTaskMoves.size() || static_cast<size_t>(to) >= kTaskNames.size()) {
    return CannotGo(from, to);
  }
  if (from == to || (kTaskMoves[f] & Bit(to)) != 0) return Status::Ok();
  return CannotGo(from, to);
}

}  // namespace drover
