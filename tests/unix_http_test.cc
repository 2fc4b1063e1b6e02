// UnixHttpClient and HttpResponseParser (workers/unix_http.h): the parser
// fed valid responses cut at every point and malformed ones, then the
// client against in-process servers on unix sockets — canned answers, bytes
// dripped one at a time, a server that hangs up mid-body or never answers —
// and DockerClient's errors on top of it. No Docker daemon is needed.
#include "unix_http.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "docker_client.h"

namespace drover {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// What one parse produced, comparable across different splits.
struct Parsed {
  Code code = Code::kOk;
  std::string error;
  int status = 0;
  std::string body;
  bool complete = false;
  std::vector<std::pair<std::string, std::string>> headers;

  bool operator==(const Parsed&) const = default;
};

// Feeds `text` cut into pieces of the given sizes (the last repeated),
// then, when `eof`, tells the parser the connection closed.
Parsed ParsePieces(std::string_view text, const std::vector<size_t>& sizes,
                   bool eof, bool head_request = false) {
  Parsed p;
  HttpResponseParser parser(
      [&](int, std::string_view data) {
        p.body.append(data);
        return true;
      },
      head_request);
  Status s;
  for (size_t at = 0, i = 0; at < text.size() && s.ok(); ++i) {
    size_t n = std::min(sizes[std::min(i, sizes.size() - 1)], text.size() - at);
    s = parser.Feed(text.substr(at, n));
    at += n;
  }
  if (s.ok() && eof) s = parser.Finish();
  p.code = s.code();
  p.error = s.message();
  p.status = parser.status();
  p.complete = parser.complete();
  for (const HttpHeader& h : parser.headers()) {
    p.headers.emplace_back(h.name, h.value);
  }
  return p;
}

// Parses `text` whole, then split at every point, a byte at a time and in
// pieces of 2 to 13 bytes; every way must give the same result.
Parsed ParseEverySplit(std::string_view text, bool eof = false,
                       bool head_request = false) {
  Parsed whole = ParsePieces(text, {text.size() + 1}, eof, head_request);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    Parsed split = ParsePieces(text, {cut, text.size()}, eof, head_request);
    if (!(split == whole)) {
      FAIL_CHECK("split at " << cut << " differs: " << split.error);
    }
  }
  for (size_t piece = 1; piece <= 13; ++piece) {
    CHECK(ParsePieces(text, {piece}, eof, head_request) == whole);
  }
  return whole;
}

TEST_CASE("HttpResponseParser.ContentLength") {
  Parsed p = ParseEverySplit(
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: application/json\r\n"
      "content-LENGTH:   5  \r\n"
      "\r\n"
      "hello"
      "bytes after the response are not read");
  CHECK(p.code == Code::kOk);
  CHECK(p.complete);
  CHECK(p.status == 200);
  CHECK(p.body == "hello");
  REQUIRE(p.headers.size() == 2);
  CHECK(p.headers[1].first == "content-LENGTH");
  CHECK(p.headers[1].second == "5");
}

TEST_CASE("HttpResponseParser.ChunkedWithExtensionsAndTrailers") {
  Parsed p = ParseEverySplit(
      "HTTP/1.1 200 OK\r\n"
      "Transfer-Encoding: Chunked\r\n"
      "Content-Length: 3\r\n"  // ignored: Transfer-Encoding wins
      "\r\n"
      "5;name=value\r\n"
      "hello\r\n"
      "1a ; quoted=\"a;b\"\r\n"
      "abcdefghijklmnopqrstuvwxyz\r\n"
      "000001\r\n"
      "!\r\n"
      "0;last\r\n"
      "X-Trailer: 1\r\n"
      "Another: two\r\n"
      "\r\n"
      "ignored");
  CHECK(p.code == Code::kOk);
  CHECK(p.complete);
  CHECK(p.body == "helloabcdefghijklmnopqrstuvwxyz!");
}

TEST_CASE("HttpResponseParser.EmptyChunkedBodyAndBareNewlines") {
  Parsed p = ParseEverySplit(
      "HTTP/1.1 200 OK\n"
      "Transfer-Encoding: chunked\n"
      "\n"
      "0\n"
      "\n");
  CHECK(p.code == Code::kOk);
  CHECK(p.complete);
  CHECK(p.body.empty());
}

