// CheckJobGraph. See job_graph.h.
#include "job_graph.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>

namespace drover {
namespace {

constexpr size_t kMaxCyclesReported = 20;
constexpr size_t kCycleEnds = 5;  // tasks shown at each end of a long cycle

}  // namespace

void CheckJobGraph(const std::vector<TaskDraft>& drafts,
                   std::vector<TaskSpec>& tasks, ErrorList& errors,
                   Suggester& suggest) {
  // Names and vars first: everything below resolves names to indexes.
  std::map<std::string, size_t> index, vars;
  std::vector<std::string> names;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TaskDraft& d = drafts[i];
    if (d.named) {
      auto [it, fresh] = index.emplace(d.name, i);
      if (fresh) names.push_back(d.name);
      if (!fresh) {
        errors.Add(d.name_at, "duplicate task name " + Quoted(d.name) +
                                  " (first defined at " +
                                  At(drafts[it->second].name_at) + ")");
      }
    }
    if (!d.var.empty()) {
      auto [it, fresh] = vars.emplace(d.var, i);
      if (!fresh) {
        errors.Add(d.var_at, "var " + Quoted(d.var) + " of " + d.label +
                                 " is already used by " +
                                 drafts[it->second].label);
      }
    }
  }

  struct Edge {  // the task depends on `target`, as declared at `where`
    size_t target;
    Location where;
  };
  std::vector<std::vector<Edge>> edges(drafts.size());
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TaskDraft& d = drafts[i];
    if (!d.depends_on) {
      // The ordering rule: no depends_on means "after the task above".
      if (i > 0 && drafts[i - 1].named) {
        edges[i].push_back({i - 1, d.where});
        tasks[i].depends_on.push_back(drafts[i - 1].name);
      }
      continue;
    }
    std::set<std::string> seen;
    for (const TaskDraft::Dependency& dep : *d.depends_on) {
      auto it = index.find(dep.name);
      if (!seen.insert(dep.name).second) {
        errors.Add(dep.where, d.label + " lists dependency " +
                                  Quoted(dep.name) + " more than once");
      } else if (d.named && dep.name == d.name) {
        errors.Add(dep.where, d.label + " depends on itself");
      } else if (it == index.end()) {
        errors.Add(dep.where, d.label + " depends on unknown task " +
                                  Quoted(dep.name) + suggest(dep.name, names));
      } else {
        edges[i].push_back({it->second, dep.where});
        tasks[i].depends_on.push_back(dep.name);
      }
    }
  }

  // Cycles: an iterative depth-first search (a 10,000-task chain must not
  // exhaust the stack); every back edge closes one cycle.
  enum Color : uint8_t { kWhite, kGray, kBlack };
  std::vector<Color> color(drafts.size(), kWhite);
  std::vector<size_t> path;
  size_t cycles = 0;
  for (size_t root = 0; root < drafts.size(); ++root) {
    if (color[root] != kWhite) continue;
    std::vector<std::pair<size_t, size_t>> stack{{root, 0}};
    color[root] = kGray;
    path.assign(1, root);
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == edges[node].size()) {
        color[node] = kBlack;
        stack.pop_back();
        path.pop_back();
        continue;
      }
      const Edge& e = edges[node][next++];
      if (color[e.target] == kWhite) {
        color[e.target] = kGray;
        path.push_back(e.target);
        stack.push_back({e.target, 0});
      } else if (color[e.target] == kGray && ++cycles <= kMaxCyclesReported) {
        auto from = std::find(path.begin(), path.end(), e.target);
        size_t len = static_cast<size_t>(path.end() - from);
        std::string msg = "dependency cycle: ";
        for (size_t k = 0; k < len; ++k) {
          // A long cycle keeps its ends; the middle adds nothing to fix.
          if (len > 2 * kCycleEnds && k == kCycleEnds) {
            msg +=
                "... (" + std::to_string(len - 2 * kCycleEnds) + " more) -> ";
            k = len - kCycleEnds;
          }
          msg += drafts[*(from + static_cast<ptrdiff_t>(k))].name + " -> ";
        }
        errors.Add(e.where, msg + drafts[e.target].name);
      }
    }
  }
  if (cycles > kMaxCyclesReported) {
    errors.Add({}, std::to_string(cycles - kMaxCyclesReported) +
                       " more dependency cycles not shown");
  }
}

}  // namespace drover
