// Store tests against real LevelDB files in a fresh directory under /tmp.
// What needs a second process (SIGKILL mid-commit, a lock held elsewhere, a
// write the kernel refuses) runs drover_store_crash_child.
#include "drover/store.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <leveldb/db.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <msgpack.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

extern char** environ;

namespace drover {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/drover-store-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Unit tests skip fsync; the crash and group-commit tests keep it.
StoreOptions NoSync() {
  StoreOptions o;
  o.sync = false;
  return o;
}

std::unique_ptr<Store> OpenOk(const std::string& dir,
                              const StoreOptions& options = NoSync()) {
  Result<std::unique_ptr<Store>> store = Store::Open(dir, options);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return std::move(*store);
}

// Writes keys straight into LevelDB, as a bug or a disk might. The Store
// must be closed.
void RawPut(const std::string& dir,
            const std::vector<std::pair<std::string, std::string>>& kvs) {
  leveldb::Options o;
  o.create_if_missing = true;
  leveldb::DB* db = nullptr;
  REQUIRE(leveldb::DB::Open(o, dir, &db).ok());
  for (const auto& [k, v] : kvs) {
    REQUIRE(db->Put(leveldb::WriteOptions(), k, v).ok());
  }
  delete db;
}

JobRecord NewJob(Store& store, std::string name = "job") {
  JobRecord job;
  job.id = store.NewJobId();
  job.name = std::move(name);
  return job;
}

TaskRecord NewTask(const std::string& job_id, uint32_t index,
                   TaskState state = TaskState::kCreated) {
  TaskRecord t;
  t.job_id = job_id;
  t.index = index;
  t.name = "task" + std::to_string(index);
  t.state = state;
  return t;
}

void PutOk(Batch& batch, const JobRecord& job) {
  Status s = batch.PutJob(job);
  INFO(s.ToString());
  REQUIRE(s.ok());
}

void PutOk(Batch& batch, const TaskRecord& task) {
  Status s = batch.PutTask(task);
  INFO(s.ToString());
  REQUIRE(s.ok());
}

void CommitOk(Store& store, Batch& batch) {
  Status s = store.Commit(batch);
  INFO(s.ToString());
  REQUIRE(s.ok());
}

std::vector<std::string> Ids(const std::vector<JobRecord>& jobs) {
  std::vector<std::string> ids;
  for (const JobRecord& j : jobs) ids.push_back(j.id);
  return ids;
}

// Every field, so that a field the codec forgets fails the round trip.
auto Fields(const AttemptRecord& a) {
  return std::tie(a.number, a.worker, a.started_at, a.finished_at, a.exit_code,
                  a.error);
}
auto Fields(const TaskRecord& t) {
  return std::tie(t.job_id, t.index, t.name, t.state, t.attempts, t.worker,
                  t.exit_code, t.output, t.error, t.started_at, t.finished_at,
                  t.not_before);
}
auto Fields(const JobRecord& j) {
  return std::tie(j.id, j.name, j.state, j.created_at, j.started_at,
                  j.finished_at, j.error, j.inputs, j.source, j.source_name,
                  j.task_count);
}

// ---------------------------------------------------------------------------

TEST_CASE("Store.RoundTripsEveryField") {
  TempDir dir;
  JobRecord job;
  TaskRecord task;
  LogChunk chunk;
  {
    auto store = OpenOk(dir.path());
    CHECK(store->health().ok());
    job = NewJob(*store, "convert a vidéo");
    job.created_at = 1700000000123;
    job.started_at = -1;
    job.finished_at = INT64_MAX;
    job.error = "an error\nover two lines";
    job.inputs = {{"source", "https://example.com/in.ogv"}, {"empty", ""}};
    job.source = std::string("name = \"x\"\n\0binary\xff", 20);
    job.source_name = "jobs/convert.toml";
    job.task_count = 4000000000u;

    task = NewTask(job.id, 0xfffffffeu, TaskState::kPending);
    task.name = "fetch";
    task.attempts = 2;
    task.worker = "worker-1";
    task.exit_code = -9;
    task.output = std::string("out\0put", 7);
    task.error = "killed";
    task.started_at = 1;
    task.finished_at = 2;
    task.not_before = 1700000005000;
    task.history = {
        {1, "worker-0", 10, 20, std::nullopt, "worker died"},
        {2, "worker-1", 30, 40, INT32_MIN, ""},
    };

    chunk.task_index = 7;
    chunk.attempt = 2;
    chunk.stream = 'e';
    chunk.data = std::string("\0\xff\n line", 9);

    Batch batch(store.get());
    PutOk(batch, job);
    PutOk(batch, task);
    batch.AppendLog(job.id, chunk);
    batch.PutMarker("watch/a b.toml", std::string("v\0v", 3));
    CommitOk(*store, batch);
    CHECK(batch.empty());  // a committed batch can be reused
  }
  for (int round = 0; round < 2; ++round) {  // in the same session, reopened
    auto store = OpenOk(dir.path());
    Result<JobRecord> got_job = store->GetJob(job.id);
    REQUIRE(got_job.ok());
    CHECK(Fields(*got_job) == Fields(job));
    Result<TaskRecord> got_task = store->GetTask(job.id, task.index);
    REQUIRE(got_task.ok());
    CHECK(Fields(*got_task) == Fields(task));
    REQUIRE(got_task->history.size() == 2);
    for (size_t i = 0; i < 2; ++i) {
      CHECK(Fields(got_task->history[i]) == Fields(task.history[i]));
    }
    Result<std::vector<LogChunk>> logs = store->GetLogs(job.id, std::nullopt);
    REQUIRE(logs.ok());
    REQUIRE(logs->size() == 1);
    CHECK((*logs)[0].task_index == 7);
    CHECK((*logs)[0].attempt == 2);
    CHECK((*logs)[0].stream == 'e');
    CHECK((*logs)[0].data == chunk.data);
    CHECK((*logs)[0].seq >= 1);
    Result<std::optional<std::string>> marker =
        store->GetMarker("watch/a b.toml");
    REQUIRE(marker.ok());
    CHECK(*marker == std::string("v\0v", 3));
  }
}

// Version 2 records key fields by number and leave out fields at their
// default; version 1 records (keyed by name, every field) still read the
// same. The numbers and names are those of docs/STORE.md.
TEST_CASE("Store.WritesCompactRecordsAndReadsVersionOne") {
  TempDir dir;
  std::string id;
  std::string stored;
  {
    auto store = OpenOk(dir.path());
    JobRecord job = NewJob(*store);
    id = job.id;
    TaskRecord task = NewTask(id, 3, TaskState::kPending);
    Batch batch(store.get());
    PutOk(batch, job);
    PutOk(batch, task);
    CommitOk(*store, batch);
  }
  {
    leveldb::DB* db = nullptr;
    REQUIRE(leveldb::DB::Open(leveldb::Options(), dir.path(), &db).ok());
    REQUIRE(db->Get(leveldb::ReadOptions(), "t/" + id + "/00000003", &stored)
                .ok());
    delete db;
  }
  msgpack::object_handle h = msgpack::unpack(stored.data(), stored.size());
  std::map<std::string, std::string> fields;  // key, as text -> value
  REQUIRE(h.get().type == msgpack::type::MAP);
  const msgpack::object_map& map = h.get().via.map;
  for (uint32_t i = 0; i < map.size; ++i) {
    std::ostringstream key, value;
    key << map.ptr[i].key;
    value << map.ptr[i].val;
    fields[key.str()] = value.str();
  }
  // v, job (1), index (2), name (3), state (4); nothing at its default.
  CHECK(fields == std::map<std::string, std::string>{
                      {"\"v\"", "2"},
                      {"1", "\"" + id + "\""},
                      {"2", "3"},
                      {"3", "\"task3\""},
                      {"4", "\"PENDING\""}});

  // The same task as version 1 wrote it, with more: every field by name.
  msgpack::zone z;
  std::map<std::string, msgpack::object> v1 = {
      {"v", msgpack::object(1, z)},
      {"job", msgpack::object(id, z)},
      {"index", msgpack::object(3, z)},
      {"name", msgpack::object("task3", z)},
      {"state", msgpack::object("FAILED", z)},
      {"attempts", msgpack::object(1, z)},
      {"worker", msgpack::object("w", z)},
      {"exit_code", msgpack::object(-2, z)},
      {"output", msgpack::object("out", z)},
      {"error", msgpack::object("", z)},
      {"started_at", msgpack::object(5, z)},
      {"finished_at", msgpack::object(6, z)},
      {"not_before", msgpack::object(0, z)},
  };
  std::map<std::string, msgpack::object> attempt = {
      {"number", msgpack::object(1, z)},
      {"worker", msgpack::object("w", z)},
      {"started_at", msgpack::object(5, z)},
      {"finished_at", msgpack::object(6, z)},
      {"exit_code", msgpack::object(-2, z)},
      {"error", msgpack::object("boom", z)},
  };
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(v1.size() + 1));
  for (const auto& [k, v] : v1) {
    pk.pack(k);
    pk.pack(v);
  }
  pk.pack(std::string("history"));
  pk.pack_array(1);
  pk.pack(attempt);
  RawPut(dir.path(), {{"t/" + id + "/00000003", std::string(buf.data(),
                                                            buf.size())}});
  auto store = OpenOk(dir.path());
  Result<TaskRecord> got = store->GetTask(id, 3);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  TaskRecord want = NewTask(id, 3, TaskState::kFailed);
  want.attempts = 1;
  want.worker = "w";
  want.exit_code = -2;
  want.output = "out";
  want.started_at = 5;
  want.finished_at = 6;
  CHECK(Fields(*got) == Fields(want));
  REQUIRE(got->history.size() == 1);
  CHECK(Fields(got->history[0]) ==
        Fields(AttemptRecord{1, "w", 5, 6, -2, "boom"}));
}

