// Tests for job-file parsing and validation (include/drover/job_spec.h).
//
// tests/data/good/*.toml must validate. Each tests/data/bad/*.toml ends with
// `# expect: LINE:COL: MESSAGE` lines naming every diagnostic the file must
// produce, in order, and may carry `# input: KEY=VALUE` overrides.
#include "drover/job_spec.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace drover {
namespace {

namespace fs = std::filesystem;

const fs::path kData = fs::path(DROVER_SOURCE_DIR) / "tests" / "data";

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> TomlFiles(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".toml") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Dump(const ParseResult& r) {
  std::string s;
  for (const Diagnostic& d : r.errors) s += d.ToString() + "\n";
  return s;
}

// Parses `text` and requires it to be valid.
JobSpec MustParse(std::string_view text,
                  const std::map<std::string, std::string>& inputs = {}) {
  ParseResult r = ParseJobText(text, "test.toml", inputs);
  REQUIRE_MESSAGE(r.ok(), Dump(r));
  REQUIRE(r.job.has_value());
  return *r.job;
}

// The messages of a text that must not validate.
std::vector<std::string> Errors(std::string_view text) {
  ParseResult r = ParseJobText(text, "test.toml");
  CHECK_FALSE(r.ok());
  CHECK_FALSE(r.job.has_value());
  std::vector<std::string> out;
  for (const Diagnostic& d : r.errors) out.push_back(d.message);
  return out;
}

const TaskSpec& Task(const JobSpec& job, std::string_view name) {
  for (const TaskSpec& t : job.tasks) {
    if (t.name == name) return t;
  }
  FAIL("no task " << name);
  return job.tasks.front();
}

using Deps = std::vector<std::string>;

TEST_CASE("JobSpec.GoodFilesValidate") {
  auto files = TomlFiles(kData / "good");
  REQUIRE(files.size() >= 6);
  for (const fs::path& f : files) {
    CAPTURE(f);
    ParseResult r = ParseJobFile(f.string());
    CHECK_MESSAGE(r.ok(), Dump(r));
    CHECK(r.job.has_value());
  }
}

TEST_CASE("JobSpec.BadFilesReportEveryErrorWithItsLocation") {
  auto files = TomlFiles(kData / "bad");
  REQUIRE(files.size() >= 15);
  for (const fs::path& f : files) {
    CAPTURE(f);
    std::map<std::string, std::string> inputs;
    std::vector<std::string> expected;
    std::istringstream lines(ReadAll(f));
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("# expect: ", 0) == 0) expected.push_back(line.substr(10));
      if (line.rfind("# input: ", 0) == 0) {
        size_t eq = line.find('=');
        inputs[line.substr(9, eq - 9)] = line.substr(eq + 1);
      }
    }
    REQUIRE_FALSE(expected.empty());
    ParseResult r = ParseJobFile(f.string(), inputs);
    CHECK_FALSE(r.job.has_value());
    std::vector<std::string> got;
    for (const Diagnostic& d : r.errors) {
      CHECK(d.file == f.string());
      got.push_back(std::to_string(d.where.line) + ":" +
                    std::to_string(d.where.column) + ": " + d.message);
    }
    CHECK(got == expected);
  }
}

TEST_CASE("JobSpec.SpecExampleResolvesEveryKey") {
  ParseResult r = ParseJobFile((kData / "good" / "spec_example.toml").string());
  REQUIRE_MESSAGE(r.ok(), Dump(r));
  const JobSpec& job = *r.job;
  CHECK(job.name == "convert a video");
  CHECK(job.description == "optional text");
  CHECK(job.queue == "default");
  CHECK(job.inputs.at("source") == "https://example.com/in.ogv");
  CHECK(job.secrets.at("TOKEN") == "s3cr3t");
  REQUIRE(job.tasks.size() == 2);

  const TaskSpec& fetch = job.tasks[0];
  CHECK(fetch.name == "fetch");
  CHECK(fetch.image == "busybox:1.36");
  CHECK(fetch.run == "wget -O /data/in.ogv \"$SOURCE\"");
  CHECK(fetch.env.at("SOURCE") == "{{ inputs.source }}");
  CHECK(fetch.volumes == Deps{"/data"});
  CHECK(fetch.var == "fetched");
  CHECK(fetch.runtime == RuntimeKind::kDocker);
  CHECK(fetch.network == "none");
  CHECK(fetch.depends_on.empty());
  CHECK(fetch.timeout == Millis(600000));  // from [defaults]
  CHECK(fetch.retry.limit == 2);           // from [defaults]
  CHECK(fetch.where.line == 16);
  CHECK(fetch.where.column == 1);

  const TaskSpec& convert = job.tasks[1];
  CHECK(convert.depends_on == Deps{"fetch"});
  CHECK(convert.if_expr == "{{ inputs.convert != 'no' }}");
  CHECK(convert.timeout == Millis(300000));
  CHECK(convert.retry.limit == 3);
  CHECK(convert.retry.initial_delay == Millis(1000));
  CHECK(convert.retry.max_delay == Millis(60000));
  CHECK(convert.retry.scaling == 2.0);
  CHECK(convert.limits.cpus == 1.5);
  CHECK(convert.limits.memory_bytes == 512LL << 20);
  CHECK(convert.queue == "transcoding");
}

