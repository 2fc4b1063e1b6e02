// The LevelDB store. The key layout, record formats and recovery rules are
// documented in docs/STORE.md; keep the two in step.
#include "drover/store.h"

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <msgpack.hpp>
#include <mutex>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace drover {
namespace {

// The layout of keys (meta/format). Bump it, and teach Open to migrate,
// when a key moves; a drover that does not know a store's layout refuses to
// open it rather than misread it.
constexpr std::string_view kFormatKey = "meta/format";
constexpr std::string_view kFormatVersion = "1";
// The version written as "v" in every record. Fields may be added without a
// bump (a missing field decodes to its default); a change of meaning needs
// one. Version 2 keys fields by number instead of name and leaves out
// fields that hold their default; version 1 records are still read.
constexpr uint64_t kRecordVersion = 2;
// Garbage must not make the decoder nest without bound.
constexpr size_t kMaxDecodeDepth = 16;
// Table files kept open; each costs an index block in memory, and the
// daemon must idle small.
constexpr int kMaxOpenFiles = 128;

constexpr std::string_view kJobPrefix = "j/";
constexpr std::string_view kTaskPrefix = "t/";
constexpr std::string_view kUnfinishedPrefix = "u/";
constexpr std::string_view kLogPrefix = "l/";
constexpr std::string_view kMarkerPrefix = "m/";
// Not a stored key: Batch::pending_state_ notes under "n/ID" that job ID
// is new in that batch, so its tasks are new too and need no read.
constexpr std::string_view kNewJobNote = "n/";
constexpr std::string_view kLogSeqKey = "meta/log_seq";
// Log seqs are handed out from a lease of this many, whose end is written
// to meta/log_seq before the first of them is used: a restart skips the
// rest of the lease instead of the store writing a counter with every chunk
// or scanning for the highest seq at open.
constexpr uint64_t kLogSeqLease = 1 << 20;

constexpr size_t kSeqDigits = 16;
constexpr size_t kIndexDigits = 8;
constexpr size_t kIdMsDigits = 12;
constexpr size_t kIdCounterDigits = 4;
constexpr size_t kIdRandomDigits = 4;
constexpr size_t kIdLength = kIdMsDigits + kIdCounterDigits + kIdRandomDigits;
constexpr size_t kMaxJobIdLength = 64;

// Appends v as `width` lowercase hex digits.
void AppendHex(std::string& s, uint64_t v, size_t width) {
  s.resize(s.size() + width);
  for (size_t i = s.size(); width > 0; --width, --i) {
    s[i - 1] = "0123456789abcdef"[v & 15];
    v >>= 4;
  }
}

std::string Hex(uint64_t v, size_t width) {
  std::string s;
  AppendHex(s, v, width);
  return s;
}

// The whole of s as hex digits, or nullopt.
std::optional<uint64_t> ParseHex(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

std::string Cat(std::string_view a, std::string_view b,
                std::string_view c = {}) {
  std::string s;
  s.reserve(a.size() + b.size() + c.size());
  s.append(a).append(b).append(c);
  return s;
}

std::string JobKey(std::string_view id) { return Cat(kJobPrefix, id); }
std::string TaskPrefix(std::string_view id) {
  return Cat(kTaskPrefix, id, "/");
}
// Built in one allocation: one is made for every transition stored.
std::string TaskKey(std::string_view id, uint32_t index) {
  std::string key;
  key.reserve(kTaskPrefix.size() + id.size() + 1 + kIndexDigits);
  key.append(kTaskPrefix).append(id).push_back('/');
  AppendHex(key, index, kIndexDigits);
  return key;
}
std::string UnfinishedKey(std::string_view id) {
  return Cat(kUnfinishedPrefix, id);
}
std::string LogPrefix(std::string_view id) { return Cat(kLogPrefix, id, "/"); }
std::string LogKey(std::string_view id, uint64_t seq) {
  return Cat(LogPrefix(id), Hex(seq, kSeqDigits));
}
std::string MarkerKey(std::string_view name) {
  return Cat(kMarkerPrefix, name);
}

// The first key after every key that starts with `prefix` (prefixes here
// end in '/', so bumping the last byte is enough).
std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

bool StartsWith(const leveldb::Slice& s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         std::string_view(s.data(), prefix.size()) == prefix;
}

std::string_view View(const leveldb::Slice& s) { return {s.data(), s.size()}; }

// Positions `it` on the last key that starts with `prefix` (if any; check
// with StartsWith): one seek, not a scan.
void SeekToLastOf(leveldb::Iterator* it, std::string_view prefix) {
  it->Seek(PrefixEnd(prefix));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
}

// Ids come from NewJobId; the check only keeps a stray id from escaping its
// key range (a '/' would put its tasks under another job's prefix).
Status CheckJobId(std::string_view id) {
  auto ok = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
  };
  if (id.empty() || id.size() > kMaxJobIdLength ||
      !std::all_of(id.begin(), id.end(), ok)) {
    return Status::InvalidArgument(
        Cat("job id '", id, "' must be 1 to 64 letters, digits, '-' or '_'"));
  }
  return Status::Ok();
}

Status FromLevelDb(const leveldb::Status& s, std::string_view what) {
  std::string m = Cat(what, ": ", s.ToString());
  if (s.IsCorruption()) return Status::Corruption(std::move(m));
  return Status::IOError(std::move(m));
}

// ---------------------------------------------------------------------------
// Records. Each record type has one field list, used by the encoder and the
// decoder alike, so the two cannot drift apart. A field's number is its
// msgpack map key (format version 2) and its name was the key in version 1,
// which is still read: both are documented in docs/STORE.md; never reuse
// or renumber one.

// R is T or const T: one list serves the encoder (const) and the decoder.
template <typename R, typename T>
concept RecordOf = std::same_as<std::remove_const_t<R>, T>;

template <RecordOf<AttemptRecord> R, typename F>
void Fields(R& r, F& f) {
  f(1, "number", r.number);
  f(2, "worker", r.worker);
  f(3, "started_at", r.started_at);
  f(4, "finished_at", r.finished_at);
  f(5, "exit_code", r.exit_code);
  f(6, "error", r.error);
}

template <RecordOf<TaskRecord> R, typename F>
void Fields(R& r, F& f) {
  f(1, "job", r.job_id);
  f(2, "index", r.index);
  f(3, "name", r.name);
  f(4, "state", r.state);
  f(5, "attempts", r.attempts);
  f(6, "worker", r.worker);
  f(7, "exit_code", r.exit_code);
  f(8, "output", r.output);
  f(9, "error", r.error);
  f(10, "started_at", r.started_at);
  f(11, "finished_at", r.finished_at);
  f(12, "not_before", r.not_before);
  f(13, "history", r.history);
}

template <RecordOf<JobRecord> R, typename F>
void Fields(R& r, F& f) {
  f(1, "id", r.id);
  f(2, "name", r.name);
  f(3, "state", r.state);
  f(4, "created_at", r.created_at);
  f(5, "started_at", r.started_at);
  f(6, "finished_at", r.finished_at);
  f(7, "error", r.error);
  f(8, "inputs", r.inputs);
  f(9, "source", r.source);
  f(10, "source_name", r.source_name);
  f(11, "task_count", r.task_count);
  f(12, "sealed_secrets", r.sealed_secrets);
}

// seq is not stored in the value: it is the key's last part.
template <RecordOf<LogChunk> R, typename F>
void Fields(R& r, F& f) {
  f(1, "task", r.task_index);
  f(2, "attempt", r.attempt);
  f(3, "stream", r.stream);
  f(4, "data", r.data);
}

// A msgpack encoder that appends to a std::string: the bytes msgpack-c's
// packer writes (the smallest form of each value), without its 8 KiB
// buffer, its per-call bounds checks and the copy out of it. Records are
// encoded for every transition stored.
class Writer {
 public:
  // Appends to `out`; the bytes are all there once the Writer is gone.
  explicit Writer(std::string& out) : out_(out), size_(out.size()) {
    out_.resize(size_ + 256);
  }
  ~Writer() { out_.resize(size_); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Nil() { Byte(0xc0); }
  void Map(uint32_t n) { Header(n, 0x80, 0xde, 0xdf); }
  void Array(uint32_t n) { Header(n, 0x90, 0xdc, 0xdd); }
  void Str(std::string_view s) {
    const size_t n = s.size();
    // Every record is mostly short strings (its field names): one room
    // check for the header and the bytes.
    char* p = Room(n + 5);
    size_t h = 1;
    if (n < 32) {
      p[0] = static_cast<char>(0xa0 | n);
    } else if (n < 256) {
      p[0] = static_cast<char>(0xd9);
      p[1] = static_cast<char>(n);
      h = 2;
    } else if (n < 65536) {
      p[0] = static_cast<char>(0xda);
      p[1] = static_cast<char>(n >> 8);
      p[2] = static_cast<char>(n);
      h = 3;
    } else {
      p[0] = static_cast<char>(0xdb);
      for (int i = 0; i < 4; ++i) p[1 + i] = static_cast<char>(n >> (24 - 8 * i));
      h = 5;
    }
    std::memcpy(p + h, s.data(), n);
    size_ += h + n;
  }
  void Uint(uint64_t v) {
    if (v < 128) {
      Byte(v);
    } else if (v < 256) {
      Byte(0xcc);
      Big(v, 1);
    } else if (v < 65536) {
      Byte(0xcd);
      Big(v, 2);
    } else if (v <= UINT32_MAX) {
      Byte(0xce);
      Big(v, 4);
    } else {
      Byte(0xcf);
      Big(v, 8);
    }
  }
  void Int(int64_t v) {
    if (v >= 0) return Uint(static_cast<uint64_t>(v));
    const auto u = static_cast<uint64_t>(v);
    if (v >= -32) {
      Byte(u & 0xff);  // negative fixint
    } else if (v >= INT8_MIN) {
      Byte(0xd0);
      Big(u, 1);
    } else if (v >= INT16_MIN) {
      Byte(0xd1);
      Big(u, 2);
    } else if (v >= INT32_MIN) {
      Byte(0xd2);
      Big(u, 4);
    } else {
      Byte(0xd3);
      Big(u, 8);
    }
  }

 private:
  // Where the next n bytes go (the string grows as needed).
  char* Room(size_t n) {
    if (size_ + n > out_.size())
      out_.resize(std::max(2 * out_.size(), size_ + n));
    return out_.data() + size_;
  }
  void Byte(uint64_t b) {
    *Room(1) = static_cast<char>(b);
    ++size_;
  }
  void Header(uint32_t n, uint8_t fix, uint8_t b16, uint8_t b32) {
    if (n < 16) {
      Byte(fix | n);
    } else if (n < 65536) {
      Byte(b16);
      Big(n, 2);
    } else {
      Byte(b32);
      Big(n, 4);
    }
  }
  // The low `bytes` bytes of v, big-endian.
  void Big(uint64_t v, int bytes) {
    char* p = Room(bytes);
    for (int i = 0; i < bytes; ++i) {
      p[i] = static_cast<char>((v >> (8 * (bytes - 1 - i))) & 0xff);
    }
    size_ += bytes;
  }

  std::string& out_;
  size_t size_;  // bytes written; out_ may be longer until the end
};

template <typename R>
void PackRecord(Writer& w, const R& r, bool versioned);

void PackValue(Writer& w, const std::string& v) { w.Str(v); }
void PackValue(Writer& w, char v) { w.Str(std::string_view(&v, 1)); }
void PackValue(Writer& w, JobState v) { w.Str(JobStateName(v)); }
void PackValue(Writer& w, TaskState v) { w.Str(TaskStateName(v)); }
void PackValue(Writer& w, const std::optional<int32_t>& v) {
  if (v) {
    w.Int(*v);
  } else {
    w.Nil();
  }
}
void PackValue(Writer& w, const std::map<std::string, std::string>& v) {
  w.Map(static_cast<uint32_t>(v.size()));
  for (const auto& [k, val] : v) {
    w.Str(k);
    w.Str(val);
  }
}
void PackValue(Writer& w, const std::vector<AttemptRecord>& v) {
  w.Array(static_cast<uint32_t>(v.size()));
  for (const AttemptRecord& a : v) PackRecord(w, a, /*versioned=*/false);
}
void PackValue(Writer& w, uint32_t v) { w.Uint(v); }
void PackValue(Writer& w, int64_t v) { w.Int(v); }

// Whether a field holds what the decoder gives a missing one, so that it
// can be left out. States are always written: a dump shows them.
bool IsDefault(const std::string& v) { return v.empty(); }
bool IsDefault(char) { return false; }
bool IsDefault(JobState) { return false; }
bool IsDefault(TaskState) { return false; }
bool IsDefault(const std::optional<int32_t>& v) { return !v.has_value(); }
bool IsDefault(const std::map<std::string, std::string>& v) {
  return v.empty();
}
bool IsDefault(const std::vector<AttemptRecord>& v) { return v.empty(); }
bool IsDefault(uint32_t v) { return v == 0; }
bool IsDefault(int64_t v) { return v == 0; }

template <typename R>
void PackRecord(Writer& w, const R& r, bool versioned) {
  uint32_t fields = versioned ? 1 : 0;
  auto count = [&](uint32_t, const char*, const auto& v) {
    if (!IsDefault(v)) ++fields;
  };
  Fields(r, count);
  w.Map(fields);
  if (versioned) {
    w.Str("v");
    w.Uint(kRecordVersion);
  }
  auto encode = [&](uint32_t number, const char*, const auto& v) {
    if (IsDefault(v)) return;
    w.Uint(number);
    PackValue(w, v);
  };
  Fields(r, encode);
}

// Replaces `out`'s contents, keeping its capacity.
template <typename R>
void EncodeInto(const R& r, std::string& out) {
  out.clear();
  Writer w(out);
  PackRecord(w, r, /*versioned=*/true);
}

template <typename R>
std::string Encode(const R& r) {
  std::string out;
  EncodeInto(r, out);
  return out;
}

// Thrown by the decoder below and caught in Decode(); never leaves this
// file.
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The value keyed by `number` (format version 2) or `name` (version 1; the
// record version field "v" too); nullptr if there is none.
const msgpack::object* FindField(const msgpack::object& map,
                                 std::string_view name, uint32_t number = 0) {
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const msgpack::object_kv& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::POSITIVE_INTEGER) {
      if (number != 0 && kv.key.via.u64 == number) return &kv.val;
    } else if (kv.key.type == msgpack::type::STR &&
               std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) ==
                   name) {
      return &kv.val;
    }
  }
  return nullptr;
}