TEST_CASE("Store.MissingRecordsAreNotFound") {
  TempDir dir;
  auto store = OpenOk(dir.path());
  CHECK(store->GetJob("0123456789abcdef0000").status().code() ==
        Code::kNotFound);
  CHECK(store->GetTask("0123456789abcdef0000", 3).status().code() ==
        Code::kNotFound);
  Result<std::vector<TaskRecord>> tasks = store->GetTasks("nope");
  REQUIRE(tasks.ok());
  CHECK(tasks->empty());
  Result<std::optional<std::string>> marker = store->GetMarker("nope");
  REQUIRE(marker.ok());
  CHECK_FALSE(marker->has_value());
  Batch batch(store.get());
  JobRecord bad;
  bad.id = "a/b";
  CHECK(batch.PutJob(bad).code() == Code::kInvalidArgument);
  CHECK(batch.PutTask(NewTask("", 0)).code() == Code::kInvalidArgument);
  CHECK(batch.empty());
}

TEST_CASE("Store.IllegalTransitionIsRefusedAndAddsNothing") {
  TempDir dir;
  auto store = OpenOk(dir.path());
  JobRecord job = NewJob(*store);
  TaskRecord task = NewTask(job.id, 1);
  task.name = "build";
  {
    Batch batch(store.get());
    JobRecord running = job;
    running.state = JobState::kRunning;
    Status s = batch.PutJob(running);
    CHECK(s.code() == Code::kFailedPrecondition);
    CHECK(s.message() ==
          "job " + job.id + ": a new job must be PENDING, not RUNNING");
    TaskRecord scheduled = task;
    scheduled.state = TaskState::kScheduled;
    s = batch.PutTask(scheduled);
    CHECK(s.code() == Code::kFailedPrecondition);
    CHECK(s.message() == "job " + job.id +
                             " task 'build' (index 1): a new task must be "
                             "CREATED or PENDING, not SCHEDULED");
    CHECK(batch.empty());
    PutOk(batch, job);
    task.state = TaskState::kPending;
    PutOk(batch, task);
    task.state = TaskState::kScheduled;
    PutOk(batch, task);
    task.state = TaskState::kRunning;
    PutOk(batch, task);
    CommitOk(*store, batch);
  }
  // Against the stored record: RUNNING cannot go back to CREATED.
  Batch batch(store.get());
  JobRecord running = job;
  running.state = JobState::kRunning;
  running.error = "changed";
  PutOk(batch, running);
  TaskRecord other = NewTask(job.id, 2);
  PutOk(batch, other);
  size_t size = batch.size();
  TaskRecord back = task;
  back.state = TaskState::kCreated;
  back.error = "must not be stored";
  Status s = batch.PutTask(back);
  CHECK(s.code() == Code::kFailedPrecondition);
  CHECK(s.message() == "job " + job.id +
                           " task 'build' (index 1): cannot go from RUNNING "
                           "to CREATED");
  CHECK(batch.size() == size);
  // The caller drops a batch that had a refused record: nothing of it is
  // stored.
  Result<JobRecord> stored_job = store->GetJob(job.id);
  REQUIRE(stored_job.ok());
  CHECK(stored_job->state == JobState::kPending);
  CHECK(stored_job->error.empty());
  CHECK(store->GetTask(job.id, 2).status().code() == Code::kNotFound);
  Result<TaskRecord> stored_task = store->GetTask(job.id, 1);
  REQUIRE(stored_task.ok());
  CHECK(stored_task->state == TaskState::kRunning);
  CHECK(stored_task->error.empty());
}

