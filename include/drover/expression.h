// Expressions: the `{{ … }}` parts of job files, in a sandboxed Lua 5.4.
//
// A template is text with zero or more `{{ expr }}` parts; an expression is
// a Lua expression (with `!=` accepted for `~=`) that may read `inputs.X`,
// `tasks.X`, `job.id`, `job.name` and, where allowed, `secrets.X`, and call
// the functions listed in docs/JOBS.md. It runs with no library that touches
// files, processes, the network or the clock, under a step and a memory cap.
//
// Called by the job-file parser (syntax only) and by the scheduler when it
// resolves a task for dispatch. Thread-compatible: each call builds its own
// Lua state, so concurrent calls are safe.
#ifndef DROVER_EXPRESSION_H_
#define DROVER_EXPRESSION_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "drover/status.h"

namespace drover {

// One `{{ … }}` part found in a template.
struct ExpressionPart {
  size_t offset = 0;   // of the `{{` in the template text
  std::string source;  // the expression between the braces, trimmed
};

// Splits `text` into its `{{ … }}` parts. An unterminated `{{` is an error
// whose message names its offset.
Result<std::vector<ExpressionPart>> FindExpressions(std::string_view text);

// Checks that `expr` compiles. The error message says what is wrong (Lua's
// own words, without the chunk name). Does not run anything.
Status CheckExpression(std::string_view expr);

// Checks every part of a template; `allow_secrets` false makes a reference
// to `secrets` an error.
Status CheckTemplate(std::string_view text, bool allow_secrets);

// What an expression can see.
struct ExpressionContext {
  std::map<std::string, std::string> inputs;
  std::map<std::string, std::string> tasks;    // var name -> output
  std::map<std::string, std::string> secrets;  // empty where not allowed
  std::string job_id;
  std::string job_name;
};

struct ExpressionLimits {
  uint64_t max_steps = 100000;       // Lua VM instructions (counted in 1000s)
  size_t max_memory = 4 << 20;       // bytes of Lua heap
  size_t max_result = 1 << 20;       // bytes of rendered text
};

// Renders a template: each part evaluated and turned into text (nil is "",
// booleans "true"/"false", numbers without a trailing ".0").
Result<std::string> RenderTemplate(std::string_view text,
                                   const ExpressionContext& ctx,
                                   const ExpressionLimits& limits = {});

// Evaluates an `if`: a template that is a single `{{ expr }}` is true unless
// the value is false or nil; any other template is rendered, and "", "false"
// and "0" are false. An empty condition is true.
Result<bool> EvaluateCondition(std::string_view text,
                               const ExpressionContext& ctx,
                               const ExpressionLimits& limits = {});

}  // namespace drover

#endif  // DROVER_EXPRESSION_H_