TEST_CASE("JobSpec.TasksWithoutDependsOnFollowTheTaskAbove") {
  JobSpec job = MustParse(R"(
name = "order"
[[tasks]]
name = "a"
run = "true"
[[tasks]]
name = "b"
run = "true"
[[tasks]]
name = "c"
run = "true"
depends_on = []
[[tasks]]
name = "d"
run = "true"
[[tasks]]
name = "e"
run = "true"
depends_on = ["a", "c"]
)");
  CHECK(Task(job, "a").depends_on.empty());  // the first task is a root
  CHECK(Task(job, "b").depends_on == Deps{"a"});
  CHECK(Task(job, "c").depends_on.empty());  // [] makes a root
  CHECK(Task(job, "d").depends_on == Deps{"c"});
  CHECK(Task(job, "e").depends_on == Deps{"a", "c"});
  // File order is kept.
  std::vector<std::string> names;
  for (const TaskSpec& t : job.tasks) names.push_back(t.name);
  CHECK(names == Deps{"a", "b", "c", "d", "e"});
}

TEST_CASE("JobSpec.DagHasParallelBranches") {
  ParseResult r = ParseJobFile((kData / "good" / "dag.toml").string());
  REQUIRE(r.ok());
  CHECK(Task(*r.job, "b").depends_on == Deps{"a"});
  CHECK(Task(*r.job, "c").depends_on == Deps{"a"});
  CHECK(Task(*r.job, "d").depends_on == Deps{"b", "c"});
  CHECK(Task(*r.job, "e").depends_on.empty());
}

TEST_CASE("JobSpec.DefaultsApplyToTasksThatDoNotSetThem") {
  ParseResult r = ParseJobFile((kData / "good" / "defaults.toml").string());
  REQUIRE_MESSAGE(r.ok(), Dump(r));
  const TaskSpec& in = Task(*r.job, "inherits");
  CHECK(in.timeout == Millis(600000));
  CHECK(in.retry.limit == 2);
  CHECK(in.retry.max_delay == Millis(30000));
  CHECK(in.retry.initial_delay == Millis(1000));  // built-in default
  CHECK(in.limits.memory_bytes == 1LL << 30);
  CHECK(in.limits.cpus == 0);
  CHECK(in.network == "host");
  CHECK(in.image == "alpine:3.19");
  CHECK(in.runtime == RuntimeKind::kDocker);  // because of the default image
  CHECK(in.env == std::map<std::string, std::string>{{"LEVEL", "info"},
                                                     {"MODE", "fast"}});
  CHECK(in.workdir == "/work");
  CHECK(in.user == "1000:1000");
  CHECK(in.queue == "batch");

  const TaskSpec& over = Task(*r.job, "overrides");
  CHECK(over.timeout == Millis(60000));
  CHECK(over.retry.limit == 5);
  CHECK(over.retry.max_delay == Millis(30000));  // fields merge one by one
  CHECK(over.limits.cpus == 2);
  CHECK(over.limits.memory_bytes == 1LL << 30);
  CHECK(over.network == "none");
  CHECK(over.image == "busybox:1.36");
  CHECK(over.env == std::map<std::string, std::string>{{"LEVEL", "info"},
                                                       {"MODE", "slow"}});
  CHECK(over.workdir == "/tmp");
  CHECK(over.user == "root");
  CHECK(over.queue == "fast");

  const TaskSpec& local = Task(*r.job, "local");
  CHECK(local.runtime == RuntimeKind::kShell);
  REQUIRE(local.post.size() == 1);
  const TaskSpec& cleanup = local.post[0];
  // [defaults] reach pre/post tasks too, except retry, which is the
  // parent's business; their queue is the parent's.
  CHECK(cleanup.image == "alpine:3.19");
  CHECK(cleanup.runtime == RuntimeKind::kShell);
  CHECK(cleanup.timeout == Millis(600000));
  CHECK(cleanup.env.at("LEVEL") == "info");
  CHECK(cleanup.retry.limit == 0);
  CHECK(cleanup.queue == "batch");
}