TEST_CASE("Store.ChainedTransitionsInOneBatchCheckTheLatest") {
  TempDir dir;
  auto store = OpenOk(dir.path());
  JobRecord job = NewJob(*store);
  TaskRecord task = NewTask(job.id, 0, TaskState::kPending);
  {
    Batch batch(store.get());
    PutOk(batch, job);
    PutOk(batch, task);
    CommitOk(*store, batch);
  }
  Batch batch(store.get());
  job.state = JobState::kRunning;
  PutOk(batch, job);
  for (TaskState s :
       {TaskState::kScheduled, TaskState::kRunning, TaskState::kPending,
        TaskState::kScheduled, TaskState::kRunning, TaskState::kCompleted}) {
    task.state = s;
    task.attempts += s == TaskState::kRunning ? 1 : 0;
    PutOk(batch, task);
  }
  // PENDING -> PENDING would be legal against the stored record, but the
  // batch already made the task COMPLETED and the job RUNNING.
  TaskRecord again = task;
  again.state = TaskState::kPending;
  Status s = batch.PutTask(again);
  CHECK(s.message() == "job " + job.id +
                           " task 'task0' (index 0): cannot go from "
                           "COMPLETED to PENDING");
  JobRecord back = job;
  back.state = JobState::kPending;
  s = batch.PutJob(back);
  CHECK(s.message() == "job " + job.id + ": cannot go from RUNNING to PENDING");
  job.state = JobState::kCompleted;
  PutOk(batch, job);
  CommitOk(*store, batch);
  Result<TaskRecord> stored = store->GetTask(job.id, 0);
  REQUIRE(stored.ok());
  CHECK(stored->state == TaskState::kCompleted);
  CHECK(stored->attempts == 2);
  CHECK(store->GetJob(job.id)->state == JobState::kCompleted);
}

