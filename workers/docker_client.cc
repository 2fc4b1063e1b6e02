#include "docker_client.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "unix_http.h"

namespace drover {
namespace {

using Json = nlohmann::json;

// Ordinary calls are quick; one that takes this long means the daemon is
// stuck, which the caller should hear about rather than wait forever.
constexpr long kCallTimeoutMs = 120'000;
constexpr long kConnectTimeoutMs = 10'000;
// Buffered bodies (inspect, lists, errors) are small; cap them before they
// can exhaust memory.
constexpr size_t kMaxBodyBytes = 32 << 20;

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

std::string Base64Url(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (unsigned char c : in) {
    bits = (bits << 8) | c;
    for (count += 8; count >= 6; count -= 6) {
      out += kAlphabet[(bits >> (count - 6)) & 63];
    }
  }
  if (count > 0) out += kAlphabet[(bits << (6 - count)) & 63];
  while (out.size() % 4 != 0) out += '=';
  return out;
}

// "1.41" -> {1, 41}; {0, 0} when it does not parse.
std::pair<int, int> ParseVersion(std::string_view v) {
  int major = 0, minor = 0;
  auto dot = v.find('.');
  if (dot == std::string_view::npos) return {0, 0};
  std::from_chars(v.data(), v.data() + dot, major);
  std::from_chars(v.data() + dot + 1, v.data() + v.size(), minor);
  return {major, minor};
}

// Readers that tolerate a missing key or a value of another type, so no
// answer of the daemon can make nlohmann-json throw.
const Json* Field(const Json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string Str(const Json& j, const char* key) {
  const Json* f = Field(j, key);
  return f && f->is_string() ? f->get<std::string>() : std::string();
}

int64_t Int(const Json& j, const char* key, int64_t fallback) {
  const Json* f = Field(j, key);
  return f && f->is_number_integer() ? f->get<int64_t>() : fallback;
}

bool Bool(const Json& j, const char* key) {
  const Json* f = Field(j, key);
  return f && f->is_boolean() && f->get<bool>();
}

// Invalid UTF-8 (say, in an env value) is replaced rather than thrown on.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The daemon's error JSON is {"message": "..."}; fall back to the raw body.
std::string ErrorMessage(const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  if (std::string m = Str(j, "message"); !m.empty()) return m;
  std::string text = body.substr(0, 500);
  text.erase(text.find_last_not_of("\r\n") + 1);
  return text.empty() ? "(no message)" : text;
}

Status HttpError(long http_status, const std::string& body) {
  Code code = http_status == 400   ? Code::kInvalidArgument
              : http_status == 401 ? Code::kPermissionDenied
              : http_status == 403 ? Code::kPermissionDenied
              : http_status == 404 ? Code::kNotFound
              : http_status == 409 ? Code::kFailedPrecondition
                                   : Code::kIOError;
  return Status(code, ErrorMessage(body));
}

// `s`, or OK when it failed with one of the codes that mean "already so".
Status OkIf(Status s, Code a, Code b = Code::kOk) {
  return s.code() == a || s.code() == b ? Status::Ok() : s;
}

std::map<std::string, std::string> Labels(const Json& j) {
  std::map<std::string, std::string> labels;
  if (!j.is_object()) return labels;
  for (auto& [k, v] : j.items()) {
    if (v.is_string()) labels[k] = v.get<std::string>();
  }
  return labels;
}

// The registry an image name refers to: its first path component when that
// looks like a host (has '.' or ':' or is localhost), else Docker Hub.
std::string RegistryOf(std::string_view repo) {
  auto slash = repo.find('/');
  if (slash != std::string_view::npos) {
    std::string_view first = repo.substr(0, slash);
    if (first.find_first_of(".:") != std::string_view::npos ||
        first == "localhost") {
      return std::string(first);
    }
  }
  return "docker.io";
}

// "https://index.docker.io/v1/" -> "docker.io"; "host:5000/" -> "host:5000".
std::string RegistryHost(std::string_view address) {
  if (auto scheme = address.find("://"); scheme != std::string_view::npos) {
    address.remove_prefix(scheme + 3);
  }
  address = address.substr(0, address.find('/'));
  if (address == "index.docker.io" || address == "registry-1.docker.io") {
    return "docker.io";
  }
  return std::string(address);
}

std::string LabelFilter(std::string_view label) {
  return PercentEncode(Dump(Json{{"label", {std::string(label)}}}));
}

void WriteOctal(char* field, size_t width, uint64_t value) {
  // width-1 octal digits and a NUL, as ustar wants.
  std::string digits(width - 1, '0');
  for (size_t i = width - 1; i-- > 0 && value != 0; value >>= 3) {
    digits[i] = static_cast<char>('0' + (value & 7));
  }
  std::memcpy(field, digits.data(), width - 1);
  field[width - 1] = '\0';
}

std::string TarHeader(std::string_view name, uint32_t mode, uint64_t size,
                      char type) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 99));
  WriteOctal(&h[100], 8, mode);
  WriteOctal(&h[108], 8, 0);  // uid
  WriteOctal(&h[116], 8, 0);  // gid
  WriteOctal(&h[124], 12, size);
  WriteOctal(&h[136], 12, 0);  // mtime
  h[156] = type;
  std::memcpy(&h[257], "ustar", 6);  // POSIX magic, NUL included
  std::memcpy(&h[263], "00", 2);
  std::memset(&h[148], ' ', 8);  // the checksum counts its field as spaces
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  WriteOctal(&h[148], 7, sum);
  h[155] = ' ';
  return h;
}

