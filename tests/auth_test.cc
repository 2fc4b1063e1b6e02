// Authentication end to end, with real processes: keys made by `drover
// keygen`, droverd with --auth (CURVE on its three sockets, its ZAP handler,
// the allowlists), workers and clients with keys, and the attacks that
// worked against a scheduler without any: a stranger saying hello as a
// worker, a plaintext or unknown client, a reader that submits, a worker
// whose key is withdrawn, a rogue scheduler, a scheduler listening on every
// interface.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <zmq.hpp>

#include "cluster.h"
#include "drover/keys.h"
#include "drover/socket_monitor.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const char* kJob =
    "name = \"hello\"\n[[tasks]]\nname = \"t\"\nrun = \"echo -n ok > "
    "$DROVER_OUTPUT\"\n";

unsigned Mode(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// A cluster with --auth, its scheduler started, and one allowed worker.
struct AuthCluster {
  Cluster c;
  AuthCluster() {
    c.EnableAuth();
    c.StartScheduler();
  }
  Process& Worker(const std::string& name, std::vector<std::string> extra = {},
                  bool listed = true) {
    c.NewKey(name, listed ? "workers" : "");
    std::vector<std::string> flags = c.KeyFlags(name);
    flags.insert(flags.end(), extra.begin(), extra.end());
    return c.StartWorker(name, flags);
  }
  bool HasWorker(const std::string& name, const std::string& state) {
    for (const WorkerView& w : c.Workers()) {
      if (w.name == name) return w.state == state;
    }
    return false;
  }
};

// The time a command took, and what it did.
struct Timed {
  CommandResult r;
  std::chrono::milliseconds took;
};
Timed TimeIt(const std::function<CommandResult()>& f) {
  const auto start = std::chrono::steady_clock::now();
  CommandResult r = f();
  return {r, std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - start)};
}

void CheckRefused(const Timed& t) {
  CHECK(t.r.exit_code == 4);
  CHECK_MESSAGE(t.r.err.find("drover: authentication refused: ") == 0,
                t.r.err);
  CHECK_MESSAGE(t.took < 2s, "took " << t.took.count() << " ms");
}

}  // namespace

TEST_CASE("Auth.KeygenWritesAPairOnlyItsOwnerReads") {
  Cluster c;
  const std::string key = c.dir() + "/me.key";
  CommandResult r = RunCommand({BuildPath("drover"), "keygen", key});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(Mode(key) == 0600);
  CHECK(Mode(key + ".pub") == 0644);
  auto pair = ReadSecretKey(key);
  REQUIRE_MESSAGE(pair.ok(), pair.status().ToString());
  auto pub = ReadKeyFile(key + ".pub", /*secret=*/false);
  REQUIRE(pub.ok());
  CHECK(*pub == pair->public_key);
  CHECK(pub->size() == 40);
  // One line of Z85, nothing else.
  CHECK(ReadFile(key + ".pub") == *pub + "\n");
  // Never over an existing key.
  r = RunCommand({BuildPath("drover"), "keygen", key});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("exists") != std::string::npos);
  CHECK(ReadSecretKey(key)->secret_key == pair->secret_key);
  // A secret key others may read is refused, saying how to fix it.
  chmod(key.c_str(), 0644);
  r = RunCommand({BuildPath("drover"), "--key", key, "--server-key",
                  key + ".pub", "list"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("chmod 600 " + key) != std::string::npos);
  // A key file that is not one is refused with its place.
  WriteFile(c.dir() + "/bad.pub", "# a comment\n\nnot-a-key\n");
  auto bad = ReadKeyFile(c.dir() + "/bad.pub", false);
  CHECK(bad.status().message().find("bad.pub:3:1: error:") !=
        std::string::npos);
}

