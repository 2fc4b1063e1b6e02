// The watched directory, through a real droverd: what is taken, what is
// left alone, what is refused, and exactly-once across SIGKILLs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "cluster.h"

namespace drover::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string JobText(const std::string& name) {
  return "name = \"" + name + "\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n";
}

// Job names of every stored job, with how often each occurs.
std::map<std::string, int> JobNames(Cluster& c) {
  ListRequest req;
  req.limit = 10000;
  auto reply = c.client().Call<ListReply>(req);
  REQUIRE(reply.ok());
  std::map<std::string, int> names;
  for (const JobView& j : reply->jobs) ++names[j.name];
  return names;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TEST_CASE("Watch.EveryKindOfFileEndsWhereItShould") {
  Cluster c;
  const std::string in = c.dir() + "/inbox";
  fs::create_directories(in);
  WriteFile(in + "/early.toml", JobText("early"));  // present at start
  c.StartScheduler({"--watch-dir", in});
  auto processed = [&](const std::string& f) {
    return Cluster::Eventually(
        [&] { return fs::exists(in + "/processed/" + f + ".job"); }, 10s);
  };
  CHECK(processed("early.toml"));

  // Written in place.
  WriteFile(in + "/good.toml", JobText("good"));
  // Moved in after being written elsewhere under an ignored name.
  WriteFile(in + "/moved.toml.tmp", JobText("moved"));
  fs::rename(in + "/moved.toml.tmp", in + "/moved.toml");
  // Invalid: an unknown key and a bad duration.
  WriteFile(in + "/bad.toml",
            "name = \"bad\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n"
            "timeout = \"soon\"\nfrobnicate = 1\n");
  // Ignored names stay where they are, untouched.
  for (const char* ignored : {".hidden.toml", "draft.toml.tmp", "backup.toml~",
                              "notes.txt"}) {
    WriteFile(in + "/" + ignored, JobText(ignored));
  }
  // The same content twice under two names is two jobs.
  WriteFile(in + "/twin-a.toml", JobText("twin"));
  WriteFile(in + "/twin-b.toml", JobText("twin"));

  CHECK(processed("good.toml"));
  CHECK(processed("moved.toml"));
  CHECK(processed("twin-a.toml"));
  CHECK(processed("twin-b.toml"));
  REQUIRE(Cluster::Eventually(
      [&] { return fs::exists(in + "/failed/bad.toml.error"); }, 10s));
  CHECK(fs::exists(in + "/failed/bad.toml"));
  CHECK(!fs::exists(in + "/bad.toml"));
  const std::string errors = ReadFile(in + "/failed/bad.toml.error");
  CHECK(errors.find("bad.toml:5:") != std::string::npos);  // the timeout
  CHECK(errors.find("bad.toml:6:") != std::string::npos);  // the unknown key
  CHECK(errors.find(": error: ") != std::string::npos);
  // The same lines `drover validate` prints.
  auto v = RunCommand({BuildPath("drover"), "validate",
                       in + "/failed/bad.toml"});
  CHECK(v.exit_code == 2);
  CHECK(fs::path(in + "/failed/bad.toml").filename() == "bad.toml");

  // A half-written file is not taken while its writer holds it open.
  const std::string half = in + "/half.toml";
  int fd = open(half.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  const std::string text = JobText("half");
  REQUIRE(write(fd, text.data(), 10) == 10);
  std::this_thread::sleep_for(500ms);
  CHECK(fs::exists(half));
  CHECK(!fs::exists(in + "/failed/half.toml"));
  REQUIRE(write(fd, text.data() + 10, text.size() - 10) ==
          static_cast<ssize_t>(text.size() - 10));
  close(fd);
  CHECK(processed("half.toml"));

  for (const char* ignored : {".hidden.toml", "draft.toml.tmp", "backup.toml~",
                              "notes.txt"}) {
    CHECK_MESSAGE(fs::exists(in + "/" + ignored), ignored);
  }
  // Each .job names a stored job of the right name.
  for (const char* f : {"early", "good", "moved", "half"}) {
    const std::string id =
        Trim(ReadFile(in + "/processed/" + std::string(f) + ".toml.job"));
    CHECK(c.Status(id).name == f);
  }
  auto names = JobNames(c);
  CHECK(names["twin"] == 2);
  CHECK(names["good"] == 1);
  CHECK(names.count("bad") == 0);
  CHECK(names.count(".hidden.toml") == 0);

  // The same name dropped again later is a new submission.
  WriteFile(in + "/good.toml", JobText("good"));
  REQUIRE(Cluster::Eventually([&] { return JobNames(c)["good"] == 2; }, 10s));
  CHECK(Cluster::Eventually([&] { return !fs::exists(in + "/good.toml"); }));
}

TEST_CASE("Watch.EachFileSubmittedExactlyOnceAcrossKills") {
  Cluster c;
  const std::string in = c.dir() + "/inbox";
  fs::create_directories(in);
  std::mt19937 rng(7);
  constexpr int kRounds = 20;
  constexpr int kFiles = kRounds * 15;
  int written = 0;
  // SIGKILL droverd at random moments from its start, while it opens the
  // store, takes files in, commits, or moves them.
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < kFiles / kRounds; ++i, ++written) {
      const std::string name = "f" + std::to_string(written);
      WriteFile(in + "/" + name + ".toml", JobText(name));
    }
    c.StartScheduler({"--watch-dir", in}, /*wait_ready=*/false);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 150000));
    c.scheduler().Signal(SIGKILL);
    c.scheduler().Wait();
    c.DropScheduler();
  }
  c.StartScheduler({"--watch-dir", in});
  REQUIRE(Cluster::Eventually(
      [&] {
        for (int i = 0; i < kFiles; ++i) {
          if (!fs::exists(in + "/processed/f" + std::to_string(i) +
                          ".toml.job")) {
            return false;
          }
        }
        return true;
      },
      20s));
  auto names = JobNames(c);
  for (int i = 0; i < kFiles; ++i) {
    const std::string name = "f" + std::to_string(i);
    CHECK_MESSAGE(names[name] == 1, name);
    const std::string id =
        Trim(ReadFile(in + "/processed/" + name + ".toml.job"));
    CHECK(c.Status(id).name == name);
    CHECK(!fs::exists(in + "/" + name + ".toml"));
  }
  CHECK(names.size() == kFiles);
}

}  // namespace drover::testing