std::string_view StrOf(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return {o.via.str.ptr, o.via.str.size};
  if (o.type == msgpack::type::BIN) return {o.via.bin.ptr, o.via.bin.size};
  throw DecodeError("expected a string");
}

template <typename R>
void UnpackRecord(const msgpack::object& o, R& r);

void UnpackValue(const msgpack::object& o, std::string& v) { v = StrOf(o); }
void UnpackValue(const msgpack::object& o, char& v) {
  std::string_view s = StrOf(o);
  if (s.size() != 1) throw DecodeError("expected one character");
  v = s[0];
}
void UnpackValue(const msgpack::object& o, JobState& v) {
  std::string_view s = StrOf(o);
  std::optional<JobState> state = ParseJobState(s);
  if (!state) throw DecodeError("unknown job state '" + std::string(s) + "'");
  v = *state;
}
void UnpackValue(const msgpack::object& o, TaskState& v) {
  std::string_view s = StrOf(o);
  std::optional<TaskState> state = ParseTaskState(s);
  if (!state) throw DecodeError("unknown task state '" + std::string(s) + "'");
  v = *state;
}
void UnpackValue(const msgpack::object& o, std::optional<int32_t>& v) {
  if (o.type == msgpack::type::NIL) {
    v.reset();
  } else {
    v = o.as<int32_t>();
  }
}
void UnpackValue(const msgpack::object& o,
                 std::map<std::string, std::string>& v) {
  if (o.type != msgpack::type::MAP) throw DecodeError("expected a map");
  v.clear();
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const msgpack::object_kv& kv = o.via.map.ptr[i];
    v[std::string(StrOf(kv.key))] = StrOf(kv.val);
  }
}
void UnpackValue(const msgpack::object& o, std::vector<AttemptRecord>& v) {
  if (o.type != msgpack::type::ARRAY) throw DecodeError("expected an array");
  v.assign(o.via.array.size, AttemptRecord{});
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    UnpackRecord(o.via.array.ptr[i], v[i]);
  }
}
// as<> throws type_error on a wrong type or a value out of range.
void UnpackValue(const msgpack::object& o, uint32_t& v) {
  v = o.as<uint32_t>();
}
void UnpackValue(const msgpack::object& o, int64_t& v) { v = o.as<int64_t>(); }

