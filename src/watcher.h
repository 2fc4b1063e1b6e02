// Watcher: the watched directory. Finds job files that are complete —
// closed after writing or moved in (inotify IN_CLOSE_WRITE, IN_MOVED_TO) —
// plus those present at start, and moves each, once handled, to
// processed/ (with NAME.job holding its id) or failed/ (with NAME.error
// holding the validation errors).
//
// Exactly once, even across a SIGKILL: a file is identified by its name,
// device, inode, size and modification time (its "key"). The server stores
// a marker under that key in the same batch as the job; the file is moved
// only after that batch is durable. A file found again after a crash whose
// marker exists is moved, not submitted again. A file dropped again later
// (a new inode or time) is a new submission.
//
// Thread-compatible: owned by the server's loop.
#ifndef DROVER_WATCHER_H_
#define DROVER_WATCHER_H_

#include <string>
#include <vector>

#include "drover/job_spec.h"
#include "drover/status.h"

namespace drover {

struct WatchedFile {
  std::string name;  // e.g. "backup.toml"
  std::string path;  // dir/name
  std::string key;   // identity for exactly-once; see above
};

class Watcher {
 public:
  explicit Watcher(std::string dir);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Creates processed/ and failed/ and starts watching. Every file already
  // there is reported by the first Take().
  Status Start();
  // The inotify descriptor, to poll for readability.
  int fd() const { return fd_; }

  // Files ready to be handled now (reads pending inotify events).
  std::vector<WatchedFile> Take();

  // Whether a name is one the directory ignores (hidden, .tmp, ~, not
  // .toml).
  static bool Ignored(const std::string& name);

  // After the job is durable: NAME.job, then the file into processed/.
  Status MarkProcessed(const WatchedFile& f, const std::string& job_id);
  // A rejected file: NAME.error, then the file into failed/.
  Status MarkFailed(const WatchedFile& f,
                    const std::vector<Diagnostic>& errors);

 private:
  // Writes dir/subdir/NAME<suffix>, then moves the file beside it.
  Status MoveWithNote(const WatchedFile& f, const char* subdir,
                      const std::string& suffix, const std::string& note);

  std::string dir_;
  int fd_ = -1;
  bool scanned_ = false;
};

// The store marker name for a watched file's key.
std::string WatchMarker(const WatchedFile& f);

}  // namespace drover

#endif  // DROVER_WATCHER_H_