TEST_CASE("JobSpec.QueueComesFromTaskThenDefaultsThenJob") {
  const char* kTasks = R"(
[[tasks]]
name = "own"
run = "true"
queue = "mine"
[[tasks]]
name = "other"
run = "true"
)";
  JobSpec none = MustParse(std::string("name = \"j\"\n") + kTasks);
  CHECK(none.queue == "default");
  CHECK(Task(none, "own").queue == "mine");
  CHECK(Task(none, "other").queue == "default");

  JobSpec job =
      MustParse(std::string("name = \"j\"\nqueue = \"jobq\"\n") + kTasks);
  CHECK(job.queue == "jobq");
  CHECK(Task(job, "other").queue == "jobq");

  JobSpec dflt = MustParse(std::string("name = \"j\"\nqueue = \"jobq\"\n"
                                       "[defaults]\nqueue = \"dq\"\n") +
                           kTasks);
  CHECK(Task(dflt, "own").queue == "mine");
  CHECK(Task(dflt, "other").queue == "dq");
}

TEST_CASE("JobSpec.RuntimeFollowsImage") {
  JobSpec job = MustParse(R"(
name = "runtimes"
[[tasks]]
name = "container"
image = "busybox"
run = "true"
[[tasks]]
name = "plain"
run = "true"
[[tasks]]
name = "forced-shell"
image = "busybox"
runtime = "shell"
run = "true"
[[tasks]]
name = "image-default"
image = "hello-world"
)");
  CHECK(Task(job, "container").runtime == RuntimeKind::kDocker);
  CHECK(Task(job, "plain").runtime == RuntimeKind::kShell);
  CHECK(Task(job, "forced-shell").runtime == RuntimeKind::kShell);
  CHECK(Task(job, "image-default").runtime == RuntimeKind::kDocker);
  CHECK(Task(job, "image-default").run.empty());
  CHECK(Task(job, "image-default").cmd.empty());
}

TEST_CASE("JobSpec.InputOverridesReplaceDeclaredInputs") {
  const char* kJob = R"(
name = "inputs"
[inputs]
source = "a"
keep = "b"
[[tasks]]
name = "t"
run = "echo {{ inputs.source }}"
)";
  JobSpec job = MustParse(kJob, {{"source", "override"}});
  CHECK(job.inputs.at("source") == "override");
  CHECK(job.inputs.at("keep") == "b");

  ParseResult r = ParseJobText(kJob, "in.toml", {{"nope", "x"}});
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].where.line == 3);  // the [inputs] table
  CHECK(r.errors[0].message ==
        "--input 'nope': the job declares no such input in [inputs]");
  CHECK_FALSE(r.job.has_value());

  // Without an [inputs] table there is no better place than 0:0.
  r = ParseJobText("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n",
                   "in.toml", {{"x", "1"}});
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].where.line == 0);
  CHECK(r.errors[0].ToString() ==
        "in.toml:0:0: error: --input 'x': the job declares no such input in "
        "[inputs]");
}

TEST_CASE("JobSpec.DiagnosticFormat") {
  Diagnostic d{"jobs/a.toml", {12, 7}, "something is wrong"};
  CHECK(d.ToString() == "jobs/a.toml:12:7: error: something is wrong");
  ParseResult r = ParseJobText("name = 1\n", "x.toml");
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].ToString() ==
        "x.toml:1:1: error: missing required key 'tasks'; add at least one "
        "[[tasks]]");
  CHECK(r.errors[1].ToString() ==
        "x.toml:1:8: error: 'name' must be a string, not an integer");
}