template <typename R>
void UnpackRecord(const msgpack::object& map, R& r) {
  if (map.type != msgpack::type::MAP) throw DecodeError("expected a map");
  // A missing field keeps its default: records written before the field
  // existed still decode.
  auto decode = [&](uint32_t number, const char* name, auto& v) {
    const msgpack::object* o = FindField(map, name, number);
    if (o == nullptr) return;
    try {
      UnpackValue(*o, v);
    } catch (const std::exception& e) {
      throw DecodeError(std::string("field '") + name + "': " + e.what());
    }
  };
  Fields(r, decode);
}

// Decodes the value stored under `key`. Corruption (naming the key) for
// anything that is not a record of a version this build reads; never
// throws, whatever the bytes.
template <typename R>
Status Decode(std::string_view key, std::string_view bytes, R* out) {
  auto corrupt = [&](std::string_view why) {
    return Status::Corruption(Cat("record '", key, "' ").append(why));
  };
  try {
    // Nothing inside a record can be longer than the record, so these
    // limits stop a garbage length from allocating before it is read.
    size_t n = bytes.size();
    msgpack::unpack_limit limit(n, n, n, n, n, kMaxDecodeDepth);
    size_t offset = 0;
    // A zone sized for the record (msgpack-c's default first chunk is
    // 8 KiB; a task record is about a hundred bytes).
    msgpack::zone zone(std::min<size_t>(8192, 4 * n + 256));
    const msgpack::object root = msgpack::unpack(
        zone, bytes.data(), bytes.size(), offset, nullptr, nullptr, limit);
    if (offset != bytes.size()) {
      return corrupt("does not decode: trailing bytes after the record");
    }
    if (root.type != msgpack::type::MAP) {
      return corrupt("does not decode: not a msgpack map");
    }
    const msgpack::object* version = FindField(root, "v");
    if (version == nullptr) {
      return corrupt("does not decode: no format version field 'v'");
    }
    if (version->type != msgpack::type::POSITIVE_INTEGER ||
        version->via.u64 == 0) {
      return corrupt("does not decode: bad format version field 'v'");
    }
    if (version->via.u64 > kRecordVersion) {
      return corrupt("has format version " + std::to_string(version->via.u64) +
                     ", newer than this drover reads (" +
                     std::to_string(kRecordVersion) +
                     "); use the drover that wrote it");
    }
    R r;
    UnpackRecord(root, r);
    *out = std::move(r);
    return Status::Ok();
  } catch (const std::exception& e) {
    return corrupt(Cat("does not decode: ", e.what()));
  } catch (...) {
    return corrupt("does not decode");
  }
}

}  // namespace

