// The driver classes defined in this directory; builtin.cpp lists them for the Engine.
#pragma once

#include <cerrno>
#include <cstdint>
#include <string_view>

#include "strata/driver.h"
#include "strata/result.h"

namespace strata::drivers {

extern const DriverClass kFile;     // protocol/file.cpp
extern const DriverClass kNullCo;   // protocol/null.cpp
extern const DriverClass kMemory;   // protocol/memory.cpp
extern const DriverClass kRaw;      // format/raw.cpp
extern const DriverClass kFaultInject;  // filter/fault_inject.cpp
extern const DriverClass kCopyOnRead;   // filter/copy_on_read.cpp

// The largest length a node may have: QEMU's BDRV_MAX_LENGTH, INT64_MAX rounded down to 1 GiB,
// so that offset + bytes of any valid request fits in a signed 64-bit value.
inline constexpr uint64_t kMaxNodeLength = 0x7fffffffc0000000;

// The error for a size option above kMaxNodeLength; `name` is the option's full name.
inline Error size_too_large(std::string_view name) {
  return fail(EINVAL, "Parameter '{}' expects a size of at most {}", name, kMaxNodeLength);
}

}  // namespace strata::drivers
