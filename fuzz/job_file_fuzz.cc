// libFuzzer target for job files: the bytes are a job file. Whatever they
// hold, parsing must return (errors or a job) without crashing, leaking or
// tripping a sanitizer; when the file validates, every template in it is
// rendered and every condition evaluated, as the scheduler would.
//
//   fuzz/job_file_fuzz -max_len=4096 CORPUS_DIR tests/data/good tests/data/bad
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "drover/expression.h"
#include "drover/job_spec.h"

namespace {

// Small limits keep each input fast; the limits themselves are exercised
// by the unit tests.
constexpr drover::ExpressionLimits kLimits{/*max_steps=*/20000,
                                           /*max_memory=*/1 << 20,
                                           /*max_result=*/64 << 10};

void RenderTask(const drover::TaskSpec& task,
                const drover::ExpressionContext& ctx,
                const drover::ExpressionContext& env_ctx) {
  (void)drover::RenderTemplate(task.image, ctx, kLimits);
  (void)drover::RenderTemplate(task.run, ctx, kLimits);
  for (const std::string& arg : task.cmd) {
    (void)drover::RenderTemplate(arg, ctx, kLimits);
  }
  for (const auto& [name, value] : task.env) {
    (void)drover::RenderTemplate(value, env_ctx, kLimits);
  }
  (void)drover::EvaluateCondition(task.if_expr, ctx, kLimits);
  for (const drover::TaskSpec& hook : task.pre) RenderTask(hook, ctx, env_ctx);
  for (const drover::TaskSpec& hook : task.post) {
    RenderTask(hook, ctx, env_ctx);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  drover::ParseResult result = drover::ParseJobText(text, "fuzz.toml");
  for (const drover::Diagnostic& d : result.errors) (void)d.ToString();
  if (!result.job) return 0;

  const drover::JobSpec& job = *result.job;
  drover::ExpressionContext ctx;
  ctx.inputs = job.inputs;
  ctx.job_id = "fuzz-job";
  ctx.job_name = job.name;
  for (const drover::TaskSpec& task : job.tasks) {
    if (!task.var.empty()) ctx.tasks[task.var] = "output of " + task.name;
  }
  drover::ExpressionContext env_ctx = ctx;
  env_ctx.secrets = job.secrets;
  for (const drover::TaskSpec& task : job.tasks) RenderTask(task, ctx, env_ctx);
  return 0;
}