TEST_CASE("Auth.SchedulerMakesItsKeyPairAndKeepsItsFilesToItself") {
  Cluster c;
  const std::string auth = c.dir() + "/auth";
  c.StartScheduler({"--auth", auth}, /*wait_ready=*/false);
  REQUIRE(Cluster::Eventually(
      [&] { return fs::exists(auth + "/server.key.pub"); }, 10s));
  CHECK(Mode(auth + "/server.key") == 0600);
  for (const char* folder : {"clients", "readers", "workers"}) {
    CHECK(fs::is_directory(auth + "/" + folder));
  }
  CHECK(ReadSecretKey(auth + "/server.key")->public_key ==
        *ReadKeyFile(auth + "/server.key.pub", false));
  // Owner-only: the data dir, the store's files, the ipc sockets.
  CHECK(Mode(c.dir() + "/data") == 0700);
  for (const auto& e : fs::directory_iterator(c.dir() + "/data/db")) {
    CHECK_MESSAGE((Mode(e.path()) & 077) == 0, e.path());
  }
  REQUIRE(Cluster::Eventually([&] { return fs::exists(c.dir() + "/api"); }));
  CHECK((Mode(c.dir() + "/api") & 077) == 0);
  // No core dumps of a process that holds secrets.
  const std::string limits = ReadFile(
      "/proc/" + std::to_string(c.scheduler().pid()) + "/limits");
  CHECK(limits.find("Max core file size        0                    0") !=
        std::string::npos);
}

TEST_CASE("Auth.AllowedWorkerAndClientRunAJob") {
  AuthCluster a;
  a.Worker("w1");
  REQUIRE(Cluster::Eventually([&] { return a.HasWorker("w1", "ready"); }));
  JobView job = a.c.Wait(a.c.Submit(kJob));
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].output.value_or("") == "ok");
  CHECK(job.tasks[0].worker.value_or("") == "w1");
  // The CLI with a client key too.
  WriteFile(a.c.dir() + "/job.toml", kJob);
  a.c.NewKey("alice", "clients");
  CommandResult r =
      a.c.Drover({"submit", a.c.dir() + "/job.toml", "--wait"}, "alice");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
}

// Who is not on a list gets nothing, and fast: exit 4 within 2 s, not a
// timeout. droverd logs the refused key and goes on serving.
TEST_CASE("Auth.UnknownKeysAreRefusedAtTheHandshake") {
  AuthCluster a;
  a.c.NewKey("mallory");  // not listed
  CheckRefused(TimeIt([&] { return a.c.Drover({"list"}, "mallory"); }));
  // No keys at all, against a scheduler that wants them.
  Timed plain = TimeIt([&] { return a.c.Drover({"list"}); });
  CheckRefused(plain);
  CHECK(plain.r.err.find("requires CURVE keys") != std::string::npos);
  // A listed key that pins another scheduler's key.
  a.c.NewKey("alice", "clients");
  a.c.NewKey("not-the-scheduler");
  Timed pinned = TimeIt([&] {
    return RunCommand({BuildPath("drover"), "--api", a.c.api(), "--key",
                       a.c.dir() + "/keys/alice.key", "--server-key",
                       a.c.dir() + "/keys/not-the-scheduler.key.pub", "list"});
  });
  CheckRefused(pinned);
  // A worker with an unknown key never joins, and says why.
  Process& rogue = a.Worker("rogue", {}, /*listed=*/false);
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(rogue.log_path()).find("the scheduler refused this key") !=
           std::string::npos;
  }, 5s));
  CHECK(a.c.Workers().empty());
  CHECK(a.c.SchedulerLog().find("unknown key") != std::string::npos);
  // Still serving.
  a.Worker("w1");
  CHECK(a.c.Wait(a.c.Submit(kJob)).state == "COMPLETED");
  CHECK(a.c.scheduler().Running());
}

