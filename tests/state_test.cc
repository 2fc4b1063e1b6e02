#include "drover/state.h"

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace drover {
namespace {

const std::vector<JobState> kAllJobStates = {
    JobState::kPending, JobState::kRunning, JobState::kCompleted,
    JobState::kFailed, JobState::kCancelled};
const std::vector<TaskState> kAllTaskStates = {
    TaskState::kCreated,   TaskState::kPending,   TaskState::kScheduled,
    TaskState::kRunning,   TaskState::kCompleted, TaskState::kFailed,
    TaskState::kCancelled, TaskState::kSkipped};

// The tables of state.h, written out again by hand (not derived from the
// implementation) so that a change to either shows up here.
const std::set<std::pair<std::string, std::string>> kLegalJobMoves = {
    {"PENDING", "RUNNING"}, {"PENDING", "CANCELLED"},
    {"PENDING", "FAILED"},  {"RUNNING", "COMPLETED"},
    {"RUNNING", "FAILED"},  {"RUNNING", "CANCELLED"},
};
const std::set<std::pair<std::string, std::string>> kLegalTaskMoves = {
    {"CREATED", "PENDING"},     {"CREATED", "SKIPPED"},
    {"CREATED", "CANCELLED"},   {"CREATED", "FAILED"},
    {"PENDING", "SCHEDULED"},   {"PENDING", "SKIPPED"},
    {"PENDING", "CANCELLED"},   {"PENDING", "FAILED"},
    {"SCHEDULED", "RUNNING"},   {"SCHEDULED", "PENDING"},
    {"SCHEDULED", "COMPLETED"}, {"SCHEDULED", "FAILED"},
    {"SCHEDULED", "CANCELLED"}, {"RUNNING", "PENDING"},
    {"RUNNING", "COMPLETED"},   {"RUNNING", "FAILED"},
    {"RUNNING", "CANCELLED"},
};

TEST_CASE("State.NamesMatchTheSpecAndParseInAnyCase") {
  const std::vector<std::string> job_names = {"PENDING", "RUNNING", "COMPLETED",
                                              "FAILED", "CANCELLED"};
  for (size_t i = 0; i < kAllJobStates.size(); ++i) {
    CHECK(JobStateName(kAllJobStates[i]) == job_names[i]);
    CHECK(ParseJobState(job_names[i]) == kAllJobStates[i]);
  }
  const std::vector<std::string> task_names = {
      "CREATED",   "PENDING", "SCHEDULED", "RUNNING",
      "COMPLETED", "FAILED",  "CANCELLED", "SKIPPED"};
  for (size_t i = 0; i < kAllTaskStates.size(); ++i) {
    CHECK(TaskStateName(kAllTaskStates[i]) == task_names[i]);
    CHECK(ParseTaskState(task_names[i]) == kAllTaskStates[i]);
  }
  CHECK(ParseJobState("running") == JobState::kRunning);
  CHECK(ParseJobState("Cancelled") == JobState::kCancelled);
  CHECK(ParseTaskState("sKiPpEd") == TaskState::kSkipped);
  CHECK(ParseTaskState("scheduled") == TaskState::kScheduled);
}

TEST_CASE("State.ParseRejectsEverythingElse") {
  for (const char* bad : {"", " RUNNING", "RUNNING ", "RUN", "RUNNINGG",
                          "CREATED", "SKIPPED", "PENDING\n", "0"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseJobState(bad).has_value());
  }
  for (const char* bad :
       {"", "DONE", "PEND", "pendings", "COMPLETE", "CANCELED", "SKIPPED2"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseTaskState(bad).has_value());
  }
}

TEST_CASE("State.TerminalStatesAreTheOnesWithoutAWayOut") {
  CHECK_FALSE(IsTerminal(JobState::kPending));
  CHECK_FALSE(IsTerminal(JobState::kRunning));
  CHECK(IsTerminal(JobState::kCompleted));
  CHECK(IsTerminal(JobState::kFailed));
  CHECK(IsTerminal(JobState::kCancelled));
  const std::set<TaskState> terminal = {
      TaskState::kCompleted, TaskState::kFailed, TaskState::kCancelled,
      TaskState::kSkipped};
  for (TaskState s : kAllTaskStates) {
    CAPTURE(TaskStateName(s));
    CHECK(IsTerminal(s) == terminal.contains(s));
    // A terminal state leads nowhere but to itself.
    for (TaskState to : kAllTaskStates) {
      if (IsTerminal(s) && to != s)
        CHECK_FALSE(CheckTaskTransition(s, to).ok());
    }
  }
  for (JobState s : kAllJobStates) {
    for (JobState to : kAllJobStates) {
      if (IsTerminal(s) && to != s) CHECK_FALSE(CheckJobTransition(s, to).ok());
    }
  }
}

TEST_CASE("State.JobTransitionsFollowTheTableForEveryPair") {
  int legal = 0;
  for (JobState from : kAllJobStates) {
    for (JobState to : kAllJobStates) {
      std::string f(JobStateName(from)), t(JobStateName(to));
      CAPTURE(f);
      CAPTURE(t);
      Status s = CheckJobTransition(from, to);
      bool expected = from == to || kLegalJobMoves.contains({f, t});
      CHECK(s.ok() == expected);
      if (s.ok()) {
        ++legal;
      } else {
        CHECK(s.code() == Code::kFailedPrecondition);
        CHECK(s.message() == "cannot go from " + f + " to " + t);
      }
    }
  }
  CHECK(legal == 6 + 5);  // the table plus every state to itself
}

TEST_CASE("State.TaskTransitionsFollowTheTableForEveryPair") {
  int legal = 0;
  for (TaskState from : kAllTaskStates) {
    for (TaskState to : kAllTaskStates) {
      std::string f(TaskStateName(from)), t(TaskStateName(to));
      CAPTURE(f);
      CAPTURE(t);
      Status s = CheckTaskTransition(from, to);
      bool expected = from == to || kLegalTaskMoves.contains({f, t});
      CHECK(s.ok() == expected);
      if (s.ok()) {
        ++legal;
      } else {
        CHECK(s.code() == Code::kFailedPrecondition);
        CHECK(s.message() == "cannot go from " + f + " to " + t);
      }
    }
  }
  CHECK(legal == 17 + 8);
}

TEST_CASE("State.ValuesOutsideTheEnumAreRefusedNotTrusted") {
  auto bad_job = static_cast<JobState>(42);
  auto bad_task = static_cast<TaskState>(42);
  CHECK(JobStateName(bad_job) == "UNKNOWN");
  CHECK(TaskStateName(bad_task) == "UNKNOWN");
  CHECK_FALSE(CheckJobTransition(JobState::kPending, bad_job).ok());
  CHECK_FALSE(CheckJobTransition(bad_job, bad_job).ok());
  CHECK_FALSE(CheckTaskTransition(TaskState::kCreated, bad_task).ok());
  CHECK_FALSE(CheckTaskTransition(bad_task, TaskState::kPending).ok());
}

}  // namespace
}  // namespace drover
