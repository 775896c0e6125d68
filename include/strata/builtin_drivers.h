// The built-in drivers, listed once (src/drivers/builtin.cpp). No self-registration.
#pragma once

#include <span>

#include "strata/driver.h"

namespace strata {

std::span<const DriverClass* const> builtin_drivers();

}  // namespace strata
