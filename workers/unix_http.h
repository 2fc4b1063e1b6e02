// UnixHttpClient: one HTTP/1.1 request and its response over a unix stream
// socket, and HttpResponseParser, the incremental response parser under it.
// DockerClient (workers/docker_client.h) speaks the Docker Engine API with
// it. It replaces libcurl, whose dependency tree (TLS, Kerberos, LDAP, ssh,
// ...) cost an idle worker 5 of its 13 MiB of resident memory, for what is
// plain HTTP on a local socket.
//
// Each Send opens its own connection, sends one request with
// `Connection: close` and reads one response; there is no keep-alive and no
// shared state, so one client may be used from many threads at once. An
// HttpResponseParser belongs to one connection (one thread).
//
// The response is outside data: framing by Content-Length, by chunked
// transfer coding (extensions and trailers are read and dropped) or by the
// connection closing; 1xx interim responses are skipped; HEAD, 204 and 304
// answers have no body. The head (status line and headers) and the trailers
// are each capped at kMaxHttpHeadBytes; the body is passed on as it arrives,
// so nothing the server sends is allocated beyond those caps and the
// caller's own buffering.
//
// Errors (Send): the socket cannot be connected to -> Unavailable (the
// message is the reason, e.g. "Connection refused"); the connection dropped
// before the response was complete -> IOError; a malformed response ->
// Corruption; the request's timeout passed -> Timeout("no answer within N
// ms"); its CancelFn returned true -> Timeout("cancelled"); a request that
// cannot be written as HTTP (a newline in the target or a header) ->
// InvalidArgument. No exception escapes.
#ifndef DROVER_WORKERS_UNIX_HTTP_H_
#define DROVER_WORKERS_UNIX_HTTP_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "drover/status.h"

namespace drover {

// The most a response head, or its chunked trailers, may take: Docker's are
// a few hundred bytes; a server sending more is broken or hostile.
inline constexpr size_t kMaxHttpHeadBytes = 64 << 10;

// Receives the body of the final response as it arrives, with that
// response's status code; returns false to stop reading (the call then
// succeeds with what was read).
using HttpBodyFn = std::function<bool(int status, std::string_view data)>;

struct HttpHeader {
  std::string name;   // as sent; compare case-insensitively
  std::string value;  // without surrounding whitespace
};

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // origin form: "/v1.41/containers/json?all=1"
  // Extra header lines, "Name: value". Host, Content-Length and Connection
  // are added by Send.
  std::vector<std::string> headers;
  // Not owned: must outlive Send. Sent with Content-Length, which is also
  // sent (as 0) for an empty POST, PUT or PATCH.
  std::string_view body;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);
  // The whole call, connecting included; 0: no limit (a followed stream).
  std::chrono::milliseconds timeout{0};
  // Polled about once a second and on every piece of data received;
  // returning true aborts the call. May be empty.
  std::function<bool()> cancel;
  // Unset: the body is collected in HttpResponse::body, at most
  // max_body_bytes of it (more is a Corruption error).
  HttpBodyFn on_body;
  size_t max_body_bytes = 32 << 20;
};

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::vector<HttpHeader> headers;
  std::string body;      // only when the request had no on_body
  bool stopped = false;  // on_body ended the transfer early

  // The first header of that name (case-insensitive), or nullptr.
  const std::string* Header(std::string_view name) const;
};

// Reads one HTTP/1.x response from bytes fed in arbitrary pieces.
class HttpResponseParser {
 public:
  // `on_body` may be empty (the body is then dropped). `head_request`: the
  // request was HEAD, so the response has no body whatever its headers say.
  explicit HttpResponseParser(HttpBodyFn on_body, bool head_request = false);

  // Consumes the next bytes of the connection. An error means the response
  // is malformed; the parser then stays failed. Once complete() or stopped(),
  // further bytes are ignored (one request is sent per connection).
  Status Feed(std::string_view data);
  // The connection closed: completes a body delimited by the close; an
  // IOError when the response was cut short.
  Status Finish();

  bool complete() const { return state_ == State::kComplete; }
  bool stopped() const { return stopped_; }
  // The final response's status line and headers; status is 0 until read.
  int status() const { return status_; }
  const std::string& reason() const { return reason_; }
  const std::vector<HttpHeader>& headers() const { return headers_; }
  // Moves the head out, for the caller's HttpResponse.
  void TakeHead(HttpResponse& response);

 private:
  enum class State {
    kStatusLine,
    kHeaders,
    kBody,  // Content-Length bytes
    kBodyUntilClose,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,  // the CRLF after a chunk's data
    kTrailers,
    kComplete,
    kFailed,
  };

  // Moves bytes of `data` into line_ up to a newline; sets have_line once
  // a whole line (without its CR LF) is there. `budget` counts the bytes
  // against `cap`: a longer line is a malformed response.
  Status TakeLine(std::string_view& data, size_t& budget, size_t cap,
                  bool& have_line);
  Status OnStatusLine(std::string_view line);
  Status OnHeaderLine(std::string_view line);
  Status OnHeadEnd();
  Status OnChunkSizeLine(std::string_view line);
  // Passes body bytes on; sets stopped_ when on_body says so.
  void Deliver(std::string_view data);
  Status Fail(std::string message);

  HttpBodyFn on_body_;
  bool head_request_;
  State state_ = State::kStatusLine;
  bool stopped_ = false;
  std::string error_;         // why it failed, repeated on later calls
  std::string line_;          // the line being assembled
  size_t head_bytes_ = 0;     // of the current head, against the cap
  size_t trailer_bytes_ = 0;  // of the trailers, against the cap
  uint64_t remaining_ = 0;    // body or chunk bytes still due
  int status_ = 0;
  std::string reason_;
  std::vector<HttpHeader> headers_;
};

class UnixHttpClient {
 public:
  explicit UnixHttpClient(std::string socket_path);

  const std::string& socket_path() const { return socket_path_; }

  // Connects, sends `request`, reads the response (see the errors above).
  // An HTTP error status is not an error here: the caller reads status.
  Result<HttpResponse> Send(const HttpRequest& request) const;

 private:
  std::string socket_path_;
};

}  // namespace drover

#endif  // DROVER_WORKERS_UNIX_HTTP_H_
