// A helper process for tests/store_test.cc: things a test cannot do to the
// Store in its own process.
//
//   drover_store_crash_child crash DIR
//       Commits batches (with sync) until killed, continuing from what DIR
//       already holds, and prints the number of each batch once its Commit
//       has returned OK. The test SIGKILLs it and checks that the store
//       holds exactly the batches up to one of them (see CrashBatch).
//   drover_store_crash_child check DIR
//       Checks, record by record, that DIR holds exactly what batches 1..N
//       of `crash` write, N being the last batch recorded; prints one line
//       per problem, then "checked N".
//   drover_store_crash_child hold DIR
//       Opens the store, prints "open", and keeps it open until stdin
//       closes, so the test can try a second Open from another process.
//   drover_store_crash_child sticky DIR
//       Makes a write fail for real (RLIMIT_FSIZE makes the kernel refuse
//       to grow any file) and prints what Commit and health() report
//       before, during and after, one "name value" line each.
//
// Exit status: 0 done, 1 a store call failed (or a check), 2 usage.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "drover/store.h"

namespace drover {
namespace {

constexpr uint32_t kTasksPerJob = 6;

[[noreturn]] void Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "store_crash_child: %s: %s\n", what.c_str(),
               s.ToString().c_str());
  std::exit(1);
}

// Writes a whole line with one write(2), unbuffered, so what the test reads
// is exactly what was reported before the kill.
void Report(const std::string& line) {
  std::string l = line + "\n";
  const char* p = l.data();
  size_t left = l.size();
  while (left > 0) {
    ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n <= 0) std::exit(1);
    p += n;
    left -= static_cast<size_t>(n);
  }
}

std::string Tag(uint64_t batch) { return "b" + std::to_string(batch); }

// Batch i: creates job i (PENDING, its tasks CREATED), starts job i-1 (its
// tasks to PENDING), finishes job i-2 (its tasks through SCHEDULED and
// RUNNING to COMPLETED, chained in the batch), appends a log chunk to job
// i, and records i in markers. Check() below checks the same rules.
void CrashBatch(Store& store, uint64_t i) {
  Batch batch(&store);
  std::string tag = Tag(i);
  auto put_task = [&](const TaskRecord& t) {
    if (Status s = batch.PutTask(t); !s.ok()) Fail("PutTask", s);
  };
  auto put_job = [&](const JobRecord& j) {
    if (Status s = batch.PutJob(j); !s.ok()) Fail("PutJob", s);
  };
  auto job_of = [&](uint64_t n) {
    Result<std::optional<std::string>> id =
        store.GetMarker("crash/job/" + std::to_string(n));
    if (!id.ok()) Fail("GetMarker", id.status());
    if (!id->has_value()) Fail("GetMarker", Status::NotFound("job marker"));
    Result<JobRecord> job = store.GetJob(**id);
    if (!job.ok()) Fail("GetJob", job.status());
    return std::move(*job);
  };

  JobRecord job;
  job.id = store.NewJobId();
  job.name = "crash-" + std::to_string(i);
  job.created_at = static_cast<TimeMs>(i);
  job.inputs["batch"] = std::to_string(i);
  job.source = std::string(256, 'x');
  job.task_count = kTasksPerJob;
  put_job(job);
  for (uint32_t k = 0; k < kTasksPerJob; ++k) {
    TaskRecord t;
    t.job_id = job.id;
    t.index = k;
    t.name = "t" + std::to_string(k);
    t.output = tag;
    put_task(t);
  }

  if (i >= 2) {
    JobRecord prev = job_of(i - 1);
    prev.state = JobState::kRunning;
    prev.started_at = static_cast<TimeMs>(i);
    put_job(prev);
    Result<std::vector<TaskRecord>> tasks = store.GetTasks(prev.id);
    if (!tasks.ok()) Fail("GetTasks", tasks.status());
    for (TaskRecord t : *tasks) {
      t.state = TaskState::kPending;
      t.output = tag;
      put_task(t);
    }
  }
  if (i >= 3) {
    JobRecord old = job_of(i - 2);
    old.state = JobState::kCompleted;
    old.finished_at = static_cast<TimeMs>(i);
    put_job(old);
    Result<std::vector<TaskRecord>> tasks = store.GetTasks(old.id);
    if (!tasks.ok()) Fail("GetTasks", tasks.status());
    for (TaskRecord t : *tasks) {
      t.output = tag;
      for (TaskState s : {TaskState::kScheduled, TaskState::kRunning,
                          TaskState::kCompleted}) {
        t.state = s;
        put_task(t);
      }
    }
  }

  LogChunk chunk;
  chunk.attempt = 1;
  chunk.data = tag;
  batch.AppendLog(job.id, chunk);
  batch.PutMarker("crash/job/" + std::to_string(i), job.id);
  batch.PutMarker("crash/last", std::to_string(i));
  if (Status s = store.Commit(batch); !s.ok()) Fail("Commit", s);
}

int Crash(const std::string& dir) {
  Result<std::unique_ptr<Store>> store = Store::Open(dir);
  if (!store.ok()) Fail("Open", store.status());
  Result<std::optional<std::string>> last = (*store)->GetMarker("crash/last");
  if (!last.ok()) Fail("GetMarker", last.status());
  uint64_t i = last->has_value() ? std::stoull(**last) : 0;
  // Bounded, so a test that forgets to kill it does not fill the disk.
  for (uint64_t end = i + 100000; i < end;) {
    CrashBatch(**store, ++i);
    Report(std::to_string(i));
  }
  return 0;
}