TEST_CASE("JobSpec.MessagesStayOnOneLine") {
  auto e = Errors(
      "name = \"j\"\n\"odd\\nkey\" = 1\n[[tasks]]\nname = \"a\\tb\"\n"
      "run = \"\"\"{{ inputs.x +\n 1 + }}\"\"\"\n");
  REQUIRE(e.size() == 3);
  CHECK(e[0] == "unknown key 'odd\\nkey'");
  CHECK(e[1] ==
        "task name \"a\\x09b\" must be non-empty and hold only letters, "
        "digits, '_', '.' and '-'");
  CHECK(e[2] ==
        "'run' in task #1: expression 'inputs.x +\\n 1 +': unexpected symbol "
        "near <eof>");
}

TEST_CASE("JobSpec.TomlSyntaxErrorIsOneDiagnostic") {
  ParseResult r = ParseJobText("name = \"x\"\n[[tasks]\n", "s.toml");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].where.line == 2);
  CHECK(r.errors[0].where.column > 0);
  CHECK_FALSE(r.job.has_value());
  // Not UTF-8, an embedded NUL, and nothing at all.
  CHECK(Errors(std::string("name = \"\xff\"\n")).size() == 1);
  CHECK(Errors(std::string("name = \"a\0b\"\n", 12)).size() == 1);
  CHECK(Errors("").size() == 2);
}

TEST_CASE("JobSpec.UnreadableFilesAreOneDiagnostic") {
  ParseResult r = ParseJobFile((kData / "no-such-file.toml").string());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message.find("cannot open") != std::string::npos);
  r = ParseJobFile(kData.string());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message == "not a regular file");
}

TEST_CASE("JobSpec.FilesOverOneMebibyteAreRefused") {
  std::string text =
      "name = \"big\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n";
  text += "# " + std::string((1 << 20) - text.size() - 3, 'x') + "\n";
  REQUIRE(text.size() == 1 << 20);
  CHECK(ParseJobText(text, "big.toml").ok());  // exactly at the cap
  text += "#\n";
  ParseResult r = ParseJobText(text, "big.toml");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message.find("the limit is 1048576") != std::string::npos);

  fs::path path = fs::temp_directory_path() / "drover_job_spec_big.toml";
  std::ofstream(path, std::ios::binary) << text;
  r = ParseJobFile(path.string());
  fs::remove(path);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message ==
        "job file is 1048578 bytes; the limit is 1048576");
}

TEST_CASE("JobSpec.AtMostTenThousandTasks") {
  auto job = [](int n) {
    std::string text = "name = \"many\"\n";
    for (int i = 0; i < n; ++i) {
      text += "[[tasks]]\nname = \"t" + std::to_string(i) + "\"\nrun = \"x\"\n";
    }
    return text;
  };
  JobSpec ok = MustParse(job(10000));
  CHECK(ok.tasks.size() == 10000);
  CHECK(ok.tasks.back().depends_on == Deps{"t9998"});
  auto errors = Errors(job(10001));
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == "a job may have at most 10000 tasks, not 10001");
}

TEST_CASE("JobSpec.LongCycleIsFoundWithoutDeepRecursion") {
  // 5,000 tasks in sequence, the first depending on the last.
  std::string text =
      "name = \"ring\"\n[[tasks]]\nname = \"t0\"\nrun = \"x\"\n"
      "depends_on = [\"t4999\"]\n";
  for (int i = 1; i < 5000; ++i) {
    text += "[[tasks]]\nname = \"t" + std::to_string(i) + "\"\nrun = \"x\"\n";
  }
  auto errors = Errors(text);
  REQUIRE(errors.size() == 1);
  // Long cycles keep their ends.
  CHECK(errors[0] ==
        "dependency cycle: t0 -> t4999 -> t4998 -> t4997 -> t4996 -> ... "
        "(4990 more) -> t5 -> t4 -> t3 -> t2 -> t1 -> t0");
}

TEST_CASE("JobSpec.AtMostAThousandDiagnosticsFirstInFileOrder") {
  std::string text = "name = \"j\"\n[[tasks]]\nname = \"t\"\nrun = \"x\"\n";
  for (int i = 0; i < 1500; ++i) text += "bad" + std::to_string(i) + " = 1\n";
  ParseResult r = ParseJobText(text, "many.toml");
  REQUIRE(r.errors.size() == 1001);
  CHECK(r.errors[0].where.line == 5);
  CHECK(r.errors[0].message == "unknown key 'bad0' in task 't'");
  CHECK(r.errors[999].where.line == 1004);
  CHECK(r.errors[1000].message == "500 more errors not shown");
}

