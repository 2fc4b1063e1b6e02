// Status and Result<T>: how every drover module reports success or failure
// across its boundary. Modelled on LevelDB's Status, without out-params:
// a function that produces a value returns Result<T>.
//
// Both types are plain values; they are safe to copy between threads.
#ifndef DROVER_STATUS_H_
#define DROVER_STATUS_H_

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace drover {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // bad input from a user or a peer
  kNotFound,            // no such job, task, key or file
  kAlreadyExists,       // a unique name or id is taken
  kFailedPrecondition,  // the operation is illegal in the current state
  kCorruption,          // stored or received data does not decode
  kIOError,             // the filesystem or the database failed
  kUnavailable,         // a peer or a daemon cannot be reached
  kTimeout,             // a deadline passed
  kPermissionDenied,    // authentication or authorisation refused
  kInternal,            // a bug: an invariant does not hold
};

// The code's name, e.g. "InvalidArgument".
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return {Code::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) {
    return {Code::kNotFound, std::move(m)};
  }
  static Status AlreadyExists(std::string m) {
    return {Code::kAlreadyExists, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {Code::kFailedPrecondition, std::move(m)};
  }
  static Status Corruption(std::string m) {
    return {Code::kCorruption, std::move(m)};
  }
  static Status IOError(std::string m) {
    return {Code::kIOError, std::move(m)};
  }
  static Status Unavailable(std::string m) {
    return {Code::kUnavailable, std::move(m)};
  }
  static Status Timeout(std::string m) {
    return {Code::kTimeout, std::move(m)};
  }
  static Status PermissionDenied(std::string m) {
    return {Code::kPermissionDenied, std::move(m)};
  }
  static Status Internal(std::string m) {
    return {Code::kInternal, std::move(m)};
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  // Precondition for the Status constructor: !status.ok().

  bool ok() const { return std::holds_alternative<T>(v_); }
  // Precondition: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  // OK when ok(), else the error.
  Status status() const {
    return ok() ? Status::Ok() : std::get<Status>(v_);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace drover

#endif  // DROVER_STATUS_H_