uint64_t ParseTarNumber(std::string_view field) {
  uint64_t value = 0;
  if (!field.empty() && (static_cast<unsigned char>(field[0]) & 0x80)) {
    // GNU base-256 for values too large for octal.
    for (size_t i = 1; i < field.size(); ++i) {
      value = (value << 8) | static_cast<unsigned char>(field[i]);
    }
    return value;
  }
  for (char c : field) {
    if (c >= '0' && c <= '7') {
      value = value * 8 + static_cast<uint64_t>(c - '0');
    } else if (c == '\0' || (c == ' ' && value != 0)) {
      break;
    }
  }
  return value;
}

}  // namespace

StreamDemuxer::StreamDemuxer(ChunkFn on_stdout, ChunkFn on_stderr,
                             ChunkFn on_system)
    : on_stdout_(std::move(on_stdout)),
      on_stderr_(std::move(on_stderr)),
      on_system_(std::move(on_system)) {}

void StreamDemuxer::Feed(std::string_view data) {
  while (!data.empty()) {
    if (remaining_ == 0) {
      size_t take = std::min(data.size(), sizeof(header_) - header_len_);
      std::memcpy(header_ + header_len_, data.data(), take);
      header_len_ += take;
      data.remove_prefix(take);
      if (header_len_ < sizeof(header_)) return;
      header_len_ = 0;
      type_ = header_[0];
      remaining_ = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
                   (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
      continue;
    }
    size_t take = std::min<size_t>(data.size(), remaining_);
    std::string_view payload = data.substr(0, take);
    data.remove_prefix(take);
    remaining_ -= static_cast<uint32_t>(take);
    const ChunkFn* sink = type_ == 2   ? &on_stderr_
                          : type_ == 3 ? &on_system_
                                       : &on_stdout_;
    if (*sink) (*sink)(payload);
  }
}

bool TarFileReader::Feed(std::string_view data) {
  while (!data.empty() && !done_ && error_.empty()) {
    if (entry_left_ > 0) {
      size_t take = std::min<uint64_t>(entry_left_, data.size());
      if (in_file_) {
        size_t room = max_bytes_ - contents_.size();
        contents_.append(data.substr(0, std::min(take, room)));
        truncated_ = take > room;
      }
      entry_left_ -= take;
      data.remove_prefix(take);
      // Reading stops after the file: its padding and the rest don't matter.
      done_ = in_file_ && (entry_left_ == 0 || truncated_);
      continue;
    }
    size_t take = std::min(data.size(), 512 - header_.size());
    header_.append(data.substr(0, take));
    data.remove_prefix(take);
    if (header_.size() < 512) break;
    std::string block = std::move(header_);
    header_.clear();
    if (block.find_first_not_of('\0') == std::string::npos) {
      done_ = true;  // end-of-archive marker: no regular file in it
      break;
    }
    auto stored = ParseTarNumber(std::string_view(block).substr(148, 8));
    std::memset(block.data() + 148, ' ', 8);
    uint64_t sum = 0;
    for (unsigned char c : block) sum += c;
    if (sum != stored) {
      error_ = "not a tar archive (bad header checksum)";
      break;
    }
    uint64_t size = ParseTarNumber(std::string_view(block).substr(124, 12));
    in_file_ = block[156] == '0' || block[156] == '\0';
    found_ = found_ || in_file_;
    // Other entries (directories, PAX headers) are skipped with their
    // padding to the next 512-byte block.
    entry_left_ = in_file_ ? size : (size + 511) / 512 * 512;
    done_ = in_file_ && size == 0;
  }
  return !done_ && error_.empty();
}

std::string MakeTarWithFile(std::string_view dir, uint32_t dir_mode,
                            std::string_view file, uint32_t file_mode,
                            std::string_view contents) {
  std::string tar = TarHeader(std::string(dir) + "/", dir_mode, 0, '5');
  tar += TarHeader(std::string(dir) + "/" + std::string(file), file_mode,
                   contents.size(), '0');
  tar += contents;
  tar.append((512 - contents.size() % 512) % 512, '\0');
  tar.append(1024, '\0');
  return tar;
}

std::pair<std::string, std::string> SplitImageReference(
    std::string_view image) {
  auto at = image.find('@');
  if (at != std::string_view::npos) {
    return {std::string(image.substr(0, at)),
            std::string(image.substr(at + 1))};
  }
  auto slash = image.rfind('/');
  auto colon = image.rfind(':');
  if (colon != std::string_view::npos &&
      (slash == std::string_view::npos || colon > slash)) {
    return {std::string(image.substr(0, colon)),
            std::string(image.substr(colon + 1))};
  }
  return {std::string(image), "latest"};
}

struct DockerClient::Request {
  std::string method = "GET";
  std::string path;
  bool versioned = true;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::string> headers;
  // Streams a successful (2xx) body here instead of buffering it; return
  // false to stop the transfer early.
  std::function<bool(std::string_view)> sink;
  const CancelFn* cancel = nullptr;
  long timeout_ms = kCallTimeoutMs;  // 0: none (streams)
};

DockerClient::DockerClient(std::string socket_path)
    : socket_path_(std::move(socket_path)) {}

Status DockerClient::Unreachable(std::string_view why) const {
  return Status::Unavailable("Docker daemon not reachable at " + socket_path_ +
                             ": " + std::string(why));
}

std::string DockerClient::Target(std::string_view path, bool versioned) {
  std::string target;
  if (versioned) {
    std::lock_guard lock(mu_);
    target = "/v" + api_version_;
  }
  target += path;
  return target;
}

Result<DockerClient::Response> DockerClient::Perform(Request& request) {
  if (request.versioned) {
    Result<std::string> version = ApiVersion();
    if (!version.ok()) return version.status();
  }
  HttpRequest http;
  http.method = request.method;
  http.target = Target(request.path, request.versioned);
  http.headers = request.headers;
  if (!request.body.empty()) {
    http.headers.push_back("Content-Type: " + request.content_type);
  }
  http.body = request.body;
  http.connect_timeout = std::chrono::milliseconds(kConnectTimeoutMs);
  http.timeout = std::chrono::milliseconds(request.timeout_ms);
  bool cancelled = false;
  if (request.cancel && *request.cancel) {
    http.cancel = [&] {
      cancelled = cancelled || (*request.cancel)();
      return cancelled;
    };
  }
  Response response;
  bool overflow = false;
  http.on_body = [&](int status, std::string_view data) {
    // Only a successful answer is streamed; an error's JSON is kept for
    // its message.
    if (request.sink && status >= 200 && status < 300) {
      return request.sink(data);
    }
    if (response.body.size() + data.size() > kMaxBodyBytes) {
      overflow = true;
      return false;
    }
    response.body.append(data);
    return true;
  };

  Result<HttpResponse> r = UnixHttpClient(socket_path_).Send(http);
  std::string what = request.method + " " + request.path;
  if (cancelled) {
    return Status::Timeout("Docker API call " + what + " cancelled");
  }
  if (overflow) {
    return Status::Corruption("Docker daemon's answer to " + request.path +
                              " exceeds " + std::to_string(kMaxBodyBytes) +
                              " bytes");
  }
  if (!r.ok()) {
    const Status& s = r.status();
    if (s.code() == Code::kInvalidArgument) {
      return Status::InvalidArgument("cannot send " + what +
                                     " to the Docker daemon: " + s.message());
    }
    {
      // The daemon may have been replaced by one of another version.
      std::lock_guard lock(mu_);
      api_version_.clear();
    }
    switch (s.code()) {
      case Code::kUnavailable: {  // could not connect
        struct stat st;
        if (::stat(socket_path_.c_str(), &st) != 0) {
          return Unreachable("no such socket");
        }
        return Unreachable(s.message());
      }
      case Code::kTimeout:
        return Unreachable("no answer to " + what + " within " +
                           std::to_string(request.timeout_ms / 1000) + " s");
      default:  // dropped, or an answer that is not HTTP
        return Unreachable("connection failed during " + what + ": " +
                           s.message());
    }
  }
  response.http_status = r->status;
  // 304: already started / already stopped, which is what was asked for.
  if (response.http_status >= 300 && response.http_status != 304) {
    return HttpError(response.http_status, response.body);
  }
  return response;
}

Result<DockerClient::Response> DockerClient::Call(std::string method,
                                                  std::string path,
                                                  std::string body,
                                                  bool versioned) {
  Request request;
  request.method = std::move(method);
  request.path = std::move(path);
  request.body = std::move(body);
  request.versioned = versioned;
  return Perform(request);
}

Result<Json> DockerClient::CallJson(std::string method, std::string path,
                                    std::string body, bool versioned) {
  std::string what = method + " " + path;
  Result<Response> r =
      Call(std::move(method), std::move(path), std::move(body), versioned);
  if (!r.ok()) return r.status();
  Json j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    return Status::Corruption("Docker daemon sent malformed JSON for " + what);
  }
  return j;
}