TEST_CASE("Store.BatchIsAllOrNothingAcrossReopen") {
  TempDir dir;
  std::string job_id, dropped_id;
  {
    auto store = OpenOk(dir.path());
    JobRecord job = NewJob(*store);
    job_id = job.id;
    job.task_count = 500;
    Batch batch(store.get());
    PutOk(batch, job);
    for (uint32_t i = 0; i < 500; ++i) {
      PutOk(batch, NewTask(job.id, i));
      batch.AppendLog(job.id,
                      LogChunk{i, 1, 0, 'o', "line " + std::to_string(i)});
    }
    for (int i = 0; i < 100; ++i) {
      batch.PutMarker("m" + std::to_string(i), std::to_string(i));
    }
    uint64_t before = store->commit_count();
    CommitOk(*store, batch);
    CHECK(store->commit_count() == before + 1);

    // Built but never committed: none of it may appear.
    JobRecord dropped = NewJob(*store);
    dropped_id = dropped.id;
    Batch never(store.get());
    PutOk(never, dropped);
    PutOk(never, NewTask(dropped.id, 0));
    never.PutMarker("m0", "overwritten");
  }
  auto store = OpenOk(dir.path());
  Result<std::vector<TaskRecord>> tasks = store->GetTasks(job_id);
  REQUIRE(tasks.ok());
  REQUIRE(tasks->size() == 500);
  for (uint32_t i = 0; i < 500; ++i) CHECK((*tasks)[i].index == i);
  Result<std::vector<LogChunk>> logs = store->GetLogs(job_id, std::nullopt);
  REQUIRE(logs.ok());
  CHECK(logs->size() == 500);
  for (int i = 0; i < 100; ++i) {
    CHECK(*store->GetMarker("m" + std::to_string(i)) == std::to_string(i));
  }
  CHECK(store->GetJob(dropped_id).status().code() == Code::kNotFound);
  CHECK(store->GetTasks(dropped_id)->empty());
  CHECK(*store->ListUnfinished() == std::vector<std::string>{job_id});
}

TEST_CASE("Store.UnfinishedIndexFollowsTransitionsAndReopen") {
  TempDir dir;
  std::vector<JobRecord> jobs;
  {
    auto store = OpenOk(dir.path());
    Batch batch(store.get());
    for (int i = 0; i < 4; ++i) {
      jobs.push_back(NewJob(*store, "j" + std::to_string(i)));
      PutOk(batch, jobs.back());
    }
    // Created and cancelled in one batch: never listed.
    JobRecord brief = NewJob(*store, "brief");
    PutOk(batch, brief);
    brief.state = JobState::kCancelled;
    PutOk(batch, brief);
    CommitOk(*store, batch);
    CHECK(*store->ListUnfinished() ==
          std::vector<std::string>{jobs[0].id, jobs[1].id, jobs[2].id,
                                   jobs[3].id});
    jobs[0].state = JobState::kRunning;
    jobs[1].state = JobState::kCancelled;
    jobs[3].state = JobState::kFailed;
    for (int i : {0, 1, 3}) PutOk(batch, jobs[i]);
    CommitOk(*store, batch);
  }
  auto store = OpenOk(dir.path());
  CHECK(*store->ListUnfinished() ==
        std::vector<std::string>{jobs[0].id, jobs[2].id});
  Batch batch(store.get());
  jobs[0].state = JobState::kCompleted;
  jobs[2].state = JobState::kRunning;
  PutOk(batch, jobs[0]);
  PutOk(batch, jobs[2]);
  CommitOk(*store, batch);
  CHECK(*store->ListUnfinished() == std::vector<std::string>{jobs[2].id});
  jobs[2].state = JobState::kCompleted;
  PutOk(batch, jobs[2]);
  CommitOk(*store, batch);
  CHECK(store->ListUnfinished()->empty());
}

