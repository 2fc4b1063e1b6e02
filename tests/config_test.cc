// Config files (--config FILE): ReadConfigFile and ApplyConfig directly,
// then the real droverd and drover-worker: located errors and exit 2 for a
// bad file, values from a good file in effect, flags over the file, and
// the shipped examples in config/ complete and loadable.
#include "drover/config.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>

#include "cluster.h"
#include "drover/keys.h"
#include "drover/cli.h"

namespace drover::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/drover-config-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) const {
    WriteFile(path_ + "/" + name, text);
    return path_ + "/" + name;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::string> Lines(const std::vector<Diagnostic>& errors) {
  std::vector<std::string> out;
  for (const Diagnostic& d : errors) out.push_back(d.ToString());
  return out;
}

// The shipped example with every `# key = value` line uncommented.
std::string Uncommented(const std::string& example) {
  static const std::regex kKeyLine("# ([a-z-]+ = .*)");
  std::istringstream in(example);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    out += (std::regex_match(line, m, kKeyLine) ? m[1].str() : line) + "\n";
  }
  return out;
}

// Long flag names in a --help text, but --help, --version and --config.
std::set<std::string> HelpFlags(const std::string& help) {
  std::set<std::string> flags;
  std::regex flag("--([a-z][a-z-]*)");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), flag);
       it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1];
    if (name != "help" && name != "version" && name != "config") {
      flags.insert(name);
    }
  }
  return flags;
}

std::set<std::string> KeyNames(const std::vector<ConfigKey>& keys) {
  std::set<std::string> names;
  for (const ConfigKey& k : keys) names.insert(k.name);
  return names;
}

}  // namespace

TEST_CASE("Config.ReadsEveryKindOfValue") {
  TempDir t;
  const std::string path = t.Write("w.toml",
                                   "# a comment\n"
                                   "tasks = \"ipc:///tmp/x\"\n"
                                   "queue = [\"a:1\", \"b:2\"]\n"
                                   "runtime = \"shell\"\n"
                                   "shutdown-grace = \"1m30s\"\n");
  ConfigFile f = ReadConfigFile(path, WorkerConfigKeys());
  REQUIRE_MESSAGE(f.ok(), Lines(f.errors).front());
  CHECK(f.values.at("tasks").values ==
        std::vector<std::string>{"ipc:///tmp/x"});
  CHECK(f.values.at("tasks").where.line == 2);
  CHECK(f.values.at("queue").values == std::vector<std::string>{"a:1", "b:2"});
  // One string where a list is expected is a list of one.
  CHECK(f.values.at("runtime").values == std::vector<std::string>{"shell"});
  CHECK(f.values.at("shutdown-grace").values ==
        std::vector<std::string>{"1m30s"});

  const std::string d = t.Write("d.toml", "heartbeat-liveness = 7\n");
  ConfigFile g = ReadConfigFile(d, DroverdConfigKeys());
  REQUIRE(g.ok());
  CHECK(g.values.at("heartbeat-liveness").values ==
        std::vector<std::string>{"7"});
}