// Checks what CrashBatch left after batches 1..last, record by record,
// and prints one line per problem, then "checked <last>".
int Check(const std::string& dir) {
  Result<std::unique_ptr<Store>> opened = Store::Open(dir);
  if (!opened.ok()) Fail("Open", opened.status());
  Store& store = **opened;
  int problems = 0;
  auto problem = [&](const std::string& p) {
    Report(p);
    ++problems;
  };
  Result<std::optional<std::string>> marker = store.GetMarker("crash/last");
  if (!marker.ok() || !marker->has_value()) Fail("GetMarker", marker.status());
  uint64_t last = std::stoull(**marker);
  std::vector<std::string> ids(last + 2);
  for (uint64_t k = 1; k <= last + 1; ++k) {
    Result<std::optional<std::string>> id =
        store.GetMarker("crash/job/" + std::to_string(k));
    if (!id.ok()) Fail("GetMarker", id.status());
    if (id->has_value() != (k <= last)) problem("batch " + std::to_string(k));
    if (id->has_value()) ids[k] = **id;
  }
  for (uint64_t k = 1; k <= last; ++k) {
    std::string where = "job " + std::to_string(k) + ": ";
    // Job k was created by batch k, started by k+1, finished by k+2.
    JobState state = JobState::kPending;
    TaskState task_state = TaskState::kCreated;
    uint64_t tag = k;
    if (k + 2 <= last) {
      state = JobState::kCompleted;
      task_state = TaskState::kCompleted;
      tag = k + 2;
    } else if (k + 1 == last) {
      state = JobState::kRunning;
      task_state = TaskState::kPending;
      tag = k + 1;
    }
    Result<JobRecord> job = store.GetJob(ids[k]);
    if (!job.ok()) {
      problem(where + job.status().ToString());
      continue;
    }
    if (job->name != "crash-" + std::to_string(k) || job->state != state ||
        job->started_at != (k + 1 <= last ? static_cast<TimeMs>(k + 1) : 0) ||
        job->finished_at != (k + 2 <= last ? static_cast<TimeMs>(k + 2) : 0)) {
      problem(where + std::string(JobStateName(job->state)));
    }
    Result<std::vector<TaskRecord>> tasks = store.GetTasks(ids[k]);
    if (!tasks.ok() || tasks->size() != kTasksPerJob) {
      problem(where + "tasks missing");
      continue;
    }
    for (const TaskRecord& t : *tasks) {
      if (t.state != task_state || t.output != Tag(tag)) {
        problem(where + "task " + std::to_string(t.index) + " " +
                std::string(TaskStateName(t.state)) + " " + t.output);
      }
    }
    Result<std::vector<LogChunk>> logs = store.GetLogs(ids[k], std::nullopt);
    if (!logs.ok() || logs->size() != 1 || logs->front().data != Tag(k)) {
      problem(where + "logs");
    }
  }
  Report("checked " + std::to_string(last));
  return problems == 0 ? 0 : 1;
}

int Hold(const std::string& dir) {
  Result<std::unique_ptr<Store>> store = Store::Open(dir);
  if (!store.ok()) Fail("Open", store.status());
  Report("open");
  char buf[64];
  while (::read(STDIN_FILENO, buf, sizeof buf) > 0) {
  }
  return 0;
}

int Sticky(const std::string& dir) {
  StoreOptions options;
  Result<std::unique_ptr<Store>> opened = Store::Open(dir, options);
  if (!opened.ok()) Fail("Open", opened.status());
  Store& store = **opened;
  auto commit_marker = [&](const std::string& name, size_t size) {
    Batch batch(&store);
    batch.PutMarker(name, std::string(size, 'x'));
    return store.Commit(batch);
  };
  Report("before " + commit_marker("sticky/before", 16).ToString());

  // From here the kernel refuses to grow any file of this process with
  // EFBIG, as it would refuse with ENOSPC on a full disk: LevelDB's log
  // append fails for real.
  rlimit old_limit;
  ::getrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit limit = old_limit;
  limit.rlim_cur = 0;
  ::setrlimit(RLIMIT_FSIZE, &limit);
  uint64_t commits_before = store.commit_count();
  Report("failed " + commit_marker("sticky/failed", 100000).ToString());
  Report("failed_commits " +
         std::to_string(store.commit_count() - commits_before));
  ::setrlimit(RLIMIT_FSIZE, &old_limit);

  // The disk would take this write now, but the store must not try it.
  commits_before = store.commit_count();
  Report("after " + commit_marker("sticky/after", 16).ToString());
  Report("after_commits " +
         std::to_string(store.commit_count() - commits_before));
  Batch empty(&store);
  Report("empty " + store.Commit(empty).ToString());
  Report("health " + store.health().ToString());
  return 0;
}

}  // namespace
}  // namespace drover

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s crash|check|hold|sticky DIR\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1];
  if (mode == "crash") return drover::Crash(argv[2]);
  if (mode == "hold") return drover::Hold(argv[2]);
  if (mode == "sticky") return drover::Sticky(argv[2]);
  if (mode == "check") return drover::Check(argv[2]);
  std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
  return 2;
}
