#include "allowlist.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>

#include "drover/keys.h"

namespace drover {

bool Principal::Allows(std::string_view domain) const {
  if (domain == kApiDomain) return client || reader;
  if (domain == kTasksDomain || domain == kHeartbeatDomain) return worker;
  return false;
}

std::string Principal::Describe() const {
  return std::string(worker ? "worker " : client ? "client " : "reader ") +
         name;
}

void Allowlist::Add(std::string_view folder, const std::string& name,
                    const std::string& key) {
  Principal& p = keys_[key];
  if (p.name.empty()) p.name = name;
  if (folder == "clients") {
    clients_ += !p.client;
    p.client = true;
  } else if (folder == "readers") {
    readers_ += !p.reader;
    p.reader = true;
  } else if (folder == "workers") {
    workers_ += !p.worker;
    p.worker = true;
  }
}

const Principal* Allowlist::Find(const std::string& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

Allowlist Allowlist::Load(const std::string& dir,
                          std::vector<std::string>* problems) {
  Allowlist list;
  // Workers first: a key in two folders is named after its first.
  for (std::string_view folder : {"workers", "clients", "readers"}) {
    const std::string path = dir + "/" + std::string(folder);
    DIR* d = opendir(path.c_str());
    if (d == nullptr) continue;
    std::vector<std::string> names;
    while (const dirent* e = readdir(d)) {
      const std::string_view name = e->d_name;
      if (name.starts_with('.') || !name.ends_with(".pub")) continue;
      names.emplace_back(name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());  // a stable order for problems
    std::unordered_map<std::string, std::string> seen;  // key -> file
    for (const std::string& file : names) {
      const std::string full = path + "/" + file;
      // An empty file is one being written: it is read when it is closed.
      struct stat st;
      if (stat(full.c_str(), &st) == 0 && st.st_size == 0) continue;
      auto key = ReadKeyFile(full, /*secret=*/false);
      if (!key.ok()) {
        problems->push_back(key.status().message() + " (skipped)");
        continue;
      }
      auto [first, fresh] = seen.emplace(*key, file);
      if (!fresh) {
        problems->push_back(full + ": the same key as " + first->second +
                            " (skipped)");
        continue;
      }
      list.Add(folder, file.substr(0, file.size() - 4), *key);
    }
  }
  return list;
}

}  // namespace drover
