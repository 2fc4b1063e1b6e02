// Fuzz target: the worker's policy settings as flags and config files
// give them. The bytes are read as limits ("memory=1g,cpus=2,pids=64"),
// which must come back the same through FormatLimits, and as a shell_uids
// range, which must be a non-empty range of non-zero uids.
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>

#include "drover/policy.h"
#include "shell_runtime.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  auto limits = drover::ParseLimits(data);
  if (limits.ok()) {
    auto again = drover::ParseLimits(drover::FormatLimits(*limits));
    assert(again.ok());
    assert(again->memory_bytes == limits->memory_bytes);
    assert(again->pids == limits->pids);
    drover::ContainerPolicy p;
    p.max_limits = *limits;
    (void)drover::ValidatePolicy(p);
  }
  auto range = drover::ParseUidRange(data);
  if (range.ok()) {
    assert(range->first > 0 && range->count > 0);
    assert(uint64_t{range->first} + range->count - 1 < 0xffffffffull);
  }
  return 0;
}