TEST_CASE("Config.EveryBadValueIsLocatedInFileOrder") {
  TempDir t;
  const std::string path = t.Write("bad.toml",
                                   "api = 5\n"                        // 1
                                   "heartbeat-liveness = \"x\"\n"     // 2
                                   "heartbeat-interval = \"soon\"\n"  // 3
                                   "heartbeat_interval = \"1s\"\n"    // 4
                                   "frobnicate = true\n"              // 5
                                   "data-dir = [\"a\"]\n"             // 6
                                   "heartbeat-liveness2 = -1\n");     // 7
  ConfigFile f = ReadConfigFile(path, DroverdConfigKeys());
  const std::vector<std::string> lines = Lines(f.errors);
  REQUIRE(lines.size() == 7);
  CHECK(lines[0] == path + ":1:7: error: 'api' must be a string");
  CHECK(lines[1] == path +
                        ":2:22: error: 'heartbeat-liveness' must be a "
                        "non-negative integer");
  CHECK(lines[2].rfind(path + ":3:22: error: 'heartbeat-interval' must be a "
                              "duration",
                       0) == 0);
  // `_` stands for `-`: the same key twice.
  CHECK(lines[3] == path +
                        ":4:1: error: 'heartbeat_interval' is "
                        "'heartbeat-interval' again (line 3); write each key "
                        "once");
  CHECK(lines[4] == path + ":5:1: error: unknown key 'frobnicate'");
  CHECK(lines[5] == path + ":6:12: error: 'data-dir' must be a string");
  CHECK(lines[6].find(":7:1: error: unknown key 'heartbeat-liveness2'; did "
                      "you mean 'heartbeat-liveness'?") != std::string::npos);

  const std::string w = t.Write("w.toml",
                                "queue = [\"a:1\", 2]\n"
                                "name = 3\n"
                                "heartbeat-liveness = 3\n");
  const std::vector<std::string> wl =
      Lines(ReadConfigFile(w, WorkerConfigKeys()).errors);
  REQUIRE(wl.size() == 3);
  CHECK(wl[0] == w + ":1:17: error: 'queue' must hold only strings");
  CHECK(wl[1] == w + ":2:8: error: 'name' must be a string");
  // A droverd key is unknown to the worker.
  CHECK(wl[2].rfind(w + ":3:1: error: unknown key 'heartbeat-liveness'", 0) ==
        0);
}

TEST_CASE("Config.SyntaxErrorsAndMissingFilesAreReported") {
  TempDir t;
  const std::string path =
      t.Write("syntax.toml", "log-level = \"info\"\napi = \"x\n");
  ConfigFile f = ReadConfigFile(path, DroverdConfigKeys());
  REQUIRE(f.errors.size() == 1);
  CHECK(f.errors[0].where.line == 2);
  CHECK(f.errors[0].file == path);

  ConfigFile dir = ReadConfigFile(t.path(), DroverdConfigKeys());
  REQUIRE(dir.errors.size() == 1);
  CHECK(dir.errors[0].ToString() ==
        t.path() + ":0:0: error: cannot read: it is a directory");

  ConfigFile m = ReadConfigFile(t.path() + "/nope.toml", DroverdConfigKeys());
  REQUIRE(m.errors.size() == 1);
  CHECK(m.errors[0].ToString() ==
        t.path() +
            "/nope.toml:0:0: error: cannot open: No such file or directory");
}

