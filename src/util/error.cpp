#include "strata/result.h"

#include <cassert>
#include <cstring>

namespace strata {

std::string_view error_class_name(ErrorClass cls) {
  switch (cls) {
    case ErrorClass::kGenericError:
      return "GenericError";
    case ErrorClass::kCommandNotFound:
      return "CommandNotFound";
    case ErrorClass::kDeviceNotActive:
      return "DeviceNotActive";
    case ErrorClass::kDeviceNotFound:
      return "DeviceNotFound";
    case ErrorClass::kKVMMissingCap:
      return "KVMMissingCap";
  }
  return "GenericError";
}

Error::Error(int err, std::string message, ErrorClass cls)
    : err_(err), message_(std::move(message)), class_(cls) {
  assert(err > 0);
}

Error Error::prefixed(std::string_view context) const& {
  Error copy = *this;
  return std::move(copy).prefixed(context);
}

Error Error::prefixed(std::string_view context) && {
  message_ = fmt::format("{}: {}", context, message_);
  return std::move(*this);
}

Error Error::with_class(ErrorClass cls) && {
  class_ = cls;
  return std::move(*this);
}

Error Error::with_hint(std::string hint) && {
  hint_ = std::move(hint);
  return std::move(*this);
}

Error errno_error(int err, std::string_view what) {
  return Error(err, fmt::format("{}: {}", what, std::strerror(err)));
}

}  // namespace strata