TEST_CASE("Store.ListJobsNewestFirstWithFilterAndLimit") {
  TempDir dir;
  auto store = OpenOk(dir.path());
  std::vector<JobRecord> jobs;
  const std::vector<std::vector<JobState>> paths = {
      {JobState::kRunning, JobState::kCompleted},  // 0
      {JobState::kRunning},                        // 1
      {},                                          // 2 pending
      {JobState::kCancelled},                      // 3
      {},                                          // 4 pending
      {JobState::kFailed},                         // 5
      {},                                          // 6 pending
  };
  for (size_t i = 0; i < paths.size(); ++i) {
    Batch batch(store.get());
    jobs.push_back(NewJob(*store, "j" + std::to_string(i)));
    PutOk(batch, jobs.back());
    for (JobState s : paths[i]) {
      jobs.back().state = s;
      PutOk(batch, jobs.back());
    }
    CommitOk(*store, batch);
  }
  auto ids = [&](std::vector<int> idx) {
    std::vector<std::string> v;
    for (int i : idx) v.push_back(jobs[i].id);
    return v;
  };
  CHECK(Ids(*store->ListJobs(std::nullopt, 0)) == ids({6, 5, 4, 3, 2, 1, 0}));
  CHECK(Ids(*store->ListJobs(std::nullopt, 3)) == ids({6, 5, 4}));
  CHECK(Ids(*store->ListJobs(JobState::kPending, 0)) == ids({6, 4, 2}));
  CHECK(Ids(*store->ListJobs(JobState::kPending, 2)) == ids({6, 4}));
  CHECK(Ids(*store->ListJobs(JobState::kRunning, 10)) == ids({1}));
  CHECK(Ids(*store->ListJobs(JobState::kCompleted, 1)) == ids({0}));
  CHECK(store->ListJobs(JobState::kCompleted, 0)->front().name == "j0");
  CHECK(Ids(*store->ListJobs(JobState::kFailed, 0)) == ids({5}));
  CHECK(Ids(*store->ListJobs(JobState::kCancelled, 0)) == ids({3}));
}

TEST_CASE("Store.JobIdsSortByCreationAndAreUnique") {
  TempDir dir;
  std::string last;
  {
    auto store = OpenOk(dir.path());
    std::set<std::string> seen;
    for (int i = 0; i < 10000; ++i) {
      std::string id = store->NewJobId();
      REQUIRE(id.size() == 20);
      REQUIRE(id.find_first_not_of("0123456789abcdef") == std::string::npos);
      REQUIRE(id > last);
      last = id;
      seen.insert(id);
    }
    CHECK(seen.size() == 10000);
    // A job stored with an id from far in the future, as after the clock
    // was set back: later ids must still sort after it.
    JobRecord job;
    job.id =
        "fff000000000"
        "0007"
        "abcd";
    Batch batch(store.get());
    PutOk(batch, job);
    CommitOk(*store, batch);
    last = job.id;
  }
  auto store = OpenOk(dir.path());
  std::string next = store->NewJobId();
  CHECK(next > last);
  CHECK(next.substr(0, 16) == "fff0000000000008");
  CHECK(store->NewJobId() > next);
}

TEST_CASE("Store.LogsAppendInOrderWithSeqFilterAndAfter") {
  TempDir dir;
  std::string a, b;
  uint64_t max_seq = 0;
  {
    auto store = OpenOk(dir.path());
    a = store->NewJobId();
    b = store->NewJobId();
    Batch batch(store.get());
    for (int i = 0; i < 10; ++i) {
      batch.AppendLog(
          a, LogChunk{uint32_t(i % 2), 1, 0, 'o', "a" + std::to_string(i)});
      batch.AppendLog(b, LogChunk{0, 1, 0, 'e', "b" + std::to_string(i)});
    }
    CommitOk(*store, batch);
    // Batches that never commit burn seqs; that only leaves gaps.
    Batch dropped(store.get());
    dropped.AppendLog(a, LogChunk{0, 1, 0, 'o', "dropped"});
    batch.AppendLog(a, LogChunk{1, 2, 0, 's', "a10"});
    CommitOk(*store, batch);

    Result<std::vector<LogChunk>> all = store->GetLogs(a, std::nullopt);
    REQUIRE(all.ok());
    REQUIRE(all->size() == 11);
    for (size_t i = 0; i < all->size(); ++i) {
      CHECK((*all)[i].data == "a" + std::to_string(i));
      if (i > 0) CHECK((*all)[i].seq > (*all)[i - 1].seq);
    }
    max_seq = all->back().seq;
    Result<std::vector<LogChunk>> odd = store->GetLogs(a, 1u);
    REQUIRE(odd.ok());
    std::vector<std::string> data;
    for (const LogChunk& c : *odd) data.push_back(c.data);
    CHECK(data ==
          std::vector<std::string>{"a1", "a3", "a5", "a7", "a9", "a10"});
    Result<std::vector<LogChunk>> after =
        store->GetLogs(a, std::nullopt, (*all)[7].seq);
    REQUIRE(after.ok());
    REQUIRE(after->size() == 3);
    CHECK(after->front().data == "a8");
    CHECK(store->GetLogs(a, 0u, (*all)[9].seq)->empty());
    CHECK(store->GetLogs(a, std::nullopt, UINT64_MAX)->empty());
    CHECK(store->GetLogs(b, std::nullopt)->size() == 10);
    CHECK(store->GetLogs("c", std::nullopt)->empty());
  }
  // The counter survives a reopen: new chunks sort after the old ones.
  auto store = OpenOk(dir.path());
  Batch batch(store.get());
  batch.AppendLog(a, LogChunk{0, 3, 0, 'o', "new"});
  CommitOk(*store, batch);
  Result<std::vector<LogChunk>> all = store->GetLogs(a, std::nullopt);
  REQUIRE(all.ok());
  CHECK(all->back().data == "new");
  CHECK(all->back().seq > max_seq);
}