TEST_CASE("Config.FlagOverridesFileOverridesDefault") {
  TempDir t;
  const std::string path = t.Write("c.toml",
                                   "api = \"ipc:///from-file\"\n"
                                   "tasks = \"ipc:///tasks-from-file\"\n"
                                   "queue = [\"a:1\", \"b:2\"]\n"
                                   "log-level = \"debug\"\n");
  CLI::App app;
  std::string config, api = "tcp://default:1", tasks = "tcp://default:2",
                      heartbeat = "tcp://default:3", log_level = "info";
  std::vector<std::string> queues;
  app.add_option("--config", config);
  app.add_option("--api", api)->check(EndpointValidator());
  app.add_option("--tasks", tasks)->check(EndpointValidator());
  app.add_option("--heartbeat", heartbeat)->check(EndpointValidator());
  app.add_option("--queue", queues);
  app.add_option("--log-level", log_level)->check(LogLevelValidator());
  const std::vector<ConfigKey> keys = {{"api", ConfigKind::kString},
                                       {"tasks", ConfigKind::kString},
                                       {"heartbeat", ConfigKind::kString},
                                       {"queue", ConfigKind::kStringList},
                                       {"log-level", ConfigKind::kString}};
  std::vector<std::string> args = {
      "x", "--config", path, "--api", "ipc:///from-flag", "--queue", "c:3"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  REQUIRE(!ParseCommandLine(app, static_cast<int>(argv.size()), argv.data()));
  REQUIRE(ApplyConfig(app, config, keys));
  CHECK(api == "ipc:///from-flag");          // the flag wins
  CHECK(tasks == "ipc:///tasks-from-file");  // the file beats the default
  CHECK(heartbeat == "tcp://default:3");     // in neither: the default
  CHECK(queues == std::vector<std::string>{"c:3"});  // a flag replaces a list
  CHECK(log_level == "debug");
}

TEST_CASE("Config.WellTypedButWrongValuesAreLocatedToo") {
  // The checks that guard the flags guard the file's values, with where.
  TempDir t;
  const std::string path = t.Write("c.toml",
                                   "heartbeat-interval = \"5ms\"\n"
                                   "log-level = \"loud\"\n"
                                   "api = \"127.0.0.1:7700\"\n");
  CLI::App app;
  std::string config, interval = "1s", log_level = "info", api;
  app.add_option("--config", config);
  app.add_option("--heartbeat-interval", interval)
      ->check(DurationValidator(10ms));
  app.add_option("--log-level", log_level)->check(LogLevelValidator());
  app.add_option("--api", api)->check(EndpointValidator());
  std::vector<std::string> args = {"x", "--config", path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  REQUIRE(!ParseCommandLine(app, static_cast<int>(argv.size()), argv.data()));
  std::ostringstream err;
  std::streambuf* saved = std::cerr.rdbuf(err.rdbuf());
  const bool ok = ApplyConfig(app, config, DroverdConfigKeys());
  std::cerr.rdbuf(saved);
  CHECK(!ok);
  CHECK(err.str() ==
        path +
            ":1:22: error: 'heartbeat-interval': '5ms' is shorter than "
            "the minimum, 10ms\n" +
            path +
            ":2:13: error: 'log-level': 'loud' is not one of trace, "
            "debug, info, warn, error\n" +
            path +
            ":3:7: error: 'api': '127.0.0.1:7700' is not an endpoint "
            "such as tcp://127.0.0.1:7700 or ipc:///run/drover/api\n");
}

TEST_CASE("Config.ExampleConfigsDocumentEveryKeyWithAValidValue") {
  TempDir t;
  const std::pair<std::string, const std::vector<ConfigKey>*> examples[] = {
      {"config/droverd.toml", &DroverdConfigKeys()},
      {"config/worker.toml", &WorkerConfigKeys()}};
  for (const auto& [rel, keys] : examples) {
    CAPTURE(rel);
    const std::string text = ReadFile(SourcePath(rel));
    REQUIRE(!text.empty());
    // As shipped: everything commented out, so it changes nothing.
    ConfigFile shipped = ReadConfigFile(SourcePath(rel), *keys);
    CHECK(shipped.ok());
    CHECK(shipped.values.empty());
    // Uncommented: every key, each with a value of the right type.
    const std::string path = t.Write("uncommented.toml", Uncommented(text));
    ConfigFile all = ReadConfigFile(path, *keys);
    CHECK_MESSAGE(all.ok(), Lines(all.errors).front());
    std::set<std::string> present;
    for (const auto& [k, v] : all.values) present.insert(k);
    CHECK(present == KeyNames(*keys));
  }
}

TEST_CASE("Config.EveryFlagIsAKeyAndEveryKeyAFlag") {
  const std::pair<std::string, const std::vector<ConfigKey>*> daemons[] = {
      {"droverd", &DroverdConfigKeys()},
      {"drover-worker", &WorkerConfigKeys()}};
  for (const auto& [exe, keys] : daemons) {
    CAPTURE(exe);
    CommandResult r = RunCommand({BuildPath(exe), "--help"});
    REQUIRE(r.exit_code == 0);
    CHECK(HelpFlags(r.out) == KeyNames(*keys));
  }
}

TEST_CASE("Config.BadConfigStopsTheDaemonsWithLocatedErrors") {
  TempDir t;
  const std::string d =
      t.Write("droverd.toml", "data-dir = \"" + t.path() +
                                  "/data\"\n"
                                  "heartbeat-liveness = \"x\"\n"
                                  "heartbeat-interval = \"1ms\"\n"
                                  "hearbeat = \"ipc:///x\"\n"
                                  "log-level = \"loud\"\n");
  CommandResult r = RunCommand({BuildPath("droverd"), "--config", d}, {}, 10s);
  CHECK(r.exit_code == 2);
  CHECK(r.err == d +
                     ":2:22: error: 'heartbeat-liveness' must be a "
                     "non-negative integer\n" +
                     d +
                     ":3:22: error: 'heartbeat-interval': '1ms' is shorter "
                     "than the minimum, 10ms\n" +
                     d +
                     ":4:1: error: unknown key 'hearbeat'; did you mean "
                     "'heartbeat'?\n" +
                     d +
                     ":5:13: error: 'log-level': 'loud' is not one of "
                     "trace, debug, info, warn, error\n");
  CHECK(!fs::exists(t.path() + "/data"));  // refused before touching anything

  const std::string w = t.Write("worker.toml",
                                "queue = [\"default:none\"]\n"
                                "runtime = [\"shell\", \"vm\"]\n"
                                "shutdown-grace = \"forever\"\n"
                                "tasks = \"localhost:7701\"\n"
                                "docker-output = \"volume\"\n");
  r = RunCommand({BuildPath("drover-worker"), "--config", w}, {}, 10s);
  CHECK(r.exit_code == 2);
  CHECK(r.err == w +
                     ":1:9: error: 'queue': 'default:none': SLOTS must be a "
                     "positive integer\n" +
                     w +
                     ":2:11: error: 'runtime': 'vm' is not a runtime: "
                     "docker or shell\n" +
                     w +
                     ":3:18: error: 'shutdown-grace' must be a duration "
                     "string such as \"1s\" or \"500ms\"\n" +
                     w +
                     ":4:9: error: 'tasks': 'localhost:7701' is not an "
                     "endpoint such as tcp://127.0.0.1:7700 or "
                     "ipc:///run/drover/api\n" +
                     w +
                     ":5:17: error: 'docker-output': 'volume' is not an "
                     "output method: bind or archive\n");
  // A daemon's view of the work dir means nothing without a work dir.
  r = RunCommand({BuildPath("drover-worker"), "--docker-daemon-work-dir",
                  "/srv/work"},
                 {}, 10s);
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "drover-worker: --docker-daemon-work-dir needs --work-dir, and must "
        "be absolute\n");

  r = RunCommand({BuildPath("droverd"), "--config", t.path() + "/none.toml"},
                 {}, 10s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("none.toml:0:0: error: cannot open: No such file") !=
        std::string::npos);
}

TEST_CASE("Config.FileValuesTakeEffectAndFlagsOverrideThem") {
  Cluster c;
  const std::string file_api = "ipc://" + c.dir() + "/api-from-file";
  const std::string conf = c.dir() + "/droverd.toml";
  WriteFile(conf, "data-dir = \"" + c.dir() + "/data-from-file\"\n" +
                      "api = \"" + file_api + "\"\n" + "tasks = \"" +
                      c.tasks_endpoint() + "\"\n" + "heartbeat = \"" +
                      c.heartbeat_endpoint() + "\"\n" +
                      "heartbeat-interval = \"200ms\"\n");
  {
    Process d({BuildPath("droverd"), "--config", conf},
              c.dir() + "/droverd-file.log");
    Client from_file(file_api, 2s);
    CHECK(Cluster::Eventually(
        [&] { return from_file.Call<WorkersReply>(WorkersRequest{}).ok(); },
        10s));
    CHECK(fs::exists(c.dir() + "/data-from-file/db"));
    // A worker configured by file, too: its name is the file's.
    const std::string wconf = c.dir() + "/worker.toml";
    WriteFile(wconf,
              "name = \"named-by-file\"\n"
              "tasks = \"" +
                  c.tasks_endpoint() + "\"\n" + "heartbeat = \"" +
                  c.heartbeat_endpoint() + "\"\n" +
                  "runtime = [\"shell\"]\n"
                  "queue = [\"default:1\", \"other:2\"]\n");
    Process w({BuildPath("drover-worker"), "--config", wconf},
              c.dir() + "/worker-file.log");
    std::vector<WorkerView> seen;
    CHECK(Cluster::Eventually([&] {
      auto r = from_file.Call<WorkersReply>(WorkersRequest{});
      if (r.ok()) seen = r->workers;
      return seen.size() == 1;
    }));
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].name == "named-by-file");
    CHECK(seen[0].queues ==
          std::map<std::string, uint32_t>{{"default", 1}, {"other", 2}});
    w.Signal(SIGTERM);
    CHECK(w.Wait() == 0);
    d.Signal(SIGTERM);
    CHECK(d.Wait() == 0);
  }
  // The same file with --api: the flag's endpoint answers, the file's is
  // never bound.
  fs::remove(c.dir() + "/api-from-file");
  Process d({BuildPath("droverd"), "--config", conf, "--api", c.api()},
            c.dir() + "/droverd-flag.log");
  CHECK(Cluster::Eventually(
      [&] { return c.client().Call<WorkersReply>(WorkersRequest{}).ok(); },
      10s));
  CHECK(!fs::exists(c.dir() + "/api-from-file"));
  d.Signal(SIGTERM);
  CHECK(d.Wait() == 0);
}

