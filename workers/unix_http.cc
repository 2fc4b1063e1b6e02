#include "unix_http.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

namespace drover {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A chunk-size line is a hex number and extensions nobody sends; more than
// this is not a chunked body.
constexpr size_t kMaxChunkLineBytes = 4 << 10;
// Each header line costs a string pair; the head cap alone would allow
// tens of thousands of tiny ones.
constexpr size_t kMaxHeaderLines = 256;
// Body and chunk lengths above this are lies, whatever the digits say; it
// keeps the arithmetic far from overflow.
constexpr uint64_t kMaxLength = uint64_t{1} << 60;
constexpr milliseconds kCancelPollInterval{1000};
// How long to wait before connecting again to a socket whose listen queue
// is full (a non-blocking AF_UNIX connect says EAGAIN and cannot be polled).
constexpr milliseconds kConnectRetryDelay{10};

char Lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](char x, char y) { return Lower(x) == Lower(y); });
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Control characters other than tab have no place in a header value or a
// reason phrase.
bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// What the server sent, fit for an error message: short and printable.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 60;
  std::string out = "\"";
  for (char c : s.substr(0, kMax)) {
    auto u = static_cast<unsigned char>(c);
    out += u >= 0x20 && u < 0x7f ? c : '?';
  }
  if (s.size() > kMax) out += "...";
  return out + "\"";
}

// Decimal digits only (no sign, no list); nullopt when not that or too big.
std::optional<uint64_t> ParseLength(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > kMaxLength) return std::nullopt;
  }
  return value;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Errno(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

}  // namespace

const std::string* HttpResponse::Header(std::string_view name) const {
  for (const HttpHeader& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) return &h.value;
  }
  return nullptr;
}

HttpResponseParser::HttpResponseParser(HttpBodyFn on_body, bool head_request)
    : on_body_(std::move(on_body)), head_request_(head_request) {}

Status HttpResponseParser::Fail(std::string message) {
  state_ = State::kFailed;
  error_ = "malformed HTTP response: " + message;
  return Status::Corruption(error_);
}

Status HttpResponseParser::TakeLine(std::string_view& data, size_t& budget,
                                    size_t cap, bool& have_line) {
  size_t newline = data.find('\n');
  size_t take = newline == std::string_view::npos ? data.size() : newline + 1;
  if (budget + take > cap) {
    return Fail(state_ == State::kChunkSize ? "chunk-size line too long"
                : state_ == State::kTrailers
                    ? "trailers over " + std::to_string(cap) + " bytes"
                    : "head over " + std::to_string(cap) + " bytes");
  }
  budget += take;
  have_line = newline != std::string_view::npos;
  line_.append(data.substr(0, have_line ? newline : take));
  data.remove_prefix(take);
  if (have_line && !line_.empty() && line_.back() == '\r') line_.pop_back();
  return Status::Ok();
}

Status HttpResponseParser::OnStatusLine(std::string_view line) {
  // Stray empty lines before a status line are tolerated (RFC 9112 2.2).
  if (line.empty()) return Status::Ok();
  // HTTP-version SP 3DIGIT [SP reason-phrase]
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[7] < '0' ||
      line[7] > '9' || line[8] != ' ' ||
      (line.size() > 12 && line[12] != ' ')) {
    return Fail("bad status line " + Quote(line));
  }
  int code = 0;
  for (char c : line.substr(9, 3)) {
    if (c < '0' || c > '9') return Fail("bad status line " + Quote(line));
    code = code * 10 + (c - '0');
  }
  if (code < 100 || code > 599) {
    return Fail("status code out of range in " + Quote(line));
  }
  std::string_view reason = line.size() > 13 ? line.substr(13) : "";
  if (HasControl(reason)) return Fail("bad status line " + Quote(line));
  status_ = code;
  reason_ = std::string(reason);
  headers_.clear();
  state_ = State::kHeaders;
  return Status::Ok();
}

Status HttpResponseParser::OnHeaderLine(std::string_view line) {
  if (line.empty()) return OnHeadEnd();
  if (line.front() == ' ' || line.front() == '\t') {
    return Fail("folded header line " + Quote(line));
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
    return Fail("bad header line " + Quote(line));
  }
  std::string_view value = TrimSpace(line.substr(colon + 1));
  if (HasControl(value)) return Fail("bad header value in " + Quote(line));
  if (headers_.size() == kMaxHeaderLines) {
    return Fail("more than " + std::to_string(kMaxHeaderLines) + " headers");
  }
  headers_.push_back({std::string(line.substr(0, colon)), std::string(value)});
  return Status::Ok();
}

