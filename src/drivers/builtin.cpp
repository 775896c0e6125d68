// The list of built-in drivers. Adding a driver means adding it here: there is no
// self-registration, so what an Engine can open is visible in one place.
#include "drivers.h"
#include "format/qcow2/qcow2.h"
#include "strata/builtin_drivers.h"

namespace strata {

std::span<const DriverClass* const> builtin_drivers() {
  static const DriverClass* const kAll[] = {
      &drivers::kFile,
      &drivers::kNullCo,
      &drivers::kMemory,
      &drivers::kRaw,
      &qcow2::kQcow2Class,
      &drivers::kFaultInject,
      &drivers::kCopyOnRead,
  };
  return kAll;
}

}  // namespace strata