// ---------------------------------------------------------------------------

struct Store::Impl {
  std::string dir;
  StoreOptions options;
  // Declared before db so that it outlives it: the DB uses the cache.
  std::unique_ptr<leveldb::Cache> cache;
  std::unique_ptr<leveldb::DB> db;
  std::atomic<uint64_t> commits{0};

  mutable std::mutex mu;
  Status sticky;               // guarded by mu
  uint64_t log_seq = 0;        // guarded by mu: the last seq handed out
  uint64_t log_lease_end = 0;  // guarded by mu: as stored in meta/log_seq
  int64_t id_ms = 0;           // guarded by mu: time part of the last job id
  uint32_t id_count = 0;       // guarded by mu: counter part of the last job id
  std::mt19937 rng;            // guarded by mu

  // The committed states of the records of every job this Store has
  // written and that has not ended, so that a Batch checks a transition
  // without reading and decoding the stored record (a LevelDB read and a
  // msgpack decode per transition otherwise). -1: not known here (read the
  // store). An entry goes when its job's record reaches a terminal state,
  // after which only a bug would write its records again, and that write
  // reads the store as before. About one byte per task of the unfinished
  // jobs. Guarded by mu.
  struct Live {
    int8_t job = -1;
    std::vector<int8_t> tasks;
  };
  // Looked up by std::string_view, without building a key.
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_map<std::string, Live, IdHash, std::equal_to<>> live;