TEST_CASE("Auth.ReaderMayOnlyRead") {
  AuthCluster a;
  a.Worker("w1");
  const std::string id = a.c.Submit(kJob);
  a.c.Wait(id);
  a.c.NewKey("bob", "readers");
  for (const std::vector<std::string>& read :
       {std::vector<std::string>{"status", id}, {"list"}, {"workers"},
        {"logs", id}}) {
    CommandResult r = a.c.Drover(read, "bob");
    CHECK_MESSAGE(r.exit_code == 0, read[0] << ": " << r.err);
  }
  WriteFile(a.c.dir() + "/job.toml", kJob);
  Timed submit =
      TimeIt([&] { return a.c.Drover({"submit", a.c.dir() + "/job.toml"}, "bob"); });
  CheckRefused(submit);
  CHECK(submit.r.err.find("reader bob may only read") != std::string::npos);
  CheckRefused(TimeIt([&] { return a.c.Drover({"cancel", id}, "bob"); }));
  // Nothing was stored for it.
  auto r = a.c.Drover({"list", "--json"}, "bob");
  CHECK(r.out.find(id) != std::string::npos);
  CHECK(a.c.client().Call<ListReply>(ListRequest{})->jobs.size() == 1);
}

TEST_CASE("Auth.AllowlistChangesTakeEffectLive") {
  AuthCluster a;
  a.c.NewKey("carol");
  CHECK(a.c.Drover({"list"}, "carol").exit_code == 4);
  // Listed while droverd runs: in at once.
  const std::string listed = a.c.auth_dir() + "/clients/carol.pub";
  fs::copy_file(a.c.dir() + "/keys/carol.key.pub", listed);
  REQUIRE(Cluster::Eventually(
      [&] { return a.c.Drover({"list"}, "carol").exit_code == 0; }, 5s));
  // A connection made while allowed is refused once the key is removed.
  Client carol(a.c.api(), 2s, a.c.ClientKeysFor("carol"));
  REQUIRE(carol.Call<ListReply>(ListRequest{}).ok());
  fs::remove(listed);
  REQUIRE(Cluster::Eventually(
      [&] { return a.c.Drover({"list"}, "carol").exit_code == 4; }, 5s));
  auto refused = carol.Call<ListReply>(ListRequest{});
  CHECK(refused.status().code() == Code::kPermissionDenied);
  CHECK(refused.status().message().find("authentication refused") == 0);
}

// Removing a worker's key takes its tasks away: they run again on another
// worker, and the revoked one is shown as such and gets nothing more.
TEST_CASE("Auth.RevokedWorkerLosesItsTasksToAnother") {
  AuthCluster a;
  Process& w1 = a.Worker("w1", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return a.HasWorker("w1", "ready"); }));
  const std::string id = a.c.Submit(
      "name = \"long\"\n[[tasks]]\nname = \"t\"\nrun = \"sleep 1.5; echo -n "
      "$DROVER_ATTEMPT > $DROVER_OUTPUT\"\n");
  REQUIRE(Cluster::Eventually(
      [&] { return a.c.Status(id).tasks[0].state == "RUNNING"; }));
  a.Worker("w2", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return a.HasWorker("w2", "ready"); }));
  fs::remove(a.c.auth_dir() + "/workers/w1.pub");
  REQUIRE(Cluster::Eventually([&] { return a.HasWorker("w1", "revoked"); }, 5s));
  JobView job = a.c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].worker.value_or("") == "w2");
  CHECK(job.tasks[0].output.value_or("") == "2");
  CHECK(job.tasks[0].errors.at(0).find("w1 lost its key") != std::string::npos);
  // w1 stopped what it ran, and is refused from then on.
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(w1.log_path()).find("refuses worker w1") !=
           std::string::npos;
  }));
  for (int i = 0; i < 3; ++i) {
    CHECK(a.c.Wait(a.c.Submit(kJob)).tasks[0].worker.value_or("") == "w2");
  }
  CHECK(a.HasWorker("w1", "revoked"));
}

