// Checked integer arithmetic for sizes and offsets that come from users, images or the wire.
// Each returns std::nullopt instead of wrapping around.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>

namespace strata {

template <class T>
  requires std::is_integral_v<T>
[[nodiscard]] constexpr std::optional<T> checked_add(T a, T b) {
  T r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

template <class T>
  requires std::is_integral_v<T>
[[nodiscard]] constexpr std::optional<T> checked_sub(T a, T b) {
  T r;
  if (__builtin_sub_overflow(a, b, &r)) return std::nullopt;
  return r;
}

template <class T>
  requires std::is_integral_v<T>
[[nodiscard]] constexpr std::optional<T> checked_mul(T a, T b) {
  T r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// True if [offset, offset + len) lies inside [0, size) without overflow.
[[nodiscard]] constexpr bool range_within(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

}  // namespace strata