TEST_CASE("JobSpec.SuggestionsOnlyForCloseKeys") {
  auto one = [](std::string_view key) {
    auto e = Errors("name = \"j\"\n[[tasks]]\nname = \"t\"\nrun = \"x\"\n" +
                    std::string(key) + " = \"v\"\n");
    REQUIRE(e.size() == 1);
    return e[0];
  };
  CHECK(one("imgae") ==
        "unknown key 'imgae' in task 't'; did you mean "
        "'image'?");
  CHECK(one("timeuot") ==
        "unknown key 'timeuot' in task 't'; did you mean 'timeout'?");
  CHECK(one("QUEUE") ==
        "unknown key 'QUEUE' in task 't'; did you mean "
        "'queue'?");
  CHECK(one("priority") == "unknown key 'priority' in task 't'");
  CHECK(one("x") == "unknown key 'x' in task 't'");
}

TEST_CASE("JobSpec.CyclesAndSelfDependencies") {
  auto e = Errors(R"(
name = "c"
[[tasks]]
name = "a"
run = "x"
depends_on = ["a"]
[[tasks]]
name = "b"
run = "x"
depends_on = ["c"]
[[tasks]]
name = "c"
run = "x"
)");
  REQUIRE(e.size() == 2);
  CHECK(e[0] == "task 'a' depends on itself");
  CHECK(e[1] == "dependency cycle: b -> c -> b");
}

TEST_CASE("JobSpec.DurationsParse") {
  CHECK(ParseDuration("1500ms") == Millis(1500));
  CHECK(ParseDuration("30s") == Millis(30000));
  CHECK(ParseDuration("5m") == Millis(300000));
  CHECK(ParseDuration("2h") == Millis(7200000));
  CHECK(ParseDuration("1h30m") == Millis(5400000));
  CHECK(ParseDuration("1d") == Millis(86400000));
  CHECK(ParseDuration("1.5s") == Millis(1500));
  CHECK(ParseDuration("45") == Millis(45000));
  CHECK(ParseDuration("0.25") == Millis(250));
  CHECK(ParseDuration(" 10s ") == Millis(10000));
  CHECK(ParseDuration("0s") == Millis(0));
  for (const char* bad : {"", "s", "-1s", "5 m", "1h30", "10x", "1.s", ".5s",
                          "1e3s", "5M", "nan", "inf", "1ms2", "36500000d"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseDuration(bad).has_value());
  }
}

TEST_CASE("JobSpec.DurationsFormatShortly") {
  CHECK(FormatDuration(Millis(0)) == "0s");
  CHECK(FormatDuration(Millis(250)) == "250ms");
  CHECK(FormatDuration(Millis(1500)) == "1.5s");
  CHECK(FormatDuration(Millis(120000)) == "2m");
  CHECK(FormatDuration(Millis(90000)) == "1m30s");
  CHECK(FormatDuration(Millis(5400000)) == "1h30m");
  CHECK(FormatDuration(Millis(86400000)) == "1d");
  CHECK(FormatDuration(Millis(61050)) == "1m1.05s");
  CHECK(FormatDuration(Millis(-1500)) == "-1.5s");
  CHECK_FALSE(FormatDuration(Millis::min()).empty());
  for (int64_t ms : {1, 999, 1000, 1001, 59999, 3600001, 90061001}) {
    CAPTURE(ms);
    CHECK(ParseDuration(FormatDuration(Millis(ms))) == Millis(ms));
  }
}

TEST_CASE("JobSpec.SizesParseInBinaryUnits") {
  CHECK(ParseSize("1024") == 1024);
  CHECK(ParseSize("64k") == 64 << 10);
  CHECK(ParseSize("512m") == 512LL << 20);
  CHECK(ParseSize("1g") == 1LL << 30);
  CHECK(ParseSize("2t") == 2LL << 40);
  CHECK(ParseSize("512MiB") == 512LL << 20);
  CHECK(ParseSize("512MB") == 512LL << 20);
  CHECK(ParseSize("512 mb") == 512LL << 20);
  CHECK(ParseSize("1.5g") == 3LL << 29);
  CHECK(ParseSize("10b") == 10);
  for (const char* bad :
       {"", "m", "-1m", "12q", "1e9", "1 2m", "1..5g", "99999999999t"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseSize(bad).has_value());
  }
}