TEST_CASE("Config.ShippedExamplesStartDaemonsThatServe") {
  // config/*.toml as shipped, and with every key uncommented, with only
  // what must differ on a test machine given as flags (which win).
  for (bool uncomment : {false, true}) {
    CAPTURE(uncomment);
    Cluster c;
    std::string droverd_conf = SourcePath("config/droverd.toml");
    std::string worker_conf = SourcePath("config/worker.toml");
    Client* client = &c.client();
    std::unique_ptr<Client> keyed;
    if (uncomment) {
      // The examples' files under /etc/drover/ are made here instead: the
      // auth directory with the scheduler's pair and the allowed keys.
      const std::string etc = c.dir() + "/etc/";
      auto local = [&](std::string text) {
        for (size_t at; (at = text.find("/etc/drover/")) != std::string::npos;) {
          text.replace(at, 12, etc);
        }
        return Uncommented(text);
      };
      droverd_conf = c.dir() + "/droverd.toml";
      WriteFile(droverd_conf, local(ReadFile(SourcePath("config/droverd.toml"))));
      worker_conf = c.dir() + "/worker.toml";
      WriteFile(worker_conf, local(ReadFile(SourcePath("config/worker.toml"))));
      for (const char* folder : {"clients", "readers", "workers"}) {
        fs::create_directories(etc + "auth/" + folder);
      }
      auto server = NewKeyPair();
      auto worker = NewKeyPair();
      auto user = NewKeyPair();
      REQUIRE(WriteKeyPair(etc + "auth/server.key", *server).ok());
      REQUIRE(WriteKeyPair(etc + "worker.key", *worker).ok());
      REQUIRE(WriteKeyPair(etc + "user.key", *user).ok());
      fs::copy_file(etc + "auth/server.key.pub", etc + "server.key.pub");
      fs::copy_file(etc + "worker.key.pub", etc + "auth/workers/w.pub");
      fs::copy_file(etc + "user.key.pub", etc + "auth/clients/user.pub");
      keyed = std::make_unique<Client>(
          c.api(), 5s, ClientKeys{*user, server->public_key});
      client = keyed.get();
      // shell-uids: the tasks' uids must reach the work dir in here.
      fs::permissions(c.dir(), fs::perms::others_exec, fs::perm_options::add);
    }
    Process d({BuildPath("droverd"), "--config", droverd_conf, "--data-dir",
               c.dir() + "/data", "--api", c.api(), "--tasks",
               c.tasks_endpoint(), "--heartbeat", c.heartbeat_endpoint(),
               "--watch-dir", c.dir() + "/inbox"},
              c.dir() + "/droverd.log");
    CHECK(Cluster::Eventually(
        [&] { return client->Call<WorkersReply>(WorkersRequest{}).ok(); },
        10s));
    Process w({BuildPath("drover-worker"), "--config", worker_conf, "--name",
               "example", "--tasks", c.tasks_endpoint(), "--heartbeat",
               c.heartbeat_endpoint(), "--runtime", "shell", "--work-dir",
               c.dir() + "/work"},
              c.dir() + "/worker.log");
    SubmitRequest submit;
    submit.source = "name = \"n\"\n[[tasks]]\nname = \"t\"\nrun = \"echo hi\"\n";
    auto id = client->Call<SubmitReply>(submit);
    REQUIRE_MESSAGE(id.ok(), id.status().ToString());
    CHECK(Cluster::Eventually([&] {
      StatusRequest status;
      status.job_id = id->job_id;
      auto job = client->Call<StatusReply>(status);
      return job.ok() && job->job.state == "COMPLETED";
    }));
    w.Signal(SIGTERM);
    CHECK(w.Wait() == 0);
    d.Signal(SIGTERM);
    CHECK(d.Wait() == 0);
  }
}

}  // namespace drover::testing