Result<std::string> DockerClient::ApiVersion() {
  {
    std::lock_guard lock(mu_);
    if (!api_version_.empty()) return api_version_;
  }
  Result<Json> j = CallJson("GET", "/version", {}, /*versioned=*/false);
  if (!j.ok()) return j.status();
  std::string theirs = Str(*j, "ApiVersion");
  std::string their_min = Str(*j, "MinAPIVersion");
  std::string version(kDockerMaxApiVersion);
  if (ParseVersion(theirs) != std::pair{0, 0} &&
      ParseVersion(theirs) < ParseVersion(version)) {
    version = theirs;
  }
  // A daemon that no longer speaks 1.41 (Docker 29 starts at 1.44) still
  // accepts the calls used here unchanged at its minimum version.
  if (ParseVersion(their_min) > ParseVersion(version)) version = their_min;
  std::lock_guard lock(mu_);
  api_version_ = version;
  return version;
}

Status DockerClient::Ping() {
  Request request;
  request.path = "/_ping";
  request.versioned = false;
  request.timeout_ms = 5'000;  // a health check must not hang a heartbeat
  return Perform(request).status();
}

Result<bool> DockerClient::ImageExists(const std::string& image) {
  Result<Response> r = Call("GET", "/images/" + image + "/json");
  if (r.ok()) return true;
  if (r.status().code() == Code::kNotFound) return false;
  return r.status();
}