Status HttpResponseParser::OnHeadEnd() {
  if (status_ < 200) {
    // Nothing here asks to switch protocols; any other 1xx is interim and
    // the real response follows.
    if (status_ == 101) return Fail("unexpected 101 Switching Protocols");
    state_ = State::kStatusLine;
    status_ = 0;
    reason_.clear();
    headers_.clear();
    head_bytes_ = 0;
    return Status::Ok();
  }
  if (head_request_ || status_ == 204 || status_ == 304) {
    state_ = State::kComplete;
    return Status::Ok();
  }
  bool chunked = false;
  std::optional<uint64_t> length;
  for (const HttpHeader& h : headers_) {
    if (EqualsIgnoreCase(h.name, "Transfer-Encoding")) {
      // Only "chunked" is understood: nothing here asks for compression.
      std::string_view codings = h.value;
      while (!codings.empty()) {
        size_t comma = codings.find(',');
        std::string_view coding = TrimSpace(codings.substr(0, comma));
        codings.remove_prefix(comma == std::string_view::npos ? codings.size()
                                                              : comma + 1);
        if (coding.empty()) continue;
        if (chunked || !EqualsIgnoreCase(coding, "chunked")) {
          return Fail("unsupported Transfer-Encoding " + Quote(h.value));
        }
        chunked = true;
      }
    } else if (EqualsIgnoreCase(h.name, "Content-Length")) {
      std::optional<uint64_t> n = ParseLength(h.value);
      if (!n) return Fail("bad Content-Length " + Quote(h.value));
      if (length && *length != *n) return Fail("conflicting Content-Length");
      length = n;
    }
  }
  // With both, Transfer-Encoding wins (RFC 9112 6.3).
  if (chunked) {
    state_ = State::kChunkSize;
  } else if (length) {
    remaining_ = *length;
    state_ = remaining_ == 0 ? State::kComplete : State::kBody;
  } else {
    state_ = State::kBodyUntilClose;
  }
  return Status::Ok();
}

Status HttpResponseParser::OnChunkSizeLine(std::string_view line) {
  // chunk-size [BWS ; chunk-ext]; the extensions mean nothing to us.
  uint64_t size = 0;
  size_t i = 0;
  for (; i < line.size() && HexValue(line[i]) >= 0; ++i) {
    if (size > kMaxLength / 16) {
      return Fail("chunk size too large " + Quote(line));
    }
    size = size * 16 + static_cast<uint64_t>(HexValue(line[i]));
  }
  std::string_view rest = TrimSpace(line.substr(i));
  if (i == 0 || (!rest.empty() && rest.front() != ';')) {
    return Fail("bad chunk size " + Quote(line));
  }
  remaining_ = size;
  state_ = size == 0 ? State::kTrailers : State::kChunkData;
  return Status::Ok();
}

void HttpResponseParser::Deliver(std::string_view data) {
  if (!data.empty() && on_body_ && !on_body_(status_, data)) stopped_ = true;
}

Status HttpResponseParser::Feed(std::string_view data) {
  while (!data.empty() && !stopped_) {
    switch (state_) {
      case State::kComplete:
        return Status::Ok();
      case State::kFailed:
        return Status::Corruption(error_);
      case State::kStatusLine:
      case State::kHeaders:
      case State::kChunkSize:
      case State::kTrailers: {
        bool have_line = false;
        size_t chunk_line_budget = line_.size();
        size_t& budget = state_ == State::kChunkSize  ? chunk_line_budget
                         : state_ == State::kTrailers ? trailer_bytes_
                                                      : head_bytes_;
        size_t cap = state_ == State::kChunkSize ? kMaxChunkLineBytes
                                                 : kMaxHttpHeadBytes;
        if (Status s = TakeLine(data, budget, cap, have_line); !s.ok()) {
          return s;
        }
        if (!have_line) return Status::Ok();
        std::string line = std::move(line_);
        line_.clear();
        Status s = Status::Ok();
        if (state_ == State::kStatusLine) {
          s = OnStatusLine(line);
        } else if (state_ == State::kHeaders) {
          s = OnHeaderLine(line);
        } else if (state_ == State::kChunkSize) {
          s = OnChunkSizeLine(line);
        } else if (line.empty()) {
          state_ = State::kComplete;  // trailers are read and dropped
        }
        if (!s.ok()) return s;
        break;
      }
      case State::kBody:
      case State::kChunkData: {
        size_t take =
            static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        std::string_view piece = data.substr(0, take);
        data.remove_prefix(take);
        remaining_ -= take;
        if (remaining_ == 0) {
          state_ =
              state_ == State::kBody ? State::kComplete : State::kChunkDataEnd;
        }
        Deliver(piece);
        break;
      }
      case State::kChunkDataEnd:
        if (data.front() == '\n') {
          data.remove_prefix(1);
          line_.clear();
          state_ = State::kChunkSize;
        } else if (data.front() == '\r' && line_.empty()) {
          data.remove_prefix(1);
          line_ = "\r";
        } else {
          return Fail("chunk data not followed by CRLF");
        }
        break;
      case State::kBodyUntilClose:
        Deliver(data);
        data = {};
        break;
    }
  }
  return state_ == State::kFailed ? Status::Corruption(error_) : Status::Ok();
}

