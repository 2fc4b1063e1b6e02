// Store: drover's durable state in an embedded LevelDB database.
//
// Holds jobs, their tasks (state, attempts, outputs, errors), captured logs
// and small markers (e.g. which watched files were taken). Records are
// msgpack with a format version; the key layout is in docs/STORE.md.
//
// Every change goes through a Batch and is applied by Commit as one LevelDB
// WriteBatch with sync: all or nothing, and durable when Commit returns OK.
// Many transitions in one Batch are one fsync (group commit); concurrent
// Commit calls from several threads are grouped by LevelDB as well.
//
// The job and task state machines (state.h) are enforced here: a Batch
// refuses a record whose state cannot follow the stored one (or the one
// already in the same Batch), and nothing of it is applied.
//
// A failed write is sticky: after it every Commit returns the same error,
// so no caller goes on with state it could not persist.
//
// Commit is Prepare then Write; droverd calls the two itself, so that one
// batch is written and synced on a thread of its own while the next is
// built (see src/committer.h).
//
// Thread-safety: Store is thread-safe. A Batch belongs to one thread.
#ifndef DROVER_STORE_H_
#define DROVER_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "drover/state.h"
#include "drover/status.h"

namespace drover {

// Times are milliseconds since the Unix epoch; 0 means "not yet".
using TimeMs = int64_t;

// One try at running a task.
struct AttemptRecord {
  uint32_t number = 0;  // 1-based
  std::string worker;
  TimeMs started_at = 0;
  TimeMs finished_at = 0;
  std::optional<int32_t> exit_code;
  std::string error;
};

struct TaskRecord {
  std::string job_id;
  uint32_t index = 0;  // position in the job file
  std::string name;
  TaskState state = TaskState::kCreated;
  uint32_t attempts = 0;   // attempts started so far; the current one's number
  std::string worker;      // of the current or last attempt
  std::optional<int32_t> exit_code;
  std::string output;
  std::string error;
  TimeMs started_at = 0;   // of the first attempt
  TimeMs finished_at = 0;
  TimeMs not_before = 0;   // retry backoff: not dispatched before this time
  std::vector<AttemptRecord> history;  // every attempt, oldest first
};

struct JobRecord {
  std::string id;
  std::string name;
  JobState state = JobState::kPending;
  TimeMs created_at = 0;
  TimeMs started_at = 0;
  TimeMs finished_at = 0;
  std::string error;
  std::map<std::string, std::string> inputs;  // after --input overrides
  // The job file's text as submitted, but with its secret values removed
  // (WithoutSecretValues): they are in sealed_secrets.
  std::string source;
  std::string source_name;  // the file name it came from, for messages
  uint32_t task_count = 0;
  // The job's [secrets], sealed by droverd's SecretBox; empty for none.
  std::string sealed_secrets;
};

// Log text of one task attempt, in the order it was captured.
struct LogChunk {
  uint32_t task_index = 0;
  uint32_t attempt = 0;
  uint64_t seq = 0;      // set by the store: increasing across the store
  char stream = 'o';     // 'o' stdout, 'e' stderr, 's' drover's own notes
  std::string data;
};

class Store;

// A set of changes applied atomically by Store::Commit.
class Batch {
 public:
  explicit Batch(Store* store) : store_(store) {}

  // Stores a job. A new job must be PENDING; an existing one must make a
  // legal transition. A new job is listed by ListUnfinished until it ends.
  Status PutJob(const JobRecord& job);
  // Stores a task; the same transition rule, against the stored record or
  // the one put earlier in this batch. A new task must be CREATED or
  // PENDING. The record is checked now and encoded when the batch is
  // written (Store::Write, on the thread that writes).
  Status PutTask(const TaskRecord& task);
  // The same, taking the record; a refused one is left as it was.
  Status PutTask(TaskRecord&& task);
  // Appends a log chunk (no state check); the store assigns chunk.seq.
  void AppendLog(std::string_view job_id, LogChunk chunk);
  // A small named value outside the job model (watched files, ids).
  void PutMarker(std::string_view name, std::string_view value);
  void DeleteMarker(std::string_view name);

  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }

