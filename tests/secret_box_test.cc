// SecretBox: job secrets sealed at rest (src/secret_box.h), with real
// libsodium and real key files.
#include "secret_box.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace drover {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/drover-box-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST_CASE("SecretBox.SealedSecretsOpenOnlyWithTheirKey") {
  TempDir t;
  bool created = false;
  auto box = SecretBox::Open(t.path + "/secrets.key", &created);
  REQUIRE_MESSAGE(box.ok(), box.status().ToString());
  CHECK(created);
  struct stat st;
  REQUIRE(stat((t.path + "/secrets.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const std::map<std::string, std::string> secrets = {
      {"TOKEN", "s3cr3t-value"}, {"EMPTY", ""}, {"BIN", std::string("\0\xff", 2)}};
  const std::string sealed = (*box)->SealSecrets(secrets);
  CHECK(sealed.find("s3cr3t-value") == std::string::npos);
  CHECK(sealed.find("TOKEN") == std::string::npos);
  // Two seals of the same secrets differ (a fresh nonce each).
  CHECK((*box)->SealSecrets(secrets) != sealed);
  CHECK((*box)->SealSecrets({}).empty());
  auto opened = (*box)->OpenSecrets(sealed);
  REQUIRE(opened.ok());
  CHECK(*opened == secrets);
  // The same file opened again: the same key.
  created = true;
  auto again = SecretBox::Open(t.path + "/secrets.key", &created);
  REQUIRE(again.ok());
  CHECK(!created);
  CHECK((*again)->OpenSecrets(sealed).ok());
  // Another key says so, naming both.
  auto other = SecretBox::Open(t.path + "/other.key");
  REQUIRE(other.ok());
  auto wrong = (*other)->OpenSecrets(sealed);
  CHECK(wrong.status().code() == Code::kInvalidArgument);
  CHECK(wrong.status().message().find((*box)->key_id()) != std::string::npos);
  CHECK(wrong.status().message().find((*other)->key_id()) != std::string::npos);
  // A changed byte anywhere is caught.
  for (size_t i = 0; i < sealed.size(); i += 7) {
    std::string bad = sealed;
    bad[i] ^= 1;
    CHECK_MESSAGE(!(*box)->OpenSecrets(bad).ok(), "byte " << i);
  }
  CHECK((*box)->OpenSecrets("not sealed").status().code() ==
        Code::kCorruption);
  // A key file others may read is refused.
  chmod((t.path + "/other.key").c_str(), 0640);
  auto loose = SecretBox::Open(t.path + "/other.key");
  CHECK(loose.status().code() == Code::kPermissionDenied);
}

}  // namespace
}  // namespace drover