Status HttpResponseParser::Finish() {
  switch (state_) {
    case State::kFailed:
      return Status::Corruption(error_);
    case State::kComplete:
      return Status::Ok();
    case State::kBodyUntilClose:
      state_ = State::kComplete;
      return Status::Ok();
    default:
      break;
  }
  if (stopped_) return Status::Ok();
  std::string where =
      state_ == State::kStatusLine && head_bytes_ == 0 && line_.empty()
          ? "before a response arrived"
      : state_ == State::kStatusLine || state_ == State::kHeaders
          ? "inside the response head"
      : state_ == State::kBody
          ? std::to_string(remaining_) + " bytes before the end of the body"
          : "inside the chunked body";
  return Status::IOError("the connection closed " + where);
}

void HttpResponseParser::TakeHead(HttpResponse& response) {
  response.status = status_;
  response.reason = std::move(reason_);
  response.headers = std::move(headers_);
  reason_.clear();
  headers_.clear();
}

namespace {

// Closes the socket on every way out of Send.
class Socket {
 public:
  Socket()
      : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// The call's deadlines and its cancel polling.
class CallClock {
 public:
  explicit CallClock(const HttpRequest& request)
      : request_(request), start_(Clock::now()), next_cancel_poll_(start_) {
    if (request.timeout.count() > 0) deadline_ = start_ + request.timeout;
    connect_deadline_ = std::min(deadline_, start_ + request.connect_timeout);
  }

  // Timeout when the call's deadline passed or it was cancelled. The
  // CancelFn is asked when `data_arrived` or once a second.
  Status Check(bool data_arrived) {
    Clock::time_point now = Clock::now();
    if (now >= deadline_) {
      return Status::Timeout("no answer within " +
                             std::to_string(request_.timeout.count()) + " ms");
    }
    if (request_.cancel && (data_arrived || now >= next_cancel_poll_)) {
      next_cancel_poll_ = now + kCancelPollInterval;
      if (request_.cancel()) return Status::Timeout("cancelled");
    }
    return Status::Ok();
  }

  bool ConnectExpired() const { return Clock::now() >= connect_deadline_; }

  // How long poll(2) may sleep: until the next cancel poll or the deadline.
  int PollMs() const {
    Clock::time_point now = Clock::now();
    Clock::time_point until = std::min(deadline_, now + kCancelPollInterval);
    if (request_.cancel) until = std::min(until, next_cancel_poll_);
    auto ms = std::chrono::ceil<milliseconds>(until - now).count();
    return static_cast<int>(std::max<int64_t>(ms, 0));
  }

 private:
  const HttpRequest& request_;
  Clock::time_point start_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point connect_deadline_;
  Clock::time_point next_cancel_poll_;
};

Status CheckRequest(const HttpRequest& request) {
  if (!IsToken(request.method)) {
    return Status::InvalidArgument("bad HTTP method " + Quote(request.method));
  }
  if (request.target.empty() || request.target.front() != '/' ||
      std::any_of(request.target.begin(), request.target.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
      })) {
    return Status::InvalidArgument(
        "request target must start with / and hold no spaces or control "
        "characters: " +
        Quote(request.target));
  }
  for (const std::string& h : request.headers) {
    size_t colon = h.find(':');
    std::string_view name = std::string_view(h).substr(0, colon);
    if (colon == std::string::npos || !IsToken(name) ||
        HasControl(std::string_view(h).substr(colon + 1))) {
      return Status::InvalidArgument("bad header line " + Quote(h));
    }
    for (std::string_view own :
         {"Host", "Content-Length", "Connection", "Transfer-Encoding"}) {
      if (EqualsIgnoreCase(name, own)) {
        return Status::InvalidArgument(std::string(own) +
                                       " is set by UnixHttpClient");
      }
    }
  }
  return Status::Ok();
}

std::string FormatHead(const HttpRequest& request) {
  std::string head =
      request.method + " " + request.target + " HTTP/1.1\r\nHost: docker\r\n";
  for (const std::string& h : request.headers) head += h + "\r\n";
  if (!request.body.empty() || request.method == "POST" ||
      request.method == "PUT" || request.method == "PATCH") {
    head += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  head += "Connection: close\r\n\r\n";
  return head;
}

Status Connect(int fd, const std::string& path, CallClock& clock) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::Unavailable("socket path longer than " +
                               std::to_string(sizeof(addr.sun_path) - 1) +
                               " bytes");
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  while (true) {
    if (Status s = clock.Check(false); !s.ok()) return s;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) ==
        0) {
      return Status::Ok();
    }
    int err = errno;
    if (err == EINPROGRESS) {
      // Not what Linux does for AF_UNIX, but harmless to handle.
      pollfd p{fd, POLLOUT, 0};
      int ready;
      while ((ready = ::poll(&p, 1, clock.PollMs())) <= 0) {
        if (ready < 0 && errno != EINTR) {
          return Status::Unavailable(Errno("poll", errno));
        }
        if (Status s = clock.Check(false); !s.ok()) return s;
        if (clock.ConnectExpired()) {
          return Status::Unavailable("the connection was not accepted in time");
        }
      }
      socklen_t len = sizeof(err);
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0) return Status::Ok();
    }
    if (err != EAGAIN) return Status::Unavailable(std::strerror(err));
    // EAGAIN: the server's listen queue is full; it may drain.
    if (clock.ConnectExpired()) {
      return Status::Unavailable("the connection was not accepted in time");
    }
    std::this_thread::sleep_for(kConnectRetryDelay);
  }
}

