// Fuzz target: DirectArgv (workers/process_spawn.h), which decides whether a
// job file's `run` script may skip /bin/sh. Whatever the text, a script it
// accepts must be nothing but its words separated by blanks, every word
// made of the plain characters only, the first neither an assignment nor
// empty; anything else must be refused (left to the shell).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "process_spawn.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view script(reinterpret_cast<const char*>(data), size);
  const std::vector<std::string> words = drover::DirectArgv(script);
  if (words.empty()) return 0;
  std::string rebuilt;
  for (char c : script) {
    if (c != ' ' && c != '\t') rebuilt += c;
  }
  std::string joined;
  for (const std::string& w : words) {
    if (w.empty()) abort();
    for (char c : w) {
      const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') ||
                         std::string_view("_-./:,+%@=").find(c) !=
                             std::string_view::npos;
      if (!plain) abort();
    }
    joined += w;
  }
  if (joined != rebuilt) abort();  // every non-blank character is in a word
  if (words[0].find('=') != std::string::npos) abort();
  return 0;
}
