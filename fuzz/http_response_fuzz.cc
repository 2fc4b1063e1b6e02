// Fuzz target: what a server on the Docker socket may answer, fed to
// HttpResponseParser whole and in pieces of a size the input chooses. Both
// ways must agree (status, body, completeness, error), the body can never
// be longer than the input, and nothing the input says is allocated beyond
// the head cap.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "unix_http.h"

namespace {

struct Outcome {
  std::string error;
  int status = 0;
  std::string body;
  bool complete = false;
  bool stopped = false;
  size_t headers = 0;

  bool operator==(const Outcome&) const = default;
};

// `stop_after`: the sink stops the transfer once it has this many bytes
// (0: never).
Outcome Parse(std::string_view text, size_t piece, bool head_request,
              size_t stop_after) {
  Outcome o;
  drover::HttpResponseParser parser(
      [&](int status, std::string_view data) {
        if (status < 200 || status > 599) __builtin_trap();
        o.body.append(data);
        return stop_after == 0 || o.body.size() < stop_after;
      },
      head_request);
  drover::Status s;
  for (size_t at = 0; at < text.size() && s.ok(); at += piece) {
    s = parser.Feed(text.substr(at, piece));
  }
  if (s.ok()) s = parser.Finish();
  o.error = s.ToString();
  o.status = parser.status();
  o.complete = parser.complete();
  o.stopped = parser.stopped();
  o.headers = parser.headers().size();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first byte chooses the piece size, the second the request and
  // where the sink stops, so splits and early stops land everywhere.
  const size_t piece = 1 + data[0] % 61;
  const bool head_request = data[1] & 1;
  const size_t stop_after = (data[1] >> 1) % 4 == 0 ? 1 + data[1] % 50 : 0;
  std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  Outcome whole = Parse(text, text.size() + 1, head_request, stop_after);
  Outcome split = Parse(text, piece, head_request, stop_after);
  // A sink that stops sees the same bytes either way only up to its stop.
  if (stop_after == 0 && !(whole == split)) __builtin_trap();
  if (stop_after != 0 && whole.error != split.error) __builtin_trap();
  if (whole.body.size() > text.size()) __builtin_trap();
  if (whole.headers > 256) __builtin_trap();
  if (whole.complete && whole.status < 200) __builtin_trap();
  return 0;
}