TEST_CASE("JobSpec.RuntimeNames") {
  CHECK(RuntimeName(RuntimeKind::kDocker) == "docker");
  CHECK(RuntimeName(RuntimeKind::kShell) == "shell");
}

TEST_CASE("JobSpec.DocsExamplesValidate") {
  std::string doc = ReadAll(fs::path(DROVER_SOURCE_DIR) / "docs" / "JOBS.md");
  REQUIRE_FALSE(doc.empty());
  int blocks = 0;
  size_t pos = 0;
  while ((pos = doc.find("```toml\n", pos)) != std::string::npos) {
    size_t start = pos + 8;
    size_t end = doc.find("\n```", start);
    REQUIRE(end != std::string::npos);
    std::string block = doc.substr(start, end - start + 1);
    ++blocks;
    CAPTURE(blocks);
    CAPTURE(block);
    ParseResult r = ParseJobText(block, "JOBS.md");
    CHECK_MESSAGE(r.ok(), Dump(r));
    pos = end + 4;
  }
  CHECK(blocks >= 5);
}

// What drover keeps of a job file on disk has no secret in it, and every
// other line where it was: the same job, with empty secrets.
TEST_CASE("JobSpec.SecretValuesAreRemovedFromTheKeptText") {
  const std::string text = R"(name = "s"  # a comment stays
[secrets]
TOKEN = "s3cr3t-é"   # the line stays too
PEM = """-----BEGIN-----
abc
-----END-----"""
RAW = 'lit-secret'
[[tasks]]
name = "t"
run = "echo {{ inputs.x }}"
env = { T = "{{ secrets.TOKEN }}" }
[inputs]
x = "1"
)";
  const std::string kept = WithoutSecretValues(text);
  for (const char* secret : {"s3cr3t", "BEGIN", "abc", "lit-secret"}) {
    CHECK_MESSAGE(kept.find(secret) == std::string::npos, secret);
  }
  CHECK(kept.find("# a comment stays") != std::string::npos);
  CHECK(kept.find("TOKEN = \"\"   # the line stays too") != std::string::npos);
  CHECK(std::count(kept.begin(), kept.end(), '\n') ==
        std::count(text.begin(), text.end(), '\n'));
  ParseResult before = ParseJobText(text, "s.toml");
  ParseResult after = ParseJobText(kept, "s.toml");
  REQUIRE(before.ok());
  REQUIRE(after.ok());
  CHECK(after.job->secrets ==
        std::map<std::string, std::string>{{"PEM", ""}, {"RAW", ""}, {"TOKEN", ""}});
  CHECK(after.job->tasks[0].where.line == before.job->tasks[0].where.line);
  CHECK(after.job->tasks[0].env == before.job->tasks[0].env);
  CHECK(after.job->inputs == before.job->inputs);

  // Inline tables and dotted keys too.
  const std::string inline_text =
      "name = \"i\"\nsecrets = { A = \"aaa-secret\", B = \"bbb-secret\" }\n"
      "secrets2 = 1\n";
  const std::string inline_kept = WithoutSecretValues(inline_text);
  CHECK(inline_kept == "name = \"i\"\nsecrets = { A = \"\", B = \"\" }\n"
                       "secrets2 = 1\n");
  CHECK(WithoutSecretValues("name = \"d\"\nsecrets.K = \"dotted-secret\"\n") ==
        "name = \"d\"\nsecrets.K = \"\"\n");
  // A layout the splice cannot keep is written anew, still without them.
  const std::string odd =
      "name = \"o\"\nsecrets = { A = \"\"\"x\ny-secret\"\"\" }\n";
  const std::string odd_kept = WithoutSecretValues(odd);
  CHECK(odd_kept.find("y-secret") == std::string::npos);
  // Nothing to remove, or not TOML at all: as it was.
  const std::string plain = "name = \"p\"\n[[tasks]]\nname = \"t\"\nrun = \"x\"\n";
  CHECK(WithoutSecretValues(plain) == plain);
  CHECK(WithoutSecretValues("[secrets\nA = \"x\"") == "[secrets\nA = \"x\"");
}

}  // namespace
}  // namespace drover
