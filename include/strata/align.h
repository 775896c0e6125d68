// Alignment helpers for power-of-two alignments (sector sizes, cluster sizes, page sizes).
#pragma once

#include <cstdint>

namespace strata {

[[nodiscard]] constexpr bool is_power_of_2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// REQUIRES for all below: is_power_of_2(align).
[[nodiscard]] constexpr uint64_t align_down(uint64_t x, uint64_t align) { return x & ~(align - 1); }
// REQUIRES: x + align - 1 does not overflow.
[[nodiscard]] constexpr uint64_t align_up(uint64_t x, uint64_t align) {
  return (x + align - 1) & ~(align - 1);
}
[[nodiscard]] constexpr bool is_aligned(uint64_t x, uint64_t align) {
  return (x & (align - 1)) == 0;
}

}  // namespace strata
