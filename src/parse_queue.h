// ParseQueue: parses large job files on a thread of its own, so that a
// submission of thousands of tasks does not stall droverd's event loop
// (parsing and validating is about a quarter of the loop's work a task; a
// 10,000-task file took the loop about 0.1 s). The loop hands over the
// text with Add, polls fd() with its sockets, and takes the results, in
// the order they were added, with Take; everything after parsing (the job
// id, the records, planning) stays on the loop.
//
// Thread-compatible: every method is called from the loop's thread; the
// parsing runs on the ParseQueue's.
#ifndef DROVER_PARSE_QUEUE_H_
#define DROVER_PARSE_QUEUE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "drover/job_spec.h"

namespace drover {

class ParseQueue {
 public:
  struct Item {
    uint64_t ticket = 0;  // the caller's: what the result belongs to
    std::string source;
    std::string file;
    std::map<std::string, std::string> inputs;
    ParseResult result;  // set once parsed
  };

  ParseQueue();
  ~ParseQueue();  // finishes what was added
  ParseQueue(const ParseQueue&) = delete;
  ParseQueue& operator=(const ParseQueue&) = delete;

  // Readable while parsed items wait to be taken; -1 if the eventfd could
  // not be made (then Add parses at once).
  int fd() const { return event_fd_; }
  // Added and not yet taken: results still to come.
  bool busy() const { return outstanding_ > 0; }

  void Add(Item item);
  // The items parsed so far, in the order they were added.
  std::vector<Item> Take();
  // Blocks until every item added has been parsed, then takes them all.
  std::vector<Item> TakeAll();

 private:
  void Loop(std::stop_token stop);

  int event_fd_ = -1;
  size_t outstanding_ = 0;  // loop thread only

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Item> todo_;     // guarded by mu_
  std::vector<Item> done_;    // guarded by mu_
  std::jthread thread_;  // last: started after the members it uses
};

}  // namespace drover

#endif  // DROVER_PARSE_QUEUE_H_