TEST_CASE("Store.ConcurrentCommitsKeepLogSeqsIncreasingAcrossReopen") {
  TempDir dir;
  constexpr int kThreads = 4;
  constexpr int kBatches = 50;
  uint64_t max_seq = 0;
  {
    auto store = OpenOk(dir.path());
    std::vector<std::thread> threads;
    std::vector<std::string> ids;
    for (int t = 0; t < kThreads; ++t) ids.push_back(store->NewJobId());
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kBatches; ++i) {
          Batch batch(store.get());
          batch.AppendLog(ids[t], LogChunk{0, 1, 0, 'o', std::to_string(i)});
          batch.PutMarker("thread" + std::to_string(t), std::to_string(i));
          if (!store->Commit(batch).ok()) return;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    CHECK(store->commit_count() == kThreads * kBatches);
    std::set<uint64_t> seqs;
    for (const std::string& id : ids) {
      Result<std::vector<LogChunk>> logs = store->GetLogs(id, std::nullopt);
      REQUIRE(logs.ok());
      CHECK(logs->size() == kBatches);
      for (const LogChunk& c : *logs) seqs.insert(c.seq);
    }
    CHECK(seqs.size() == kThreads * kBatches);
    max_seq = *seqs.rbegin();
  }
  for (int round = 0; round < 2; ++round) {
    auto store = OpenOk(dir.path());
    Batch batch(store.get());
    batch.AppendLog("x", LogChunk{0, 1, 0, 'o', "after"});
    CommitOk(*store, batch);
    uint64_t seq = store->GetLogs("x", std::nullopt)->back().seq;
    CHECK(seq > max_seq);
    max_seq = seq;
  }
}

TEST_CASE("Store.MarkersPutGetDelete") {
  TempDir dir;
  auto store = OpenOk(dir.path());
  Batch batch(store.get());
  batch.PutMarker("watch/a.toml", "job-1");
  batch.PutMarker("watch/b.toml", "");
  CommitOk(*store, batch);
  CHECK(*store->GetMarker("watch/a.toml") == "job-1");
  CHECK(*store->GetMarker("watch/b.toml") == "");
  CHECK_FALSE(store->GetMarker("watch/c.toml")->has_value());
  batch.DeleteMarker("watch/a.toml");
  batch.PutMarker("watch/b.toml", "job-2");
  CommitOk(*store, batch);
  CHECK_FALSE(store->GetMarker("watch/a.toml")->has_value());
  CHECK(*store->GetMarker("watch/b.toml") == "job-2");
}

TEST_CASE("Store.GroupCommitIsOneWrite") {
  TempDir dir;
  StoreOptions synced;  // the real fsync: one per Commit, not per record
  auto store = OpenOk(dir.path(), synced);
  JobRecord job = NewJob(*store);
  Batch batch(store.get());
  PutOk(batch, job);
  for (uint32_t i = 0; i < 1000; ++i) PutOk(batch, NewTask(job.id, i));
  uint64_t before = store->commit_count();
  CommitOk(*store, batch);
  CHECK(store->commit_count() == before + 1);

  for (uint32_t i = 0; i < 1000; ++i) {
    TaskRecord t = NewTask(job.id, i, TaskState::kPending);
    PutOk(batch, t);
  }
  CHECK(batch.size() == 1000);
  CommitOk(*store, batch);
  CHECK(store->commit_count() == before + 2);
  Batch empty(store.get());
  CommitOk(*store, empty);
  CHECK(store->commit_count() == before + 2);
  Result<std::vector<TaskRecord>> tasks = store->GetTasks(job.id);
  REQUIRE(tasks.ok());
  CHECK(tasks->size() == 1000);
  for (const TaskRecord& t : *tasks) CHECK(t.state == TaskState::kPending);
}

// ---------------------------------------------------------------------------
// Garbage on disk.