TEST_CASE("HttpResponseParser.CloseDelimitedBody") {
  std::string text = "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nall of this\r\n";
  Parsed open = ParseEverySplit(text);
  CHECK(open.code == Code::kOk);
  CHECK(!open.complete);  // until the connection closes
  Parsed closed = ParseEverySplit(text, /*eof=*/true);
  CHECK(closed.code == Code::kOk);
  CHECK(closed.complete);
  CHECK(closed.body == "all of this\r\n");
}

TEST_CASE("HttpResponseParser.InterimResponsesAreSkipped") {
  Parsed p = ParseEverySplit(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 102 Processing\r\nX-Interim: yes\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
  CHECK(p.code == Code::kOk);
  CHECK(p.complete);
  CHECK(p.status == 201);
  CHECK(p.body == "ok");
  CHECK(p.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Content-Length", "2"}});
}

TEST_CASE("HttpResponseParser.ResponsesWithoutABody") {
  // 204 and 304 end with their head, whatever follows.
  for (const char* text :
       {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nnot a body",
        "HTTP/1.1 304 Not Modified\r\n\r\n"}) {
    Parsed p = ParseEverySplit(text);
    CHECK(p.code == Code::kOk);
    CHECK(p.complete);
    CHECK(p.body.empty());
  }
  // So does the answer to HEAD.
  Parsed head = ParseEverySplit(
      "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false, true);
  CHECK(head.complete);
  CHECK(head.body.empty());
  // A zero Content-Length is a complete, empty body.
  Parsed empty =
      ParseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(empty.complete);
  CHECK(empty.status == 200);
}

TEST_CASE("HttpResponseParser.SinkStopsTheTransfer") {
  HttpResponseParser parser([](int status, std::string_view data) {
    CHECK(status == 200);
    CHECK(data == "abc");
    return false;
  });
  CHECK(parser.Feed("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc").ok());
  CHECK(parser.stopped());
  CHECK(!parser.complete());
  CHECK(parser.Feed("def").ok());  // ignored, not passed on
  CHECK(parser.Finish().ok());
}

TEST_CASE("HttpResponseParser.MalformedResponsesAreErrors") {
  const std::string ok_head = "HTTP/1.1 200 OK\r\n";
  const std::string chunked = ok_head + "Transfer-Encoding: chunked\r\n\r\n";
  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"garbage\r\n\r\n", "bad status line \"garbage\""},
      {"SSH-2.0-OpenSSH_9.2\r\n", "bad status line"},
      {"HTTP/1.1 20 OK\r\n\r\n", "bad status line"},
      {"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"},
      {"HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"},
      {"HTTP/2 200 OK\r\n\r\n", "bad status line"},
      {"HTTP/1.1 099 Low\r\n\r\n", "status code out of range"},
      {"HTTP/1.1 600 High\r\n\r\n", "status code out of range"},
      {"HTTP/1.1 200 O\x01K\r\n\r\n", "bad status line"},
      {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101"},
      {ok_head + "No colon here\r\n\r\n", "bad header line"},
      {ok_head + ": no name\r\n\r\n", "bad header line"},
      {ok_head + "Bad Name: x\r\n\r\n", "bad header line"},
      {ok_head + "A: 1\r\n folded\r\n\r\n", "folded header line"},
      {ok_head + "A: bell\x07\r\n\r\n", "bad header value"},
      {ok_head + "A: cr\rinside\r\n\r\n", "bad header value"},
      {ok_head + "Content-Length: -1\r\n\r\n", "bad Content-Length \"-1\""},
      {ok_head + "Content-Length: +1\r\n\r\n", "bad Content-Length"},
      {ok_head + "Content-Length: \r\n\r\n", "bad Content-Length"},
      {ok_head + "Content-Length: 5, 5\r\n\r\n", "bad Content-Length"},
      {ok_head + "Content-Length: 0x10\r\n\r\n", "bad Content-Length"},
      {ok_head + "Content-Length: 99999999999999999999999\r\n\r\n",
       "bad Content-Length"},
      {ok_head + "Content-Length: 18446744073709551617\r\n\r\n",
       "bad Content-Length"},
      {ok_head + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
       "conflicting Content-Length"},
      {ok_head + "Transfer-Encoding: gzip\r\n\r\n",
       "unsupported Transfer-Encoding \"gzip\""},
      {ok_head + "Transfer-Encoding: gzip, chunked\r\n\r\n",
       "unsupported Transfer-Encoding"},
      {ok_head + "Transfer-Encoding: chunked, chunked\r\n\r\n",
       "unsupported Transfer-Encoding"},
      {chunked + "zz\r\n", "bad chunk size \"zz\""},
      {chunked + "\r\n", "bad chunk size"},
      {chunked + "-5\r\n", "bad chunk size"},
      {chunked + "5 x\r\n", "bad chunk size"},
      {chunked + "FFFFFFFFFFFFFFFFFFFFFF\r\n", "chunk size too large"},
      {chunked + "10000000000000000\r\n", "chunk size too large"},
      {chunked + "3\r\nabcX\r\n", "chunk data not followed by CRLF"},
      {chunked + "3\r\nabc\r\r\n", "chunk data not followed by CRLF"},
      {chunked + "1;" + std::string(5000, 'x') + "\r\n",
       "chunk-size line too long"},
      {ok_head + "X: " + std::string(70 << 10, 'a') + "\r\n\r\n",
       "head over 65536 bytes"},
      {std::string(70 << 10, '\n'), "head over 65536 bytes"},
      {chunked + "0\r\nX: " + std::string(70 << 10, 'a') + "\r\n\r\n",
       "trailers over 65536 bytes"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.error);
    Parsed p = ParsePieces(c.text, {7}, true);
    CHECK(p.code == Code::kCorruption);
    CHECK(p.error.find("malformed HTTP response: " + c.error) !=
          std::string::npos);
  }

  std::string many = ok_head;
  for (int i = 0; i < 300; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  Parsed p = ParsePieces(many + "\r\n", {64}, false);
  CHECK(p.error.find("more than 256 headers") != std::string::npos);
}

TEST_CASE("HttpResponseParser.StaysFailed") {
  HttpResponseParser parser({});
  Status first = parser.Feed("nonsense\n");
  CHECK(first.code() == Code::kCorruption);
  Status again = parser.Feed("HTTP/1.1 200 OK\r\n\r\n");
  CHECK(again.message() == first.message());
  CHECK(parser.Finish().message() == first.message());
}

TEST_CASE("HttpResponseParser.CutShortIsAnIOError") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "the connection closed before a response arrived"},
      {"HTTP/1.1 200", "the connection closed inside the response head"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
       "the connection closed inside the response head"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234567",
       "the connection closed 3 bytes before the end of the body"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
       "the connection closed inside the chunked body"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
       "the connection closed inside the chunked body"},
  };
  for (const auto& [text, error] : cases) {
    Parsed p = ParseEverySplit(text, /*eof=*/true);
    CHECK(p.code == Code::kIOError);
    CHECK(p.error == error);
  }
}