  // Requires mu. The entry of job `id`, made if needed.
  Live& LiveEntry(std::string_view id) {
    auto it = live.find(id);
    if (it == live.end()) it = live.emplace(std::string(id), Live{}).first;
    return it->second;
  }

  // Requires mu. Records the states a committed batch left.
  void Remember(const std::unordered_map<std::string, Batch::Pending>& states) {
    std::vector<std::string_view> ended;
    for (const auto& [key, pending] : states) {
      const int state = pending.state;
      if (state < 0) continue;
      std::string_view k = key;
      if (k.starts_with(kJobPrefix)) {
        std::string_view id = k.substr(kJobPrefix.size());
        if (IsTerminal(static_cast<JobState>(state))) {
          ended.push_back(id);
        } else {
          LiveEntry(id).job = static_cast<int8_t>(state);
        }
      } else if (k.starts_with(kTaskPrefix)) {
        // t/ID/XXXXXXXX
        std::string_view rest = k.substr(kTaskPrefix.size());
        if (rest.size() <= kIndexDigits + 1) continue;
        std::string_view id = rest.substr(0, rest.size() - kIndexDigits - 1);
        std::optional<uint64_t> index =
            ParseHex(rest.substr(rest.size() - kIndexDigits));
        if (!index || *index > (1u << 24)) continue;
        std::vector<int8_t>& tasks = LiveEntry(id).tasks;
        if (tasks.size() <= *index) tasks.resize(*index + 1, -1);
        tasks[*index] = static_cast<int8_t>(state);
      }
    }
    for (std::string_view id : ended) {
      if (auto it = live.find(id); it != live.end()) live.erase(it);
    }
  }

  leveldb::ReadOptions Reading(bool fill_cache = true) const {
    leveldb::ReadOptions ro;
    ro.verify_checksums = true;
    ro.fill_cache = fill_cache;
    return ro;
  }

  // The raw value under key, nullopt when absent.
  Result<std::optional<std::string>> Get(const std::string& key) const {
    std::string value;
    leveldb::Status s = db->Get(Reading(), key, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromLevelDb(s, Cat("reading '", key, "'"));
    return std::optional<std::string>(std::move(value));
  }

  template <typename R>
  Result<std::optional<R>> GetRecord(const std::string& key) const {
    Result<std::optional<std::string>> raw = Get(key);
    if (!raw.ok()) return raw.status();
    if (!raw->has_value()) return std::optional<R>();
    R r;
    Status s = Decode(key, **raw, &r);
    if (!s.ok()) return s;
    return std::optional<R>(std::move(r));
  }

  // Calls f(key, value) for each key >= start that starts with prefix,
  // until f returns an error, which is returned.
  template <typename F>
  Status Scan(std::string_view prefix, const std::string& start, F&& f) const {
    std::unique_ptr<leveldb::Iterator> it(db->NewIterator(Reading()));
    for (it->Seek(start); it->Valid() && StartsWith(it->key(), prefix);
         it->Next()) {
      Status s = f(View(it->key()), View(it->value()));
      if (!s.ok()) return s;
    }
    if (!it->status().ok()) {
      return FromLevelDb(it->status(), Cat("scanning '", prefix, "'"));
    }
    return Status::Ok();
  }

  // The state a record under `key` (job `job_id`, and task `index` when
  // set) moves from: the one put earlier in the batch (`in_batch`, the
  // batch's entry for `key` if it has one), else the committed one (from
  // `live`, else read from the store); nullopt for a new record.
  template <typename R>
  Result<std::optional<int>> FromState(
      const std::unordered_map<std::string, Batch::Pending>& batch,
      const Batch::Pending* in_batch, const std::string& key,
      std::string_view job_id, std::optional<uint32_t> index) const {
    if (in_batch != nullptr && in_batch->state >= 0) {
      return std::optional<int>(in_batch->state);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = live.find(job_id);
      if (it != live.end()) {
        const Live& l = it->second;
        if (!index && l.job >= 0) return {std::optional<int>(l.job)};
        if (index && *index < l.tasks.size() && l.tasks[*index] >= 0) {
          return {std::optional<int>(l.tasks[*index])};
        }
      }
    }
    if (index && batch.count(Cat(kNewJobNote, job_id))) {
      return std::optional<int>();  // a new job has no stored tasks
    }
    Result<std::optional<R>> stored = GetRecord<R>(key);
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) return std::optional<int>();
    return {static_cast<int>((*stored)->state)};
  }

  // Requires mu. Every write failure ends here: see health().
  void FailWrite(const leveldb::Status& s) {
    if (sticky.ok()) {
      // As LevelDB's bg_error_: once a write failed, what is on disk is
      // uncertain, so nothing more is written until the process restarts.
      sticky = Status::IOError(
          "the store in " + dir +
          " failed a write and accepts no more changes until drover is "
          "restarted: " +
          s.ToString());
    }
  }

  // Requires mu. The next log seq, after making its lease durable.
  uint64_t NextLogSeq() {
    if (log_seq == log_lease_end && sticky.ok()) {
      leveldb::WriteOptions wo;
      wo.sync = options.sync;
      uint64_t end = log_lease_end + kLogSeqLease;
      leveldb::Status s =
          db->Put(wo, std::string(kLogSeqKey), Hex(end, kSeqDigits));
      if (s.ok()) {
        log_lease_end = end;
      } else {
        FailWrite(s);  // so the batch holding this seq never commits
      }
    }
    return ++log_seq;
  }

