// qcow2 refcount block entries of 1 to 64 bits.
#include "refcount.h"

namespace strata::qcow2 {

// Widths below a byte: entry `index` sits at bit (index % per_byte) * width of its byte, counted
// from the least significant bit (as QEMU packs them). A byte and above: a big-endian integer.
uint64_t refcount_get(std::span<const uint8_t> block, uint64_t index, uint32_t refcount_order) {
  const uint32_t width = 1u << refcount_order;
  if (width < 8) {
    const uint32_t per_byte = 8 / width;
    const uint32_t shift = uint32_t(index % per_byte) * width;
    return (block[index / per_byte] >> shift) & ((1u << width) - 1);
  }
  const uint32_t bytes = width / 8;
  const uint8_t* p = &block[index * bytes];
  uint64_t value = 0;
  for (uint32_t i = 0; i < bytes; ++i) value = (value << 8) | p[i];
  return value;
}

void refcount_set(std::span<uint8_t> block, uint64_t index, uint32_t refcount_order,
                  uint64_t value) {
  const uint32_t width = 1u << refcount_order;
  if (width < 8) {
    const uint32_t per_byte = 8 / width;
    const uint32_t shift = uint32_t(index % per_byte) * width;
    const uint32_t mask = ((1u << width) - 1) << shift;
    uint8_t& byte = block[index / per_byte];
    byte = uint8_t((byte & ~mask) | ((uint32_t(value) << shift) & mask));
    return;
  }
  const uint32_t bytes = width / 8;
  uint8_t* p = &block[index * bytes];
  for (uint32_t i = bytes; i-- > 0; value >>= 8) p[i] = uint8_t(value);
}

}  // namespace strata::qcow2
