// The container policy's checks (include/drover/policy.h), and the job-file
// keys they read (cap_add, limits.pids).
#include "drover/policy.h"

#include <doctest/doctest.h>

namespace drover {
namespace {

TaskSpec Docker(const std::string& toml_task) {
  ParseResult r = ParseJobText(
      "name = \"p\"\n[[tasks]]\nname = \"t\"\n" + toml_task, "p.toml");
  for (const auto& e : r.errors) MESSAGE(e.ToString());
  REQUIRE(r.ok());
  return r.job->tasks.at(0);
}

std::string Refusal(const ContainerPolicy& p, const std::string& toml_task) {
  Status st = CheckTask(p, Docker(toml_task));
  return st.ok() ? "" : st.message();
}

TEST_CASE("Policy.ImagesAndNetworksByPattern") {
  ContainerPolicy p;
  p.allowed_images = {"busybox:*", "registry.lan:5000/*"};
  CHECK(Refusal(p, "image = \"busybox:1.36\"") == "");
  CHECK(Refusal(p, "image = \"registry.lan:5000/team/app:2\"") == "");
  CHECK(Refusal(p, "image = \"evil/miner\"") ==
        "image 'evil/miner' is not allowed by allowed_images (busybox:*, "
        "registry.lan:5000/*)");
  // A pre task with no image of its own uses the task's; one with its own
  // is checked as well, and named.
  CHECK(Refusal(p, "image = \"busybox:1\"\n[[tasks.pre]]\nname = \"x\"\n"
                   "image = \"alpine\"\nrun = \"true\"") ==
        "image 'alpine' of pre task 'x' is not allowed by allowed_images "
        "(busybox:*, registry.lan:5000/*)");
  // A templated image is left to the check at assignment.
  CHECK(Refusal(p, "image = \"{{ inputs.i }}\"") == "");
  CHECK(!CheckTask(p, TaskRun{.image = "alpine"}).ok());

  ContainerPolicy d;  // defaults: none and bridge
  CHECK(Refusal(d, "image = \"a\"") == "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"bridge\"") == "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"host\"") ==
        "network 'host' is not allowed by allowed_networks (none, bridge)");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"lab\"") != "");
  // "*" lists named networks, but never host or another container's.
  d.allowed_networks = {"*"};
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"lab\"") == "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"host\"") != "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"container:db\"") != "");
  d.allowed_networks = {"host", "container:db-*"};
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"host\"") == "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"container:db-1\"") == "");
  CHECK(Refusal(d, "image = \"a\"\nnetwork = \"container:web\"") != "");
}

TEST_CASE("Policy.LimitsAndCapabilities") {
  ContainerPolicy p;
  p.max_limits = {2, int64_t{1} << 30, 100};
  p.default_limits = {0, 512 << 20, 50};
  p.cap_add_allowed = {"NET_ADMIN"};
  CHECK(Refusal(p, "image = \"a\"\nlimits = { memory = \"1g\", cpus = 2, "
                   "pids = 100 }") == "");
  CHECK(Refusal(p, "image = \"a\"\nlimits = { memory = \"2g\" }") ==
        "limits.memory 2g is over max_limits.memory 1g");
  CHECK(Refusal(p, "image = \"a\"\nlimits = { cpus = 2.5 }") ==
        "limits.cpus 2.5 is over max_limits.cpus 2");
  CHECK(Refusal(p, "image = \"a\"\nlimits = { pids = 101 }") ==
        "limits.pids 101 is over max_limits.pids 100");
  CHECK(Refusal(p, "image = \"a\"\ncap_add = [\"cap_net_admin\"]") == "");
  CHECK(Refusal(p, "image = \"a\"\ncap_add = [\"SYS_ADMIN\"]") ==
        "cap_add SYS_ADMIN is not in cap_add_allowed (NET_ADMIN)");
  // What runs: the task's own, else the default, else the maximum.
  TaskRun own{.cpus = 1, .memory_bytes = 256 << 20};
  CHECK(EffectiveLimits(p, own) == WireLimits{1, 256 << 20, 50});
  CHECK(EffectiveLimits(p, TaskRun{}) == WireLimits{2, 512 << 20, 50});
  CHECK(ValidatePolicy(p).ok());
  p.default_limits.memory_bytes = int64_t{2} << 30;
  CHECK(ValidatePolicy(p).message() ==
        "default_limits.memory 2g is over max_limits.memory 1g");
}

TEST_CASE("Policy.LimitsAsFlagsWriteThem") {
  auto l = ParseLimits("memory=1g, cpus=1.5,pids=1024");
  REQUIRE(l.ok());
  CHECK(*l == WireLimits{1.5, int64_t{1} << 30, 1024});
  CHECK(FormatLimits(*l) == "memory=1g,cpus=1.5,pids=1024");
  CHECK(*ParseLimits(FormatLimits(*l)) == *l);
  CHECK(*ParseLimits("") == WireLimits{});
  CHECK(*ParseLimits("memory=0") == WireLimits{});
  CHECK(ParseLimits("disk=1g").status().message() ==
        "unknown limit 'disk': memory, cpus or pids");
  CHECK(!ParseLimits("memory=lots").ok());
  CHECK(!ParseLimits("cpus=-1").ok());
  CHECK(!ParseLimits("pids").ok());
}

TEST_CASE("Policy.RootUsers") {
  for (const char* root : {"", "root", "0", "0:0", "root:wheel", "00"}) {
    CHECK_MESSAGE(IsRootUser(root), root);
  }
  for (const char* other : {"1000", "nobody", "65534:65534", "10:0"}) {
    CHECK_MESSAGE(!IsRootUser(other), other);
  }
}

TEST_CASE("Policy.JobFileKeys") {
  TaskSpec t = Docker(
      "image = \"a\"\ncap_add = [\"net_admin\", \"CAP_SYS_TIME\"]\n"
      "limits = { pids = 64 }");
  CHECK(t.cap_add == std::vector<std::string>{"NET_ADMIN", "SYS_TIME"});
  CHECK(t.limits.pids == 64);
  ParseResult bad = ParseJobText(
      "name = \"p\"\n[[tasks]]\nname = \"t\"\nimage = \"a\"\n"
      "cap_add = [\"NET ADMIN\"]\nlimits = { pids = 0 }\n",
      "p.toml");
  REQUIRE(bad.errors.size() == 2);
  CHECK(bad.errors[0].ToString().find("p.toml:5:12: error:") == 0);
  CHECK(bad.errors[0].message.find("\"NET ADMIN\" is not a capability name") !=
        std::string::npos);
  CHECK(bad.errors[1].ToString().find("p.toml:6:19: error: 'limits.pids'") ==
        0);
}

}  // namespace
}  // namespace drover