// A worker pins the scheduler's key: a scheduler with another key (a rogue
// one on the same endpoint) never welcomes it, and gets no task of it.
TEST_CASE("Auth.WorkerTalksOnlyToTheSchedulerItPins") {
  Cluster real;
  real.EnableAuth();
  Cluster rogue;
  rogue.EnableAuth();
  // The rogue scheduler lists the worker's public key: it would welcome it.
  rogue.StartScheduler();
  real.NewKey("w1", "workers");
  fs::copy_file(real.dir() + "/keys/w1.key.pub",
                rogue.auth_dir() + "/workers/w1.pub");
  // Pointed at the rogue's endpoints, with the real scheduler's key.
  Process& w = rogue.StartWorker("w1", real.KeyFlags("w1"));
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(w.log_path()).find("CURVE handshake failed") !=
           std::string::npos;
  }, 5s));
  CHECK(rogue.Workers().empty());
}

// libzmq admits any CURVE key when no ZAP handler answers, unless the
// socket enforces its domain, as every droverd socket does. Shown here on
// plain sockets: with the option and no handler, nothing gets through.
TEST_CASE("Auth.WithoutAHandlerNoHandshakeSucceeds") {
  auto server_keys = NewKeyPair();
  auto client_keys = NewKeyPair();
  REQUIRE(server_keys.ok());
  REQUIRE(client_keys.ok());
  for (const bool enforce : {false, true}) {
    CAPTURE(enforce);
    zmq::context_t ctx;
    zmq::socket_t server(ctx, zmq::socket_type::router);
    server.set(zmq::sockopt::linger, 0);
    server.set(zmq::sockopt::curve_server, 1);
    server.set(zmq::sockopt::curve_secretkey, server_keys->secret_key);
    server.set(zmq::sockopt::zap_domain, std::string("api"));
    const int on = enforce ? 1 : 0;
    REQUIRE(zmq_setsockopt(server.handle(), 93, &on, sizeof on) == 0);
    server.bind("tcp://127.0.0.1:*");
    const std::string endpoint = server.get(zmq::sockopt::last_endpoint);
    zmq::context_t client_ctx;
    zmq::socket_t client(client_ctx, zmq::socket_type::dealer);
    client.set(zmq::sockopt::linger, 0);
    UseClientKeys(client, ClientKeys{*client_keys, server_keys->public_key});
    SocketMonitor monitor(client_ctx, client,
                          ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                              ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                              ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
    client.connect(endpoint);
    client.send(zmq::buffer(std::string("hi")), zmq::send_flags::none);
    zmq::message_t id, body;
    server.set(zmq::sockopt::rcvtimeo, 1000);
    const bool delivered = server.recv(id).has_value();
    CHECK(delivered == !enforce);
    bool failed = false;
    for (int i = 0; i < 50 && !failed; ++i) {
      while (auto e = monitor.Next()) failed |= e->handshake_failed();
      std::this_thread::sleep_for(10ms);
    }
    CHECK(failed == enforce);
  }
}

// Without --auth droverd listens only where this host alone can reach it,
// unless told otherwise; with --auth, anywhere.
TEST_CASE("Auth.EndpointsBeyondThisHostNeedAuthOrInsecure") {
  Cluster c;
  Process& refused =
      c.StartScheduler({"--tasks", "tcp://0.0.0.0:0"}, /*wait_ready=*/false);
  CHECK(refused.Wait() == 2);
  CHECK(c.SchedulerLog().find("--tasks tcp://0.0.0.0:0 reaches beyond this "
                              "host") != std::string::npos);
  c.DropScheduler();
  c.StartScheduler({"--tasks", "tcp://0.0.0.0:0", "--insecure"});
  CHECK(c.SchedulerLog().find("no authentication and no encryption "
                              "(--insecure)") != std::string::npos);
  c.DropScheduler();
  Cluster a;
  a.EnableAuth();
  a.StartScheduler({"--tasks", "tcp://0.0.0.0:0"});
  CHECK(a.scheduler().Running());
}

}  // namespace drover::testing

