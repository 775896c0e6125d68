// qcow2 refcount blocks: reading and writing one entry of 2^order bits (order 0..6: 1 to 64
// bits) in a refcount block held as the raw on-disk bytes. Widths of 8 bits and more are
// big-endian integers. Below 8 bits, entries are packed from the least significant bit of each
// byte: entry i is bits [(i % per_byte) * width, ...) of byte i / per_byte. That is what QEMU
// reads and writes (qemu-img create -o refcount_bits=1 marks the first clusters in byte 0 as
// 0x01, 0x03, 0x07...), although the spec's "big-endian" wording suggests the opposite.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

namespace strata::qcow2 {

// Number of refcount entries in one refcount block.
inline uint64_t refcounts_per_block(uint32_t cluster_bits, uint32_t refcount_order) {
  return (uint64_t{1} << (cluster_bits + 3)) >> refcount_order;
}
// The largest refcount an entry can hold.
inline uint64_t refcount_max(uint32_t refcount_order) {
  return refcount_order == 6 ? ~uint64_t{0} : (uint64_t{1} << (1u << refcount_order)) - 1;
}
// REQUIRES: index < refcounts_per_block(...); block.size() == cluster size.
uint64_t refcount_get(std::span<const uint8_t> block, uint64_t index, uint32_t refcount_order);
// REQUIRES: as refcount_get, and value <= refcount_max(refcount_order).
void refcount_set(std::span<uint8_t> block, uint64_t index, uint32_t refcount_order,
                  uint64_t value);

}  // namespace strata::qcow2