Status DockerClient::ImagePull(
    const std::string& image,
    const std::optional<RegistryCredentials>& credentials,
    const ChunkFn& progress, const CancelFn& cancel) {
  auto [from, tag] = SplitImageReference(image);
  Request request;
  request.method = "POST";
  request.path = "/images/create?fromImage=" + PercentEncode(from) +
                 "&tag=" + PercentEncode(tag);
  request.timeout_ms = 0;
  request.cancel = &cancel;
  if (credentials && (credentials->server_address.empty() ||
                      RegistryHost(credentials->server_address) ==
                          RegistryHost(RegistryOf(from)))) {
    Json auth = {{"username", credentials->username},
                 {"password", credentials->password},
                 {"serveraddress", credentials->server_address}};
    request.headers.push_back("X-Registry-Auth: " + Base64Url(Dump(auth)));
  }
  // The progress stream is one JSON object a line; a failure arrives as a
  // line with "error" while the HTTP status is already 200.
  std::string pending;
  std::string stream_error;
  auto handle_line = [&](std::string_view line) {
    if (line.find_first_not_of(" \r\t") == std::string_view::npos) return;
    Json j = Json::parse(line, nullptr, false);
    const Json* detail = Field(j, "errorDetail");
    std::string error = detail ? Str(*detail, "message") : "";
    if (error.empty()) error = Str(j, "error");
    if (!error.empty()) stream_error = error;
    if (progress) progress(line);
  };
  request.sink = [&](std::string_view data) {
    pending.append(data);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos;
         start = nl + 1) {
      handle_line(std::string_view(pending).substr(start, nl - start));
    }
    pending.erase(0, start);
    return true;
  };
  Result<Response> r = Perform(request);
  if (!r.ok()) return r.status();
  handle_line(pending);
  if (!stream_error.empty()) return Status::IOError(stream_error);
  return Status::Ok();
}

