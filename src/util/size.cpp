// parse_size: the size syntax of options and command lines ("512", "64k", "1G").
//
// Stricter than QEMU's qemu_strtosz on purpose: no fractions ("1.5G"), no hexadecimal, no
// whitespace and no sign, so that a size always means exactly what its digits say.
#include <cstdint>
#include <optional>
#include <string_view>

#include "strata/checked.h"
#include "strata/options.h"

namespace strata {

namespace {

// The shift for a binary unit suffix, or nullopt if `c` is not one.
std::optional<unsigned> suffix_shift(char c) {
  switch (c) {
    case 'k':
    case 'K':
      return 10;
    case 'm':
    case 'M':
      return 20;
    case 'g':
    case 'G':
      return 30;
    case 't':
    case 'T':
      return 40;
    case 'p':
    case 'P':
      return 50;
    case 'e':
    case 'E':
      return 60;
    default:
      return std::nullopt;
  }
}

}  // namespace

std::optional<uint64_t> parse_size(std::string_view text) {
  unsigned shift = 0;
  if (!text.empty()) {
    if (auto s = suffix_shift(text.back())) {
      shift = *s;
      text.remove_suffix(1);
    }
  }
  if (text.empty()) return std::nullopt;

  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    auto times_ten = checked_mul<uint64_t>(value, 10);
    if (!times_ten) return std::nullopt;
    auto next = checked_add<uint64_t>(*times_ten, static_cast<uint64_t>(c - '0'));
    if (!next) return std::nullopt;
    value = *next;
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) return std::nullopt;
  return value << shift;
}

}  // namespace strata