  Status CheckFormat();
  Status LoadCounters();
};

// A fresh store gets the current format; an existing one must have it.
Status Store::Impl::CheckFormat() {
  Result<std::optional<std::string>> format = Get(std::string(kFormatKey));
  if (!format.ok()) return format.status();
  if (format->has_value()) {
    if (**format == kFormatVersion) return Status::Ok();
    return Status::Corruption(
        "the store in " + dir + " has format version '" + **format +
        "', but this drover reads only version " + std::string(kFormatVersion) +
        "; open it with the drover that wrote it");
  }
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(Reading()));
  it->SeekToFirst();
  if (it->Valid()) {
    return Status::Corruption(
        "the store in " + dir + " holds data but no format version (" +
        std::string(kFormatKey) + "); it was not written by drover");
  }
  if (!it->status().ok()) return FromLevelDb(it->status(), "opening " + dir);
  leveldb::WriteOptions wo;
  wo.sync = true;
  leveldb::Status s =
      db->Put(wo, std::string(kFormatKey), std::string(kFormatVersion));
  if (!s.ok()) return FromLevelDb(s, "initialising the store in " + dir);
  return Status::Ok();
}

// Restores the log seq and job id counters with a few seeks, so opening a
// large store stays fast.
Status Store::Impl::LoadCounters() {
  Result<std::optional<std::string>> lease = Get(std::string(kLogSeqKey));
  if (!lease.ok()) return lease.status();
  if (lease->has_value()) {
    std::optional<uint64_t> end = ParseHex(**lease);
    if (!end) return Status::Corruption("bad " + std::string(kLogSeqKey));
    log_seq = log_lease_end = *end;
  }

  // New ids must sort after every stored one, even if the clock went back.
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(Reading()));
  SeekToLastOf(it.get(), kJobPrefix);
  if (!it->status().ok()) return FromLevelDb(it->status(), "opening " + dir);
  if (it->Valid() && StartsWith(it->key(), kJobPrefix)) {
    std::string_view id = View(it->key()).substr(kJobPrefix.size());
    std::optional<uint64_t> ms, count;
    if (id.size() == kIdLength) {
      ms = ParseHex(id.substr(0, kIdMsDigits));
      count = ParseHex(id.substr(kIdMsDigits, kIdCounterDigits));
    }
    if (ms && count) {
      id_ms = static_cast<int64_t>(*ms);
      id_count = static_cast<uint32_t>(*count);
    }
  }
  rng.seed(std::random_device{}());
  return Status::Ok();
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                           const StoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::IOError("cannot create the data dir " + dir + ": " +
                           ec.message());
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->options = options;
  impl->cache.reset(leveldb::NewLRUCache(options.block_cache_bytes));

  leveldb::Options lo;
  lo.create_if_missing = true;
  lo.paranoid_checks = true;
  lo.block_cache = impl->cache.get();
  lo.write_buffer_size = options.write_buffer_bytes;
  lo.max_open_files = kMaxOpenFiles;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(lo, dir, &db);
  if (!s.ok()) {
    std::string m = s.ToString();
    // LevelDB's lock is an fcntl lock on DIR/LOCK (and an in-process table):
    // its failure means another Store, in this process or another, has it.
    if (s.IsIOError() && m.find("lock ") != std::string::npos &&
        m.find("LOCK") != std::string::npos) {
      return Status::IOError("the data dir " + dir +
                             " is in use by another drover process (its "
                             "LevelDB lock is held); stop that process or "
                             "use another data dir (" +
                             m + ")");
    }
    return FromLevelDb(s, "cannot open the store in " + dir);
  }
  impl->db.reset(db);
  if (Status f = impl->CheckFormat(); !f.ok()) return f;
  if (Status c = impl->LoadCounters(); !c.ok()) return c;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Status Store::health() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sticky;
}

uint64_t Store::commit_count() const { return impl_->commits.load(); }

struct PreparedWrite::Rep {
  std::vector<Batch::Op> todo;  // to encode into `batch` before writing
  leveldb::WriteBatch batch;
  size_t ops = 0;

  // Encodes what is left in `todo`: on the writing thread, not the loop's.
  void Encode() {
    std::string scratch;
    for (const Batch::Op& op : todo) {
      if (const auto* task = std::get_if<TaskRecord>(&op.value)) {
        EncodeInto(*task, scratch);
        batch.Put(op.key, scratch);
      } else if (const auto* value = std::get_if<std::string>(&op.value)) {
        batch.Put(op.key, *value);
      } else {
        batch.Delete(op.key);
      }
    }
    todo.clear();
  }
};

PreparedWrite::PreparedWrite() : rep_(std::make_unique<Rep>()) {}
PreparedWrite::~PreparedWrite() = default;
PreparedWrite::PreparedWrite(PreparedWrite&&) noexcept = default;
PreparedWrite& PreparedWrite::operator=(PreparedWrite&&) noexcept = default;
bool PreparedWrite::empty() const { return rep_ == nullptr || rep_->ops == 0; }

