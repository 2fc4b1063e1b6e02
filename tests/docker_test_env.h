// What every Docker test needs to know about its daemon: where it is, and
// whether the tests may run. One policy for all of them: a missing daemon
// fails the test, unless DROVER_ALLOW_NO_DOCKER=1 (ignored when CI=true);
// never a silent skip.
#ifndef DROVER_TESTS_DOCKER_TEST_ENV_H_
#define DROVER_TESTS_DOCKER_TEST_ENV_H_

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "docker_client.h"

namespace drover::docker_test {

inline constexpr const char* kImage = "drover-test/busybox:latest";

inline std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The daemon's socket: DOCKER_HOST when it is unix://, else the default.
inline std::string SocketPath() {
  std::string host = Env("DOCKER_HOST");
  if (host.rfind("unix://", 0) == 0) return host.substr(7);
  return "/var/run/docker.sock";
}

// Whether the Docker tests can run (see above); fails the test otherwise.
inline bool DockerAvailable() {
  DockerClient client(SocketPath());
  Status s = client.Ping();
  if (s.ok()) {
    Result<bool> image = client.ImageExists(kImage);
    if (!image.ok() || !*image) {
      FAIL("test image " << kImage
                         << " is missing: run scripts/docker-env.sh start");
    }
    return true;
  }
  std::string why = "no Docker daemon answers at " + SocketPath() + " (" +
                    s.ToString() + "); start one with scripts/docker-env.sh";
  if (Env("CI") == "true") FAIL("CI=true: " << why);
  if (Env("DROVER_ALLOW_NO_DOCKER") == "1") {
    MESSAGE("SKIPPED (DROVER_ALLOW_NO_DOCKER=1): " << why);
    return false;
  }
  FAIL(why << " — or set DROVER_ALLOW_NO_DOCKER=1 to skip");
  return false;
}

}  // namespace drover::docker_test

#endif  // DROVER_TESTS_DOCKER_TEST_ENV_H_
