#include "watcher.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace drover {
namespace fs = std::filesystem;

namespace {

// Larger files are never jobs (kMaxJobFileBytes); they are moved as they are.
constexpr size_t kMaxKeptFileBytes = 1 << 20;

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Writes via a temp file and a rename, so a reader never sees half of it.
Status WriteAtomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return Status::IOError("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::IOError("cannot rename to " + path.string() + ": " +
                                 ec.message());
  return Status::Ok();
}

}  // namespace

std::string WatchMarker(const WatchedFile& f) { return "watch/" + f.key; }

Watcher::Watcher(std::string dir) : dir_(std::move(dir)) {}

Watcher::~Watcher() {
  if (fd_ >= 0) close(fd_);
}

bool Watcher::Ignored(const std::string& name) {
  return name.empty() || name[0] == '.' || EndsWith(name, ".tmp") ||
         EndsWith(name, "~") || !EndsWith(name, ".toml");
}

Status Watcher::Start() {
  std::error_code ec;
  for (const char* sub : {"processed", "failed"}) {
    fs::create_directories(fs::path(dir_) / sub, ec);
    if (ec) {
      return Status::IOError("cannot create " + dir_ + "/" + sub + ": " +
                             ec.message());
    }
    // What was submitted is droverd's alone, even in folders made before.
    fs::permissions(fs::path(dir_) / sub, fs::perms::owner_all, ec);
  }
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) return Status::IOError(std::string("inotify: ") + strerror(errno));
  if (inotify_add_watch(fd_, dir_.c_str(),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
    return Status::IOError("cannot watch " + dir_ + ": " + strerror(errno));
  }
  return Status::Ok();
}

std::vector<WatchedFile> Watcher::Take() {
  std::set<std::string> names;
  alignas(inotify_event) char buf[16384];
  while (true) {
    ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if (ev->len > 0 && !(ev->mask & IN_ISDIR)) names.insert(ev->name);
      if (ev->mask & IN_Q_OVERFLOW) scanned_ = false;  // events were lost
      p += sizeof(inotify_event) + ev->len;
    }
  }
  if (!scanned_) {
    // At start (and after an overflow) take every file already there.
    scanned_ = true;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      if (entry.is_regular_file(ec)) names.insert(entry.path().filename());
    }
  }
  std::vector<WatchedFile> out;
  for (const std::string& name : names) {
    if (Ignored(name)) continue;
    WatchedFile f;
    f.name = name;
    f.path = dir_ + "/" + name;
    struct stat st;
    if (stat(f.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    f.key = name + "@" + std::to_string(st.st_dev) + ":" +
            std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) +
            ":" + std::to_string(st.st_mtim.tv_sec) + "." +
            std::to_string(st.st_mtim.tv_nsec);
    out.push_back(std::move(f));
  }
  return out;
}

Status Watcher::MoveWithNote(const WatchedFile& f, const char* subdir,
                             const std::string& suffix,
                             const std::string& note) {
  const fs::path dest = fs::path(dir_) / subdir / f.name;
  // The note first: once the file is gone from the directory, whoever
  // looks finds its outcome beside it.
  Status st = WriteAtomically(dest.string() + suffix, note);
  if (!st.ok()) return st;
  // A file with secrets is kept without their values: written anew
  // beside its note, and the original removed. (Again after a crash, if
  // it comes to that: the original stays until the copy is in place.)
  std::string text;
  {
    std::ifstream in(f.path, std::ios::binary);
    text.resize(kMaxKeptFileBytes + 1);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
  }
  std::error_code ec;
  if (text.size() <= kMaxKeptFileBytes) {
    std::string kept = WithoutSecretValues(text);
    if (kept != text) {
      st = WriteAtomically(dest, kept);
      if (!st.ok()) return st;
      fs::remove(f.path, ec);
      if (ec) {
        return Status::IOError("cannot remove " + f.path + ": " +
                               ec.message());
      }
      return Status::Ok();
    }
  }
  fs::rename(f.path, dest, ec);
  if (ec) {
    return Status::IOError("cannot move " + f.path + " to " + dest.string() +
                           ": " + ec.message());
  }
  return Status::Ok();
}

Status Watcher::MarkProcessed(const WatchedFile& f, const std::string& job_id) {
  return MoveWithNote(f, "processed", ".job", job_id + "\n");
}

Status Watcher::MarkFailed(const WatchedFile& f,
                           const std::vector<Diagnostic>& errors) {
  std::string text;
  for (const Diagnostic& d : errors) text += d.ToString() + "\n";
  return MoveWithNote(f, "failed", ".error", text);
}

}  // namespace drover
