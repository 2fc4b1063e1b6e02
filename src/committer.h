// Committer: writes and syncs droverd's batches on a thread of its own, one
// at a time, so that the event loop builds the next batch (decodes
// messages, plans, encodes records) while the disk syncs the last one.
//
// The loop hands over a PreparedWrite with Start, polls fd() with its
// sockets, and collects the outcome with Finish once fd() is readable.
// Only one write is in flight: what the loop does meanwhile goes into the
// next batch, which it hands over when this one has finished. Replies and
// messages wait for the write that holds their changes, as before ("never
// an acknowledgement before the sync"); the loop just no longer waits with
// them.
//
// Thread-compatible: every method is called from the loop's thread; the
// write itself runs on the Committer's.
#ifndef DROVER_COMMITTER_H_
#define DROVER_COMMITTER_H_

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "drover/status.h"
#include "drover/store.h"

namespace drover {

class Committer {
 public:
  // `store` must outlive the Committer.
  explicit Committer(Store* store);
  ~Committer();  // waits for a write in flight
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // Readable while a finished write waits to be collected; -1 if the
  // eventfd could not be made (then Start writes synchronously).
  int fd() const { return event_fd_; }
  bool busy() const { return busy_; }

  // Starts writing `write`. Requires !busy().
  void Start(PreparedWrite write);
  // The outcome of the write in flight, once it has finished; nullopt while
  // it runs (or when none was started).
  std::optional<Status> Finish();
  // Blocks until the write in flight has finished, and returns its outcome.
  Status Wait();

 private:
  void Loop(std::stop_token stop);

  Store* store_;
  int event_fd_ = -1;
  bool busy_ = false;  // loop thread only: started and not yet collected

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::optional<PreparedWrite> pending_;  // guarded by mu_: to be written
  std::optional<Status> done_;            // guarded by mu_: its outcome
  std::jthread thread_;  // last: started after the members it uses
};

}  // namespace drover

#endif  // DROVER_COMMITTER_H_