// A server on a unix socket, one connection at a time: reads each request
// (head, and the body its Content-Length announces unless told not to),
// then hands the connection to `handler`, which answers and returns; the
// connection is closed after it.
class TestServer {
 public:
  // Gets the connection and the request read from it.
  using Handler = std::function<void(int fd, const std::string& request)>;
  explicit TestServer(Handler handler, bool read_body = true)
      : handler_(std::move(handler)), read_body_(read_body) {
    static std::atomic<int> counter{0};
    path_ = "/tmp/drover-unix-http-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter++) + ".sock";
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TestServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // Every request so far, head and body as received.
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    while (true) {
      int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) return;
      std::string request = ReadRequest(conn);
      {
        std::lock_guard lock(mu_);
        requests_.push_back(request);
      }
      handler_(conn, request);
      ::close(conn);
    }
  }

  std::string ReadRequest(int conn) {
    std::string data;
    char buf[4096];
    size_t end = std::string::npos;
    while ((end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::read(conn, buf, sizeof(buf));
      if (n <= 0) return data;
      data.append(buf, static_cast<size_t>(n));
    }
    size_t want = 0;
    if (size_t at = data.find("Content-Length: "); at < end) {
      want = std::stoul(data.substr(at + 16));
    }
    while (read_body_ && data.size() < end + 4 + want) {
      ssize_t n = ::read(conn, buf, sizeof(buf));
      if (n <= 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    return data;
  }

  Handler handler_;
  bool read_body_;
  std::string path_;
  int fd_ = -1;
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

// Writes all of `data`; false once the client is gone.
bool Write(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

TestServer::Handler Canned(std::string response) {
  return [response](int fd, const std::string&) { Write(fd, response); };
}

// Blocks until the client hangs up, saying nothing.
void Silent(int fd, const std::string& = {}) {
  char c;
  while (::read(fd, &c, 1) > 0) {
  }
}

HttpRequest Get(std::string target) {
  HttpRequest r;
  r.target = std::move(target);
  r.timeout = milliseconds(5'000);
  return r;
}

TEST_CASE("UnixHttpClient.SendsTheRequestAndReadsTheAnswer") {
  TestServer server(
      Canned("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
             "Content-Length: 11\r\n\r\n{\"Id\":\"c\"}\n"));
  UnixHttpClient client(server.path());
  HttpRequest post = Get("/v1.41/containers/create?name=x");
  post.method = "POST";
  post.headers = {"Content-Type: application/json", "X-Registry-Auth: abc"};
  post.body = "{\"Image\":\"busybox\"}";
  Result<HttpResponse> r = client.Send(post);
  REQUIRE(r.ok());
  CHECK(r->status == 201);
  CHECK(r->reason == "Created");
  CHECK(r->body == "{\"Id\":\"c\"}\n");
  REQUIRE(r->Header("content-type") != nullptr);
  CHECK(*r->Header("CONTENT-TYPE") == "application/json");
  CHECK(r->Header("X-Missing") == nullptr);
  CHECK(server.requests().back() ==
        "POST /v1.41/containers/create?name=x HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        "X-Registry-Auth: abc\r\n"
        "Content-Length: 19\r\n"
        "Connection: close\r\n"
        "\r\n"
        "{\"Image\":\"busybox\"}");

  // A POST without a body still says so; a GET does not.
  post.body = {};
  REQUIRE(client.Send(post).ok());
  CHECK(server.requests().back().find("Content-Length: 0\r\n") !=
        std::string::npos);
  REQUIRE(client.Send(Get("/_ping")).ok());
  CHECK(server.requests().back() ==
        "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
}

TEST_CASE("UnixHttpClient.SendsALargeBody") {
  // Larger than the socket buffers, so it goes out over many writes.
  std::string tar(1 << 20, 'x');
  for (size_t i = 0; i < tar.size(); i += 4096) tar[i] = static_cast<char>(i);
  TestServer server(Canned("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  HttpRequest put = Get("/containers/c/archive?path=%2Fx");
  put.method = "PUT";
  put.body = tar;
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(put);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  std::string got = server.requests().back();
  CHECK(got.size() > tar.size());
  CHECK(got.substr(got.size() - tar.size()) == tar);
}

TEST_CASE("UnixHttpClient.ReadsAnAnswerSentBeforeTheBodyWasRead") {
  // The server answers after the head and hangs up with the body unread.
  TestServer server(
      Canned("HTTP/1.1 413 Too Large\r\nContent-Length: 7\r\n\r\ntoo big"),
      /*read_body=*/false);
  HttpRequest put = Get("/containers/c/archive");
  put.method = "PUT";
  std::string body(4 << 20, 'x');
  put.body = body;
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(put);
  REQUIRE(r.ok());
  CHECK(r->status == 413);
  CHECK(r->body == "too big");
}

TEST_CASE("UnixHttpClient.ReassemblesBytesDrippedOneAtATime") {
  const std::string response =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nTrailer: x\r\n\r\n";
  TestServer server([&](int fd, const std::string&) {
    for (char c : response) {
      if (!Write(fd, std::string_view(&c, 1))) return;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
    Silent(fd);  // the client must not wait for the close
  });
  std::string body;
  int pieces = 0;
  HttpRequest get = Get("/containers/c/logs?follow=1");
  get.on_body = [&](int status, std::string_view data) {
    CHECK(status == 200);
    body.append(data);
    ++pieces;
    return true;
  };
  int polls = 0;
  get.cancel = [&] {
    ++polls;
    return false;
  };
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(get);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(body == "abcdefg");
  CHECK(r->body.empty());  // it went to on_body
  CHECK(pieces >= 2);
  CHECK(polls >= pieces);  // asked on every piece of data
}

TEST_CASE("UnixHttpClient.CloseDelimitedAndHeadAnswers") {
  TestServer close_server(Canned("HTTP/1.0 200 OK\r\n\r\nuntil the end"));
  Result<HttpResponse> r = UnixHttpClient(close_server.path()).Send(Get("/"));
  REQUIRE(r.ok());
  CHECK(r->body == "until the end");

  // The answer to HEAD announces a body it does not send: the call ends
  // with the head, not when the server hangs up.
  TestServer head_server([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    Silent(fd);
  });
  HttpRequest head = Get("/images/x/json");
  head.method = "HEAD";
  Result<HttpResponse> h = UnixHttpClient(head_server.path()).Send(head);
  REQUIRE(h.ok());
  CHECK(h->status == 200);
  CHECK(h->body.empty());
}

TEST_CASE("UnixHttpClient.SinkStopsAnEndlessStream") {
  TestServer server([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (Write(fd, "5\r\nline\n\r\n")) {
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  HttpRequest get = Get("/containers/c/logs?follow=1");
  get.timeout = milliseconds(0);
  std::string seen;
  get.on_body = [&](int, std::string_view data) {
    seen.append(data);
    return seen.size() < 20;
  };
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(get);
  REQUIRE(r.ok());
  CHECK(r->stopped);
  CHECK(seen.size() >= 20);
}

TEST_CASE("UnixHttpClient.ServerHangsUpMidBody") {
  TestServer server([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
  });
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(Get("/x"));
  CHECK(r.status().code() == Code::kIOError);
  CHECK(r.status().message() ==
        "the connection closed 90 bytes before the end of the body");

  TestServer mute([](int, const std::string&) {});
  Result<HttpResponse> none = UnixHttpClient(mute.path()).Send(Get("/x"));
  CHECK(none.status().code() == Code::kIOError);
  CHECK(none.status().message() ==
        "the connection closed before a response arrived");
}

TEST_CASE("UnixHttpClient.HostileAnswers") {
  // An endless head: the call fails at the cap rather than buffering it.
  TestServer endless([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nX-Big: ");
    std::string junk(64 << 10, 'a');
    while (Write(fd, junk)) {
    }
  });
  Result<HttpResponse> r = UnixHttpClient(endless.path()).Send(Get("/x"));
  CHECK(r.status().code() == Code::kCorruption);
  CHECK(r.status().message().find("head over") != std::string::npos);

  TestServer ssh(Canned("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"));
  r = UnixHttpClient(ssh.path()).Send(Get("/x"));
  CHECK(r.status().code() == Code::kCorruption);
  CHECK(r.status().message().find("bad status line") != std::string::npos);

  // A body over the cap of a buffered answer.
  TestServer big(Canned("HTTP/1.1 200 OK\r\n\r\n" + std::string(5000, 'b')));
  HttpRequest get = Get("/x");
  get.max_body_bytes = 4096;
  r = UnixHttpClient(big.path()).Send(get);
  CHECK(r.status().code() == Code::kCorruption);
  CHECK(r.status().message() == "response body over 4096 bytes");
}

TEST_CASE("UnixHttpClient.TimeoutAndCancel") {
  TestServer server(Silent);
  UnixHttpClient client(server.path());

  auto start = Clock::now();
  HttpRequest get = Get("/containers/c/wait");
  get.timeout = milliseconds(150);
  Result<HttpResponse> r = client.Send(get);
  CHECK(r.status().code() == Code::kTimeout);
  CHECK(r.status().message() == "no answer within 150 ms");
  CHECK(Clock::now() - start >= milliseconds(150));
  CHECK(Clock::now() - start < milliseconds(1000));

  // Cancelled before it starts.
  get.timeout = milliseconds(0);
  get.cancel = [] { return true; };
  start = Clock::now();
  r = client.Send(get);
  CHECK(r.status().code() == Code::kTimeout);
  CHECK(r.status().message() == "cancelled");
  CHECK(Clock::now() - start < milliseconds(200));

  // Cancelled while nothing arrives: noticed at the next poll, about a
  // second later.
  start = Clock::now();
  get.cancel = [&] { return Clock::now() - start > milliseconds(50); };
  r = client.Send(get);
  CHECK(r.status().message() == "cancelled");
  auto took = Clock::now() - start;
  CHECK(took >= milliseconds(900));
  CHECK(took < milliseconds(1500));
}

TEST_CASE("UnixHttpClient.CancelledWhileDataArrives") {
  TestServer server([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (Write(fd, "1\r\n.\r\n")) {
      std::this_thread::sleep_for(milliseconds(2));
    }
  });
  int pieces = 0;
  HttpRequest get = Get("/images/create");
  get.timeout = milliseconds(0);
  get.on_body = [&](int, std::string_view) {
    ++pieces;
    return true;
  };
  get.cancel = [&] { return pieces >= 5; };
  auto start = Clock::now();
  Result<HttpResponse> r = UnixHttpClient(server.path()).Send(get);
  CHECK(r.status().message() == "cancelled");
  CHECK(Clock::now() - start < milliseconds(500));
}

TEST_CASE("UnixHttpClient.ConnectErrors") {
  std::string missing = "/tmp/drover-no-such-dir/docker.sock";
  Result<HttpResponse> r = UnixHttpClient(missing).Send(Get("/_ping"));
  CHECK(r.status().code() == Code::kUnavailable);
  CHECK(r.status().message() == "No such file or directory");

  // Bound but not listening: refused.
  std::string path =
      "/tmp/drover-unix-http-refused-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  r = UnixHttpClient(path).Send(Get("/_ping"));
  CHECK(r.status().code() == Code::kUnavailable);
  CHECK(r.status().message() == "Connection refused");
  ::close(fd);
  ::unlink(path.c_str());

  r = UnixHttpClient("/tmp/" + std::string(200, 'x')).Send(Get("/_ping"));
  CHECK(r.status().code() == Code::kUnavailable);
  CHECK(r.status().message() == "socket path longer than 107 bytes");
}

TEST_CASE("UnixHttpClient.RefusesRequestsThatAreNotHttp") {
  UnixHttpClient client("/tmp/drover-no-such-dir/docker.sock");
  HttpRequest bad = Get("/images/has space/json");
  CHECK(client.Send(bad).status().code() == Code::kInvalidArgument);
  bad = Get("/x\r\nInjected: yes");
  CHECK(client.Send(bad).status().code() == Code::kInvalidArgument);
  bad = Get("/x");
  bad.headers = {"X-Auth: a\r\nInjected: yes"};
  CHECK(client.Send(bad).status().code() == Code::kInvalidArgument);
  bad.headers = {"Content-Length: 5"};
  CHECK(client.Send(bad).status().code() == Code::kInvalidArgument);
  bad = Get("/x");
  bad.method = "GE T";
  CHECK(client.Send(bad).status().code() == Code::kInvalidArgument);
}

TEST_CASE("UnixHttpClient.ManyThreadsAtOnce") {
  TestServer server(Canned("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  UnixHttpClient client(server.path());
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        Result<HttpResponse> r = client.Send(Get("/_ping"));
        if (r.ok() && r->body == "ok") ++good;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(good == 80);
}

// DockerClient's errors as its callers (and docs/DOCKER.md) know them.
TEST_CASE("DockerClient.ErrorsOverTheUnixSocket") {
  TestServer cut([](int fd, const std::string&) {
    Write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nOK");
  });
  Status s = DockerClient(cut.path()).Ping();
  CHECK(s.code() == Code::kUnavailable);
  CHECK(s.message() == "Docker daemon not reachable at " + cut.path() +
                           ": connection failed during GET /_ping: the "
                           "connection closed 8 bytes before the end of the "
                           "body");

  TestServer garbage(Canned("garbage\r\n\r\n"));
  s = DockerClient(garbage.path()).Ping();
  CHECK(s.code() == Code::kUnavailable);
  CHECK(s.message() == "Docker daemon not reachable at " + garbage.path() +
                           ": connection failed during GET /_ping: malformed "
                           "HTTP response: bad status line \"garbage\"");

  s = DockerClient("/tmp/drover-no-such-dir/docker.sock").Ping();
  CHECK(s.message() ==
        "Docker daemon not reachable at /tmp/drover-no-such-dir/docker.sock: "
        "no such socket");

  // The version first, then a wait that only a cancel ends.
  TestServer daemon([](int fd, const std::string& request) {
    if (request.starts_with("GET /version ")) {
      Write(fd,
            "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n"
            "{\"ApiVersion\":\"1.41\"}");
      return;
    }
    Silent(fd, request);
  });
  DockerClient client(daemon.path());
  Result<int64_t> code = client.ContainerWait("c", [] { return true; });
  CHECK(code.status().code() == Code::kTimeout);
  CHECK(code.status().message() ==
        "Docker API call POST /containers/c/wait cancelled");

  // An image name that cannot go into a request line.
  Result<bool> exists = client.ImageExists("bad name");
  CHECK(exists.status().code() == Code::kInvalidArgument);
}

}  // namespace
}  // namespace drover
