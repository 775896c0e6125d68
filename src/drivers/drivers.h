// The driver classes defined in this directory; builtin.cpp lists them for the Engine.
#pragma once

#include "strata/driver.h"

namespace strata::drivers {

extern const DriverClass kFile;     // protocol/file.cpp
extern const DriverClass kNullCo;   // protocol/null.cpp
extern const DriverClass kMemory;   // protocol/memory.cpp
extern const DriverClass kRaw;      // format/raw.cpp

}  // namespace strata::drivers
