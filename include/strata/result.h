// Errors as values.
//
// Every fallible operation in Strata returns Result<T>: either a T or an Error. An Error carries a
// positive errno (what went wrong, for callers that branch on it, and for the NBD wire), a
// human-readable message (what the user sees, in QEMU's wording where one exists) and the QMP
// error class the control plane reports. Exceptions never cross a driver or coroutine boundary.
//
// Context is added on the way up, keeping the errno:
//
//   auto r = co_await file.read(...);
//   if (!r) co_return r.error().prefixed("qcow2: L2 table at 0x50000");
//
// Thread safety: plain values; no shared state.
#pragma once

#include <fmt/format.h>
#include <tl/expected.hpp>

#include <string>
#include <string_view>
#include <utility>

namespace strata {

// QMP error classes (qapi/error.json). Clients must not parse `desc`; they may branch on these.
enum class ErrorClass {
  kGenericError,
  kCommandNotFound,
  kDeviceNotActive,
  kDeviceNotFound,
  kKVMMissingCap,
};

// The wire name of an error class, e.g. "GenericError".
std::string_view error_class_name(ErrorClass cls);

class Error {
 public:
  // REQUIRES: err > 0 (an errno value such as EINVAL).
  Error(int err, std::string message, ErrorClass cls = ErrorClass::kGenericError);

  int err() const { return err_; }
  const std::string& message() const { return message_; }
  ErrorClass error_class() const { return class_; }

  // Returns this error with "context: " put before the message; errno and class are kept.
  [[nodiscard]] Error prefixed(std::string_view context) const&;
  [[nodiscard]] Error prefixed(std::string_view context) &&;

  // Returns this error with its class replaced (e.g. DeviceNotFound at the QMP edge).
  [[nodiscard]] Error with_class(ErrorClass cls) &&;

  // A hint: a further line for people, printed by the command-line tools after the message
  // ("Is another process using the image [x]?") and left out of QMP's `desc`, as QEMU does.
  const std::string& hint() const { return hint_; }
  [[nodiscard]] Error with_hint(std::string hint) &&;

 private:
  int err_;
  std::string message_;
  ErrorClass class_;
  std::string hint_;
};

// Result<T> is tl::expected<T, Error> that cannot be ignored. An Error converts to a failed
// Result implicitly, so `return r.error();` and `co_return fail(EIO, "...")` both work.
template <class T>
class [[nodiscard]] Result : public tl::expected<T, Error> {
 public:
  using Base = tl::expected<T, Error>;
  using Base::Base;
  Result(const Base& b) : Base(b) {}
  Result(Base&& b) : Base(std::move(b)) {}
  Result(Error e) : Base(tl::unexpect, std::move(e)) {}
};

template <>
class [[nodiscard]] Result<void> : public tl::expected<void, Error> {
 public:
  using Base = tl::expected<void, Error>;
  using Base::Base;
  Result(const Base& b) : Base(b) {}
  Result(Base&& b) : Base(std::move(b)) {}
  Result(Error e) : Base(tl::unexpect, std::move(e)) {}
};

// Builds an Error: fail(EINVAL, "Parameter '{}' is missing", name).
template <class... Args>
[[nodiscard]] Error fail(int err, fmt::format_string<Args...> format, Args&&... args) {
  return Error(err, fmt::format(format, std::forward<Args>(args)...));
}

// Builds an Error with an explicit QMP class.
template <class... Args>
[[nodiscard]] Error fail(ErrorClass cls, int err, fmt::format_string<Args...> format,
                         Args&&... args) {
  return Error(err, fmt::format(format, std::forward<Args>(args)...), cls);
}

// An Error from errno as set by a failed system call, formatted "<what>: <strerror>".
[[nodiscard]] Error errno_error(int err, std::string_view what);

}  // namespace strata