TEST_CASE("Store.GarbageRecordsAreCorruptionNeverACrash") {
  TempDir dir;
  std::string id, valid_job, valid_task;
  {
    auto store = OpenOk(dir.path());
    JobRecord job = NewJob(*store);
    id = job.id;
    job.inputs = {{"k", "v"}};
    Batch batch(store.get());
    PutOk(batch, job);
    PutOk(batch, NewTask(id, 0));
    batch.AppendLog(id, LogChunk{0, 1, 0, 'o', "x"});
    CommitOk(*store, batch);
  }
  {  // The encoded records, to mutate below.
    leveldb::DB* db = nullptr;
    REQUIRE(leveldb::DB::Open(leveldb::Options(), dir.path(), &db).ok());
    leveldb::ReadOptions ro;
    REQUIRE(db->Get(ro, "j/" + id, &valid_job).ok());
    REQUIRE(db->Get(ro, "t/" + id + "/00000000", &valid_task).ok());
    delete db;
  }
  msgpack::zone z;
  auto with = [&](const std::map<std::string, msgpack::object>& fields) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, fields);
    return std::string(buf.data(), buf.size());
  };
  const msgpack::object v1(1, z);
  const std::vector<std::string> cases = {
      "",
      "not msgpack at all",
      valid_job.substr(0, valid_job.size() / 2),
      valid_job + "x",
      "\x93\x01\x02\x03",                      // not a map
      "\xdd\xff\xff\xff\xff",                  // an array of 2^32-1
      "\xdf\xff\xff\xff\xff",                  // a map of 2^32-1
      "\xdb\xff\xff\xff\xff",                  // a string of 4 GiB
      std::string(100000, '\x91'),             // nested 100,000 deep
      with({{"id", msgpack::object(id, z)}}),  // no version
      with({{"v", msgpack::object(0, z)}}),
      with({{"v", msgpack::object("1", z)}}),
      with({{"v", v1}, {"state", msgpack::object("DONE", z)}}),
      with({{"v", v1}, {"state", msgpack::object(3, z)}}),
      with({{"v", v1}, {"task_count", msgpack::object(-1, z)}}),
      with({{"v", v1}, {"task_count", msgpack::object(1ull << 40, z)}}),
      with({{"v", v1}, {"inputs", msgpack::object("x", z)}}),
  };
  std::vector<std::pair<std::string, std::string>> raw;
  for (size_t i = 0; i < cases.size(); ++i) {
    raw.emplace_back("j/garbage" + std::to_string(i), cases[i]);
  }
  RawPut(dir.path(), raw);
  {
    auto store = OpenOk(dir.path());
    for (size_t i = 0; i < cases.size(); ++i) {
      CAPTURE(i);
      std::string garbage_id = "garbage" + std::to_string(i);
      Status s = store->GetJob(garbage_id).status();
      CHECK(s.code() == Code::kCorruption);
      CHECK(s.message().find("'j/" + garbage_id + "'") != std::string::npos);
      Batch batch(store.get());
      JobRecord update;
      update.id = garbage_id;
      CHECK(batch.PutJob(update).code() == Code::kCorruption);
      CHECK(batch.empty());
    }
    CHECK(store->ListJobs(std::nullopt, 0).status().code() ==
          Code::kCorruption);
  }

  RawPut(dir.path(), {{"j/" + id, with({{"v", msgpack::object(3, z)}})},
                      {"t/" + id + "/00000000", "\xc1"},
                      {"l/" + id + "/0000000000000001", "\x80"}});
  auto store = OpenOk(dir.path());
  Status s = store->GetJob(id).status();
  CHECK(s.code() == Code::kCorruption);
  CHECK(s.message() == "record 'j/" + id +
                           "' has format version 3, newer than this drover "
                           "reads (2); use the drover that wrote it");
  s = store->GetTask(id, 0).status();
  CHECK(s.code() == Code::kCorruption);
  CHECK(s.message().find("'t/" + id + "/00000000'") != std::string::npos);
  CHECK(store->GetTasks(id).status().code() == Code::kCorruption);
  CHECK(store->GetLogs(id, std::nullopt).status().code() == Code::kCorruption);
  CHECK(store->ListUnfinished().ok());  // keys only

  // Thousands of mutations of valid records: each decodes or is
  // Corruption, and nothing crashes (run under ASan as well).
  store.reset();
  std::mt19937 rng(20240601);
  std::vector<std::pair<std::string, std::string>> mutants;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = i % 2 ? valid_job : valid_task;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0:
          bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.resize(at);
          break;
        default:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
      }
    }
    if (i % 10 == 0) {
      bytes.resize(rng() % 64);
      for (char& c : bytes) c = static_cast<char>(rng());
    }
    char key[32];
    std::snprintf(key, sizeof key, "t/fuzz/%08x", i);
    mutants.emplace_back(key, bytes);
  }
  RawPut(dir.path(), mutants);
  store = OpenOk(dir.path());
  int corrupt = 0;
  for (uint32_t i = 0; i < mutants.size(); ++i) {
    Result<TaskRecord> t = store->GetTask("fuzz", i);
    if (!t.ok()) {
      REQUIRE(t.status().code() == Code::kCorruption);
      ++corrupt;
    }
  }
  CHECK(corrupt > 1000);
}

TEST_CASE("Store.UnknownFormatIsRefusedAtOpen") {
  TempDir dir;
  OpenOk(dir.path()).reset();
  RawPut(dir.path(), {{"meta/format", "2"}});
  Result<std::unique_ptr<Store>> store = Store::Open(dir.path(), NoSync());
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == Code::kCorruption);
  CHECK(store.status().message() ==
        "the store in " + dir.path() +
            " has format version '2', but this drover reads only version 1; "
            "open it with the drover that wrote it");

  TempDir foreign;
  RawPut(foreign.path(), {{"some", "data"}});
  store = Store::Open(foreign.path(), NoSync());
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == Code::kCorruption);
  CHECK(store.status().message().find("no format version") !=
        std::string::npos);
}

// ---------------------------------------------------------------------------
// Other processes.

// drover_store_crash_child, with pipes to its stdin and stdout.
class Child {
 public:
  static std::string Path() {
    return std::string(DROVER_BUILD_DIR) + "/drover_store_crash_child";
  }

