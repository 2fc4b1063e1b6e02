// CheckJobGraph: the checks of a job file that need all its tasks at once —
// unique task names and vars, dependencies that name real tasks (with a
// "did you mean"), the ordering rule, and no dependency cycles.
//
// Called by the Parser in job_spec.cc once every task is resolved. Pure:
// it reports to the parse's ErrorList. Thread-compatible.
#ifndef DROVER_JOB_GRAPH_H_
#define DROVER_JOB_GRAPH_H_

#include <vector>

#include "drover/job_spec.h"
#include "error_list.h"
#include "suggester.h"
#include "task_draft.h"

namespace drover {

// `drafts` are the job's tasks in file order and `tasks` the TaskSpecs
// resolved from them, index for index. Fills each task's depends_on: the
// names it lists, or, when it lists none, the task before it (the ordering
// rule). Every problem goes to `errors`; cycles are reported at the edge
// that closes them, at most 20, then a count of the rest.
void CheckJobGraph(const std::vector<TaskDraft>& drafts,
                   std::vector<TaskSpec>& tasks, ErrorList& errors,
                   Suggester& suggest);

}  // namespace drover

#endif  // DROVER_JOB_GRAPH_H_