// Sends what is left of `out` (the head, then the body) without blocking.
// Returns 0, or the errno that ended sending.
int SendSome(int fd, std::array<std::string_view, 2>& out) {
  while (!out[0].empty() || !out[1].empty()) {
    std::array<iovec, 2> iov{};
    for (size_t i = 0; i < 2; ++i) {
      iov[i].iov_base = const_cast<char*>(out[i].data());
      iov[i].iov_len = out[i].size();
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = out[0].empty() ? 1 : 2;
    if (out[0].empty()) msg.msg_iov = &iov[1];
    // MSG_NOSIGNAL: a server that hangs up must not SIGPIPE the worker.
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
    }
    auto sent = static_cast<size_t>(n);
    for (std::string_view& part : out) {
      size_t take = std::min(sent, part.size());
      part.remove_prefix(take);
      sent -= take;
    }
  }
  return 0;
}

}  // namespace

UnixHttpClient::UnixHttpClient(std::string socket_path)
    : socket_path_(std::move(socket_path)) {}

Result<HttpResponse> UnixHttpClient::Send(const HttpRequest& request) const {
  if (Status s = CheckRequest(request); !s.ok()) return s;
  CallClock clock(request);
  Socket socket;
  if (socket.fd() < 0) return Status::Unavailable(Errno("socket", errno));
  if (Status s = Connect(socket.fd(), socket_path_, clock); !s.ok()) return s;

  std::string body;
  bool overflow = false;
  HttpBodyFn on_body = request.on_body;
  if (!on_body) {
    on_body = [&](int, std::string_view data) {
      if (body.size() + data.size() > request.max_body_bytes) {
        overflow = true;
        return false;
      }
      body.append(data);
      return true;
    };
  }
  HttpResponseParser parser(std::move(on_body), request.method == "HEAD");

  const std::string head = FormatHead(request);
  std::array<std::string_view, 2> out = {head, request.body};
  bool sending = true;
  int send_error = 0;
  std::array<char, 16 << 10> buffer;
  while (!parser.complete() && !parser.stopped()) {
    if (Status s = clock.Check(false); !s.ok()) return s;
    pollfd p{socket.fd(), static_cast<short>(POLLIN | (sending ? POLLOUT : 0)),
             0};
    int ready = ::poll(&p, 1, clock.PollMs());
    if (ready < 0 && errno != EINTR)
      return Status::IOError(Errno("poll", errno));
    if (ready <= 0) continue;
    if (sending && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      // A server may answer (an error, say) before reading the whole body
      // and hang up: what it sent is still read below.
      send_error = SendSome(socket.fd(), out);
      sending = send_error == 0 && (!out[0].empty() || !out[1].empty());
    }
    if (!(p.revents & (POLLIN | POLLERR | POLLHUP))) continue;
    ssize_t n = ::recv(socket.fd(), buffer.data(), buffer.size(), 0);
    if (n > 0) {
      if (Status s = clock.Check(true); !s.ok()) return s;
      Status s = parser.Feed(std::string_view(buffer.data(), n));
      if (!s.ok()) return s;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      continue;
    }
    // The connection ended: closed (0) or reset.
    int recv_error = n < 0 ? errno : 0;
    Status s = parser.Finish();
    if (s.ok() && recv_error != 0) {
      // A reset cannot end a body delimited by the close.
      s = Status::IOError(Errno("recv", recv_error));
    }
    if (!s.ok()) {
      if (send_error != 0) {
        return Status(s.code(), s.message() + " (sending the request: " +
                                    std::strerror(send_error) + ")");
      }
      return s;
    }
  }
  if (overflow) {
    return Status::Corruption("response body over " +
                              std::to_string(request.max_body_bytes) +
                              " bytes");
  }
  HttpResponse response;
  parser.TakeHead(response);
  response.body = std::move(body);
  response.stopped = parser.stopped();
  return response;
}

}  // namespace drover