namespace drover::testing {

// A worker that would hand shell tasks its supplementary groups (a
// `docker` group is root on the host) and cannot drop them refuses to
// start with the shell runtime, saying what to do; one that can, but whose
// tasks could still reach the Docker socket as its user, says so.
TEST_CASE("Security.ShellRuntimeNeverLendsTheWorkersGroups") {
  Cluster c;
  fs::permissions(c.dir(), fs::perms::others_all, fs::perm_options::add);
  CommandResult r = RunCommand(
      {"setpriv", "--reuid=65534", "--regid=65534", "--groups=4242",
       "--inh-caps=-all", "--bounding-set=-all", BuildPath("drover-worker"),
       "--runtime", "shell", "--tasks", c.tasks_endpoint(), "--heartbeat",
       c.heartbeat_endpoint(), "--work-dir", c.dir() + "/w"},
      {}, 10s);
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.err.find("shell tasks would run in the worker's "
                           "supplementary groups, which it cannot drop") !=
                    std::string::npos,
                r.err);
  // As root, without shell_uids: tasks would run as root.
  c.StartScheduler();
  WriteFile(c.dir() + "/fake.sock", "");
  Process& w = c.StartWorker("root", {"--docker-socket", c.dir() + "/fake.sock"});
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(w.log_path()).find("as good as root on this host") !=
           std::string::npos;
  }, 5s));
}

}  // namespace drover::testing

namespace drover::testing {

// droverd and the worker hold secrets in memory: they cannot dump core,
// and, not being dumpable, their /proc files are root's, not their user's
// (so a shell task of the same user cannot read their environment or
// attach a debugger). Run as nobody, which root would mask.
TEST_CASE("Security.DaemonsAreNotDumpable") {
  Cluster c;
  fs::permissions(c.dir(), fs::perms::all);
  const std::vector<std::string> as_nobody = {
      "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  std::vector<std::string> d = as_nobody;
  for (const std::string& a :
       {BuildPath("droverd"), std::string("--data-dir"), c.dir() + "/nd",
        std::string("--api"), "ipc://" + c.dir() + "/napi",
        std::string("--tasks"), "ipc://" + c.dir() + "/ntasks",
        std::string("--heartbeat"), "ipc://" + c.dir() + "/nhb"}) {
    d.push_back(a);
  }
  Process droverd(d, c.dir() + "/nobody-droverd.log");
  std::vector<std::string> w = as_nobody;
  for (const std::string& a :
       {BuildPath("drover-worker"), std::string("--runtime"),
        std::string("shell"), std::string("--tasks"),
        "ipc://" + c.dir() + "/ntasks", std::string("--heartbeat"),
        "ipc://" + c.dir() + "/nhb", std::string("--work-dir"),
        c.dir() + "/nw"}) {
    w.push_back(a);
  }
  Process worker(w, c.dir() + "/nobody-worker.log");
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(c.dir() + "/nobody-droverd.log").find("serving") !=
               std::string::npos &&
           ReadFile(c.dir() + "/nobody-worker.log").find("connecting") !=
               std::string::npos;
  }, 10s));
  for (Process* p : {&droverd, &worker}) {
    const std::string proc = "/proc/" + std::to_string(p->pid());
    struct stat st;
    REQUIRE(stat(proc.c_str(), &st) == 0);
    CHECK(ReadFile(proc + "/status").find("Uid:\t65534") != std::string::npos);
    REQUIRE(stat((proc + "/environ").c_str(), &st) == 0);
    CHECK(st.st_uid == 0u);  // a dumpable process's would be 65534's
    CHECK(ReadFile(proc + "/limits").find(
              "Max core file size        0                    0") !=
          std::string::npos);
  }
}

}  // namespace drover::testing