Status Store::Commit(Batch& batch) {
  Result<PreparedWrite> write = Prepare(batch);
  if (!write.ok()) return write.status();
  return Write(*write);
}

Status Store::Write(PreparedWrite& write) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->sticky.ok()) return impl_->sticky;
  }
  if (write.empty()) return Status::Ok();
  write.rep_->Encode();
  leveldb::WriteOptions wo;
  wo.sync = impl_->options.sync;
  impl_->commits.fetch_add(1);
  // No lock around the write: LevelDB groups concurrent writers into one
  // log write and one fsync.
  leveldb::Status s = impl_->db->Write(wo, &write.rep_->batch);
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->FailWrite(s);
    return impl_->sticky;
  }
  write.rep_->batch.Clear();
  write.rep_->ops = 0;
  return Status::Ok();
}

Result<PreparedWrite> Store::Prepare(Batch& batch) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->sticky.ok()) return impl_->sticky;
  }
  PreparedWrite write;
  if (batch.empty()) return write;
  // A record put several times in one batch is there once, as it was put
  // last (Batch::OpFor): the same outcome, less to log and to compact.
  // Records are encoded by Write, on the thread that writes.
  write.rep_->ops = batch.ops_.size();
  write.rep_->todo = std::move(batch.ops_);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->Remember(batch.pending_);
  }
  batch.ops_.clear();
  batch.pending_.clear();
  return write;
}

Result<JobRecord> Store::GetJob(std::string_view job_id) const {
  Result<std::optional<JobRecord>> job =
      impl_->GetRecord<JobRecord>(JobKey(job_id));
  if (!job.ok()) return job.status();
  if (!job->has_value()) {
    return Status::NotFound("no job '" + std::string(job_id) + "'");
  }
  return std::move(**job);
}

Result<std::vector<TaskRecord>> Store::GetTasks(std::string_view job_id) const {
  std::vector<TaskRecord> tasks;
  std::string prefix = TaskPrefix(job_id);
  Status s = impl_->Scan(prefix, prefix,
                         [&](std::string_view key, std::string_view value) {
                           TaskRecord t;
                           Status d = Decode(key, value, &t);
                           if (d.ok()) tasks.push_back(std::move(t));
                           return d;
                         });
  if (!s.ok()) return s;
  return tasks;
}

Result<TaskRecord> Store::GetTask(std::string_view job_id,
                                  uint32_t index) const {
  Result<std::optional<TaskRecord>> task =
      impl_->GetRecord<TaskRecord>(TaskKey(job_id, index));
  if (!task.ok()) return task.status();
  if (!task->has_value()) {
    return Status::NotFound("job '" + std::string(job_id) +
                            "' has no task with index " +
                            std::to_string(index));
  }
  return std::move(**task);
}

Result<std::vector<JobRecord>> Store::ListJobs(std::optional<JobState> state,
                                               size_t limit) const {
  std::vector<JobRecord> jobs;
  if (limit == 0) limit = SIZE_MAX;
  // A listing may sweep every job: keep it out of the block cache.
  std::unique_ptr<leveldb::Iterator> it(
      impl_->db->NewIterator(impl_->Reading(/*fill_cache=*/false)));
  SeekToLastOf(it.get(), kJobPrefix);
  for (;
       it->Valid() && StartsWith(it->key(), kJobPrefix) && jobs.size() < limit;
       it->Prev()) {
    JobRecord job;
    Status s = Decode(View(it->key()), View(it->value()), &job);
    if (!s.ok()) return s;
    if (!state || job.state == *state) jobs.push_back(std::move(job));
  }
  if (!it->status().ok()) return FromLevelDb(it->status(), "listing jobs");
  return jobs;
}

Result<std::vector<std::string>> Store::ListUnfinished() const {
  std::vector<std::string> ids;
  Status s =
      impl_->Scan(kUnfinishedPrefix, std::string(kUnfinishedPrefix),
                  [&](std::string_view key, std::string_view) {
                    ids.emplace_back(key.substr(kUnfinishedPrefix.size()));
                    return Status::Ok();
                  });
  if (!s.ok()) return s;
  return ids;
}

Result<std::vector<LogChunk>> Store::GetLogs(std::string_view job_id,
                                             std::optional<uint32_t> task_index,
                                             uint64_t after_seq) const {
  std::vector<LogChunk> chunks;
  if (after_seq == UINT64_MAX) return chunks;
  std::string prefix = LogPrefix(job_id);
  Status s = impl_->Scan(
      prefix, LogKey(job_id, after_seq + 1),
      [&](std::string_view key, std::string_view value) {
        std::optional<uint64_t> seq = ParseHex(key.substr(prefix.size()));
        if (!seq || key.size() != prefix.size() + kSeqDigits) {
          return Status::Corruption(Cat("bad log key '", key, "'"));
        }
        LogChunk chunk;
        Status d = Decode(key, value, &chunk);
        if (!d.ok()) return d;
        if (task_index && chunk.task_index != *task_index) {
          return Status::Ok();
        }
        chunk.seq = *seq;
        chunks.push_back(std::move(chunk));
        return Status::Ok();
      });
  if (!s.ok()) return s;
  return chunks;
}

Result<std::optional<std::string>> Store::GetMarker(
    std::string_view name) const {
  return impl_->Get(MarkerKey(name));
}

