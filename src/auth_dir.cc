#include "auth_dir.h"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace drover {
namespace {

constexpr const char* kFolders[] = {"clients", "readers", "workers"};

Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      return Status::Ok();
    }
    return Status::InvalidArgument(path + " is not a directory");
  }
  return Status::IOError("cannot create " + path + ": " + strerror(errno));
}

}  // namespace

AuthDir::AuthDir(std::string dir) : dir_(std::move(dir)) {}

AuthDir::~AuthDir() {
  if (fd_ >= 0) close(fd_);
}

Status AuthDir::Open() {
  if (Status st = MakeDir(dir_); !st.ok()) return st;
  for (const char* folder : kFolders) {
    if (Status st = MakeDir(dir_ + "/" + folder); !st.ok()) return st;
  }
  const std::string key_file = dir_ + "/server.key";
  auto pair = ReadSecretKey(key_file);
  if (!pair.ok() && pair.status().code() == Code::kNotFound) {
    auto fresh = NewKeyPair();
    if (!fresh.ok()) return fresh.status();
    if (Status st = WriteKeyPair(key_file, *fresh); !st.ok()) return st;
    spdlog::info(
        "made the scheduler's key pair: {}.pub is the public key that "
        "workers and clients need (--server-key)",
        key_file);
    pair = *fresh;
  }
  if (!pair.ok()) return pair.status();
  server_key_ = *pair;
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    return Status::IOError(std::string("inotify: ") + strerror(errno));
  }
  for (const char* folder : kFolders) {
    const std::string path = dir_ + "/" + folder;
    if (inotify_add_watch(fd_, path.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                              IN_DELETE | IN_ATTRIB | IN_CREATE) < 0) {
      return Status::IOError("cannot watch " + path + ": " + strerror(errno));
    }
  }
  Read();
  return Status::Ok();
}

void AuthDir::Read() {
  std::vector<std::string> problems;
  auto list = std::make_shared<Allowlist>(Allowlist::Load(dir_, &problems));
  for (const std::string& p : problems) spdlog::warn("--auth: {}", p);
  spdlog::info("--auth {}: {} client, {} reader and {} worker keys", dir_,
               list->clients(), list->readers(), list->workers());
  list_ = std::move(list);
}

bool AuthDir::Reload() {
  alignas(inotify_event) char buf[4096];
  bool any = false;
  while (read(fd_, buf, sizeof buf) > 0) any = true;
  if (any) Read();
  return any;
}

}  // namespace drover