Status DockerClient::ImageRemove(const std::string& image) {
  return Call("DELETE", "/images/" + image + "?force=1").status();
}

Result<std::string> DockerClient::ContainerCreate(
    const ContainerConfig& config) {
  Json host = {{"NetworkMode", config.network_mode}, {"AutoRemove", false}};
  if (config.memory_bytes > 0) {
    host["Memory"] = config.memory_bytes;
    // Without this the daemon allows as much swap again.
    host["MemorySwap"] = config.memory_bytes;
  }
  if (config.nano_cpus > 0) host["NanoCpus"] = config.nano_cpus;
  if (config.pids_limit > 0) host["PidsLimit"] = config.pids_limit;
  if (config.init) host["Init"] = true;
  host["Privileged"] = false;
  if (config.drop_caps) {
    host["CapDrop"] = Json::array({"ALL"});
    host["CapAdd"] = config.caps;
  }
  if (config.no_new_privileges) {
    host["SecurityOpt"] = Json::array({"no-new-privileges"});
  }
  if (config.log_max_bytes > 0) {
    host["LogConfig"] = {
        {"Type", "json-file"},
        {"Config",
         {{"max-size", std::to_string(config.log_max_bytes)},
          {"max-file", "1"}}}};
  }
  Json mounts = Json::array();
  for (const VolumeMount& m : config.mounts) {
    mounts.push_back(
        {{"Type", "volume"}, {"Source", m.volume}, {"Target", m.target}});
  }
  for (const BindMount& b : config.binds) {
    mounts.push_back({{"Type", "bind"},
                      {"Source", b.source},
                      {"Target", b.target},
                      {"ReadOnly", b.read_only}});
  }
  host["Mounts"] = mounts;
  Json body = {{"Image", config.image},
               {"Env", config.env},
               {"Labels", config.labels},
               {"HostConfig", host},
               {"AttachStdout", false},
               {"AttachStderr", false},
               {"Tty", false}};
  if (!config.cmd.empty()) body["Cmd"] = config.cmd;
  // An empty (not null) Entrypoint clears the image's; null keeps it.
  if (config.entrypoint) body["Entrypoint"] = *config.entrypoint;
  if (!config.workdir.empty()) body["WorkingDir"] = config.workdir;
  if (!config.user.empty()) body["User"] = config.user;
  std::string path = "/containers/create";
  if (!config.name.empty()) path += "?name=" + PercentEncode(config.name);
  Result<Json> j = CallJson("POST", path, Dump(body));
  if (!j.ok()) return j.status();
  std::string id = Str(*j, "Id");
  if (id.empty()) return Status::Corruption("container create: no Id");
  return id;
}

Status DockerClient::ContainerStart(const std::string& id) {
  return Call("POST", "/containers/" + id + "/start").status();
}

Status DockerClient::ContainerLogs(const std::string& id,
                                   const ChunkFn& on_stdout,
                                   const ChunkFn& on_stderr,
                                   const CancelFn& cancel) {
  Request request;
  request.path = "/containers/" + id + "/logs?follow=1&stdout=1&stderr=1";
  request.timeout_ms = 0;
  request.cancel = &cancel;
  StreamDemuxer demux(on_stdout, on_stderr, on_stderr);
  request.sink = [&](std::string_view data) {
    demux.Feed(data);
    return true;
  };
  return Perform(request).status();
}

Result<int64_t> DockerClient::ContainerWait(const std::string& id,
                                            const CancelFn& cancel) {
  Request request;
  request.method = "POST";
  request.path = "/containers/" + id + "/wait";
  request.timeout_ms = 0;
  request.cancel = &cancel;
  Result<Response> r = Perform(request);
  if (!r.ok()) return r.status();
  Json j = Json::parse(r->body, nullptr, false);
  if (const Json* e = Field(j, "Error"); e && !Str(*e, "Message").empty()) {
    return Status::IOError(Str(*e, "Message"));
  }
  if (!Field(j, "StatusCode")) {
    return Status::Corruption("Docker daemon's wait answer has no StatusCode");
  }
  return Int(j, "StatusCode", -1);
}