std::string Store::NewJobId() {
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  uint32_t random;
  int64_t ms;
  uint32_t count;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (now > impl_->id_ms) {
      impl_->id_ms = now;
      impl_->id_count = 0;
    } else if (++impl_->id_count > 0xffff) {
      // More than 65,536 ids in one millisecond (or a clock that went
      // back): borrow the next millisecond so ids keep increasing.
      ++impl_->id_ms;
      impl_->id_count = 0;
    }
    ms = impl_->id_ms;
    count = impl_->id_count;
    random = impl_->rng() & 0xffff;
  }
  return Hex(static_cast<uint64_t>(ms), kIdMsDigits) +
         Hex(count, kIdCounterDigits) + Hex(random, kIdRandomDigits);
}

// ---------------------------------------------------------------------------

Batch::Op& Batch::OpFor(PendingMap::iterator it) {
  Pending& p = it->second;
  if (p.op < 0) {
    p.op = static_cast<int32_t>(ops_.size());
    ops_.push_back({it->first, std::monostate()});
  }
  return ops_[p.op];
}

void Batch::Put(std::string key, std::optional<std::string> value) {
  Op& op = OpFor(pending_.try_emplace(std::move(key)).first);
  if (value) {
    op.value = std::move(*value);
  } else {
    op.value = std::monostate();
  }
}

Status Batch::PutJob(const JobRecord& job) {
  if (Status s = CheckJobId(job.id); !s.ok()) return s;
  std::string key = JobKey(job.id);
  auto it = pending_.find(key);
  Result<std::optional<int>> from = store_->impl_->FromState<JobRecord>(
      pending_, it != pending_.end() ? &it->second : nullptr, key, job.id,
      std::nullopt);
  if (!from.ok()) return from.status();
  std::string who = "job " + job.id;
  if (!from->has_value()) {
    if (job.state != JobState::kPending) {
      return Status::FailedPrecondition(who +
                                        ": a new job must be PENDING, not " +
                                        std::string(JobStateName(job.state)));
    }
    pending_[Cat(kNewJobNote, job.id)];
  } else if (Status s =
                 CheckJobTransition(static_cast<JobState>(**from), job.state);
             !s.ok()) {
    return Status::FailedPrecondition(who + ": " + s.message());
  }
  if (it == pending_.end()) it = pending_.try_emplace(std::move(key)).first;
  it->second.state = static_cast<int>(job.state);
  Op& op = OpFor(it);
  if (!std::holds_alternative<std::string>(op.value)) {
    op.value.emplace<std::string>();
  }
  EncodeInto(job, std::get<std::string>(op.value));
  if (IsTerminal(job.state)) {
    Put(UnfinishedKey(job.id), std::nullopt);
  } else {
    Put(UnfinishedKey(job.id), std::string());
  }
  return Status::Ok();
}

Result<Batch::PendingMap::iterator> Batch::CheckTask(const TaskRecord& task) {
  if (Status s = CheckJobId(task.job_id); !s.ok()) return s;
  std::string key = TaskKey(task.job_id, task.index);
  auto it = pending_.find(key);
  Result<std::optional<int>> from = store_->impl_->FromState<TaskRecord>(
      pending_, it != pending_.end() ? &it->second : nullptr, key,
      task.job_id, task.index);
  if (!from.ok()) return from.status();
  // Built only for an error: this runs for every transition.
  auto who = [&] {
    return "job " + task.job_id + " task '" + task.name + "' (index " +
           std::to_string(task.index) + ")";
  };
  if (!from->has_value()) {
    if (task.state != TaskState::kCreated &&
        task.state != TaskState::kPending) {
      return Status::FailedPrecondition(
          who() + ": a new task must be CREATED or PENDING, not " +
          std::string(TaskStateName(task.state)));
    }
  } else if (Status s = CheckTaskTransition(static_cast<TaskState>(**from),
                                            task.state);
             !s.ok()) {
    return Status::FailedPrecondition(who() + ": " + s.message());
  }
  if (it == pending_.end()) it = pending_.try_emplace(std::move(key)).first;
  it->second.state = static_cast<int>(task.state);
  return it;
}

Status Batch::PutTask(const TaskRecord& task) {
  Result<PendingMap::iterator> it = CheckTask(task);
  if (!it.ok()) return it.status();
  OpFor(*it).value = task;
  return Status::Ok();
}

Status Batch::PutTask(TaskRecord&& task) {
  Result<PendingMap::iterator> it = CheckTask(task);
  if (!it.ok()) return it.status();
  OpFor(*it).value = std::move(task);
  return Status::Ok();
}

void Batch::AppendLog(std::string_view job_id, LogChunk chunk) {
  {
    std::lock_guard<std::mutex> lock(store_->impl_->mu);
    chunk.seq = store_->impl_->NextLogSeq();
  }
  // Each chunk has a key of its own: no need to look for an earlier put.
  ops_.push_back({LogKey(job_id, chunk.seq), Encode(chunk)});
}

void Batch::PutMarker(std::string_view name, std::string_view value) {
  Put(MarkerKey(name), std::string(value));
}

void Batch::DeleteMarker(std::string_view name) {
  Put(MarkerKey(name), std::nullopt);
}

}  // namespace drover