  Child(const std::string& mode, const std::string& dir) {
    std::string path = Path();
    INFO("build it first: ninja -C <build dir> drover_store_crash_child");
    REQUIRE(::access(path.c_str(), X_OK) == 0);
    int in[2], out[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::vector<std::string> args = {path, mode, dir};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv.data(),
                           environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    REQUIRE(rc == 0);
  }
  ~Child() {
    if (pid_ > 0) {
      Kill();
      Wait();
    }
    CloseStdin();
    if (stdout_ >= 0) ::close(stdout_);
  }

  // The next line, or nullopt at EOF or after `timeout`.
  std::optional<std::string> ReadLine(
      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p = {stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  void CloseStdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  void Kill() { ::kill(pid_, SIGKILL); }
  // The exit status, or -signal.
  int Wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::string buffer_;
};

TEST_CASE("Store.LockedDataDirIsIOError") {
  TempDir dir;
  {
    auto store = OpenOk(dir.path());
    Result<std::unique_ptr<Store>> second = Store::Open(dir.path());
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().code() == Code::kIOError);
    CHECK(second.status().message().find("is in use by another drover "
                                         "process") != std::string::npos);
  }
  Child holder("hold", dir.path());
  REQUIRE(holder.ReadLine() == "open");
  Result<std::unique_ptr<Store>> store = Store::Open(dir.path());
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == Code::kIOError);
  CHECK(store.status().message().find(dir.path() + " is in use") !=
        std::string::npos);
  holder.CloseStdin();
  CHECK(holder.Wait() == 0);
  CHECK(Store::Open(dir.path()).ok());
}

TEST_CASE("Store.FailedWriteIsStickyAndNothingOfItIsStored") {
  TempDir dir;
  std::map<std::string, std::string> report;
  {
    Child child("sticky", dir.path());
    while (std::optional<std::string> line = child.ReadLine()) {
      size_t space = line->find(' ');
      report[line->substr(0, space)] = line->substr(space + 1);
    }
    CHECK(child.Wait() == 0);
  }
  CHECK(report["before"] == "OK");
  const std::string& failed = report["failed"];
  CHECK(failed.starts_with("IOError: the store in " + dir.path() +
                           " failed a write"));
  CHECK(failed.find("File too large") != std::string::npos);
  CHECK(report["failed_commits"] == "1");
  CHECK(report["after"] == failed);  // though the disk would take it now
  CHECK(report["after_commits"] == "0");
  CHECK(report["empty"] == failed);
  CHECK(report["health"] == failed);

  auto store = OpenOk(dir.path());
  CHECK(store->health().ok());
  CHECK(store->GetMarker("sticky/before")->has_value());
  CHECK_FALSE(store->GetMarker("sticky/failed")->has_value());
  CHECK_FALSE(store->GetMarker("sticky/after")->has_value());
}

TEST_CASE("Store.SigkillMidCommitLosesNoCommittedBatchAndSplitsNone") {
  TempDir dir;
  std::mt19937 rng(7);
  uint64_t reported = 0;
  // Kill after this many more batches were reported, at once or after a
  // short delay, so that kills land in different parts of a commit.
  for (int kill_after : {1, 2, 5, 9, 3, 14, 1, 6, 2, 4}) {
    CAPTURE(kill_after);
    {
      Child child("crash", dir.path());
      for (int n = 0; n < kill_after; ++n) {
        std::optional<std::string> line = child.ReadLine();
        REQUIRE(line.has_value());
        reported = std::stoull(*line);
      }
      if (rng() % 2) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      }
      child.Kill();
      CHECK(child.Wait() == -SIGKILL);
      // Whatever it reported before it died counts as acknowledged.
      while (std::optional<std::string> line = child.ReadLine()) {
        reported = std::stoull(*line);
      }
    }
    uint64_t last = 0;
    {
      auto store = OpenOk(dir.path());
      Result<std::optional<std::string>> marker =
          store->GetMarker("crash/last");
      REQUIRE(marker.ok());
      REQUIRE(marker->has_value());
      last = std::stoull(**marker);
      CAPTURE(reported);
      CAPTURE(last);
      // Every acknowledged batch is there; at most the one in flight beyond.
      CHECK(last >= reported);
      CHECK(last <= reported + 1);
      // Batch i leaves jobs i-1 and i unfinished.
      std::vector<std::string> unfinished;
      for (uint64_t k = last > 1 ? last - 1 : 1; k <= last; ++k) {
        unfinished.push_back(
            **store->GetMarker("crash/job/" + std::to_string(k)));
      }
      CHECK(*store->ListUnfinished() == unfinished);
      CHECK(store->ListJobs(std::nullopt, 0)->size() == last);
    }
    // Record by record, by the rules that wrote them: a batch partly
    // applied breaks one of them.
    Child check("check", dir.path());
    std::string out;
    while (std::optional<std::string> line = check.ReadLine()) {
      out += *line + "\n";
    }
    CHECK(out == "checked " + std::to_string(last) + "\n");
    CHECK(check.Wait() == 0);
  }
}

}  // namespace
}  // namespace drover