Result<ContainerState> DockerClient::ContainerInspect(const std::string& id) {
  Result<Json> j = CallJson("GET", "/containers/" + id + "/json");
  if (!j.ok()) return j.status();
  ContainerState state;
  if (const Json* s = Field(*j, "State")) {
    state.status = Str(*s, "Status");
    state.running = Bool(*s, "Running");
    state.oom_killed = Bool(*s, "OOMKilled");
    state.exit_code = Int(*s, "ExitCode", -1);
    state.error = Str(*s, "Error");
  }
  return state;
}

Status DockerClient::ContainerKill(const std::string& id,
                                   std::string_view signal) {
  // 409: not running, which is what a kill wants anyway.
  return OkIf(Call("POST", "/containers/" + id +
                               "/kill?signal=" + PercentEncode(signal))
                  .status(),
              Code::kFailedPrecondition);
}

Status DockerClient::ContainerStop(const std::string& id, int grace_seconds) {
  Request request;
  request.method = "POST";
  request.path =
      "/containers/" + id + "/stop?t=" + std::to_string(grace_seconds);
  request.timeout_ms = kCallTimeoutMs + grace_seconds * 1000L;
  return Perform(request).status();  // 304 (already stopped) is success
}

Status DockerClient::ContainerRemove(const std::string& id) {
  // 404: already gone; 409: a removal is already in progress.
  return OkIf(Call("DELETE", "/containers/" + id + "?force=1&v=1").status(),
              Code::kNotFound, Code::kFailedPrecondition);
}

Result<std::vector<DockerObject>> DockerClient::ContainerList(
    std::string_view label) {
  Result<Json> j =
      CallJson("GET", "/containers/json?all=1&filters=" + LabelFilter(label));
  if (!j.ok()) return j.status();
  std::vector<DockerObject> out;
  if (!j->is_array()) return out;
  for (const Json& c : *j) {
    DockerObject o;
    o.id = Str(c, "Id");
    const Json* names = Field(c, "Names");
    if (names && names->is_array() && !names->empty() &&
        (*names)[0].is_string()) {
      o.name = (*names)[0].get<std::string>();
      if (!o.name.empty() && o.name[0] == '/') o.name.erase(0, 1);
    }
    if (const Json* l = Field(c, "Labels")) o.labels = Labels(*l);
    out.push_back(std::move(o));
  }
  return out;
}

Status DockerClient::VolumeCreate(
    const std::string& name, const std::map<std::string, std::string>& labels) {
  Json body = {{"Name", name}, {"Driver", "local"}, {"Labels", labels}};
  return Call("POST", "/volumes/create", Dump(body)).status();
}

Status DockerClient::VolumeRemove(const std::string& name) {
  return OkIf(Call("DELETE", "/volumes/" + name + "?force=1").status(),
              Code::kNotFound);
}

Result<std::vector<DockerObject>> DockerClient::VolumeList(
    std::string_view label) {
  Result<Json> j = CallJson("GET", "/volumes?filters=" + LabelFilter(label));
  if (!j.ok()) return j.status();
  std::vector<DockerObject> out;
  const Json* volumes = Field(*j, "Volumes");
  if (!volumes || !volumes->is_array()) return out;
  for (const Json& v : *volumes) {
    DockerObject o;
    o.id = o.name = Str(v, "Name");
    if (const Json* l = Field(v, "Labels")) o.labels = Labels(*l);
    out.push_back(std::move(o));
  }
  return out;
}

Status DockerClient::PutArchive(const std::string& id, const std::string& path,
                                std::string tar) {
  Request request;
  request.method = "PUT";
  request.path = "/containers/" + id + "/archive?path=" + PercentEncode(path);
  request.body = std::move(tar);
  request.content_type = "application/x-tar";
  return Perform(request).status();
}

Result<std::string> DockerClient::ReadFile(const std::string& id,
                                           const std::string& path,
                                           size_t max_bytes) {
  Request request;
  request.path = "/containers/" + id + "/archive?path=" + PercentEncode(path);
  TarFileReader reader(max_bytes);
  request.sink = [&](std::string_view data) { return reader.Feed(data); };
  Result<Response> r = Perform(request);
  if (!r.ok()) return r.status();
  if (!reader.error().empty()) {
    return Status::Corruption(path + ": " + reader.error());
  }
  if (!reader.found()) return Status::NotFound(path + " is not a regular file");
  if (!reader.complete()) {
    return Status::Corruption(path + ": the archive ended inside the file");
  }
  return reader.contents();
}

}  // namespace drover