  // What this batch holds for a key: the latest state put (for chained
  // transitions; -1 for keys without one) and its write in ops_ (-1: none).
  // Public only for the store's own use.
  struct Pending {
    int state = -1;
    int32_t op = -1;
  };

 private:
  friend class Store;
  friend class PreparedWrite;
  struct Op {
    std::string key;
    // Nothing (a delete), the encoded value, or a task record to encode
    // when the batch is written.
    std::variant<std::monostate, std::string, TaskRecord> value;
  };
  using PendingMap = std::unordered_map<std::string, Pending>;
  // The write for `it`'s key: a record put again in one batch (a task
  // started and finished in the same loop turn) is written once, as it
  // was put last.
  Op& OpFor(PendingMap::iterator it);
  void Put(std::string key, std::optional<std::string> value);
  // The transition check of PutTask; on success, the entry for its key.
  Result<PendingMap::iterator> CheckTask(const TaskRecord& task);

  Store* store_;
  std::vector<Op> ops_;  // one a key, but for log chunks (unique keys)
  PendingMap pending_;
};

// A Batch made ready to write by Store::Prepare: its transitions checked
// and remembered, its writes taken over. Store::Write encodes the task
// records and writes it as one LevelDB write, on any thread (droverd's
// committer thread). Movable.
class PreparedWrite {
 public:
  PreparedWrite();
  ~PreparedWrite();
  PreparedWrite(PreparedWrite&&) noexcept;
  PreparedWrite& operator=(PreparedWrite&&) noexcept;

  bool empty() const;

 private:
  friend class Store;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

struct StoreOptions {
  bool sync = true;             // fsync each Commit; only tests turn it off
  size_t block_cache_bytes = 1 << 20;
  // The memtable: filled as writes come, so it costs an idle daemon
  // nothing; large, because every transition rewrites a record (see
  // docs/STORE.md).
  size_t write_buffer_bytes = 16 << 20;
};

class Store {
 public:
  // Opens (creating if needed) the database in `dir`. IOError if it cannot,
  // e.g. another process holds its lock.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir,
                                             const StoreOptions& options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Applies the batch atomically; durable when it returns OK.
  Status Commit(Batch& batch);
  // The first half of Commit: takes the batch's operations (it is empty
  // afterwards) and counts its records' states as current for the
  // transition checks of later batches. That is safe before the write
  // because a failed write is sticky: no batch after it is ever written.
  // The sticky error if there is one.
  Result<PreparedWrite> Prepare(Batch& batch);
  // The second half: writes and syncs, or returns the sticky error without
  // writing. Safe on another thread than the Batches' while they are
  // built; writes must come in the order they were prepared.
  Status Write(PreparedWrite& write);
  // The sticky error of a failed write, or OK.
  Status health() const;
  // How many Commit calls reached LevelDB (for tests and the benchmark).
  uint64_t commit_count() const;

  Result<JobRecord> GetJob(std::string_view job_id) const;
  // The job's tasks in file order.
  Result<std::vector<TaskRecord>> GetTasks(std::string_view job_id) const;
  Result<TaskRecord> GetTask(std::string_view job_id, uint32_t index) const;
  // Jobs newest first, optionally only those in `state`, at most `limit`.
  Result<std::vector<JobRecord>> ListJobs(std::optional<JobState> state,
                                          size_t limit) const;
  // Ids of jobs not in a terminal state, oldest first.
  Result<std::vector<std::string>> ListUnfinished() const;
  // Log chunks of a job (of one task when task_index is set) whose seq is
  // greater than `after_seq`, in the order they were appended.
  Result<std::vector<LogChunk>> GetLogs(std::string_view job_id,
                                        std::optional<uint32_t> task_index,
                                        uint64_t after_seq = 0) const;
  Result<std::optional<std::string>> GetMarker(std::string_view name) const;

  // A new job id: time-ordered (ids sort by creation), unique in this store.
  std::string NewJobId();

 private:
  friend class Batch;
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace drover

#endif  // DROVER_STORE_H_
