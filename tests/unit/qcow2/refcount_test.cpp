// Refcount block entries at every width, in QEMU's bit order.
#include "format/qcow2/refcount.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata::qcow2 {
namespace {

TEST(Qcow2Refcount, PerBlockAndMax) {
  EXPECT_EQ(refcounts_per_block(16, 4), 32768u);
  EXPECT_EQ(refcounts_per_block(9, 0), 4096u);
  EXPECT_EQ(refcounts_per_block(9, 6), 64u);
  EXPECT_EQ(refcount_max(0), 1u);
  EXPECT_EQ(refcount_max(2), 15u);
  EXPECT_EQ(refcount_max(4), 65535u);
  EXPECT_EQ(refcount_max(5), 0xffffffffu);
  EXPECT_EQ(refcount_max(6), ~uint64_t{0});
}

struct ByteLayoutCase {
  uint32_t order;
  uint64_t index;
  uint64_t value;
  std::vector<uint8_t> want;  // first bytes of the block after the set
};

TEST(Qcow2Refcount, ByteLayoutTable) {
  const ByteLayoutCase cases[] = {
      // Sub-byte widths fill each byte from its least significant bit.
      {0, 0, 1, {0x01, 0}},
      {0, 3, 1, {0x08, 0}},
      {0, 7, 1, {0x80, 0}},
      {0, 8, 1, {0x00, 0x01}},
      {1, 0, 3, {0x03, 0}},
      {1, 1, 2, {0x08, 0}},
      {1, 3, 1, {0x40, 0}},
      {2, 0, 0xa, {0x0a, 0}},
      {2, 1, 0x5, {0x50, 0}},
      {2, 2, 0xf, {0x00, 0x0f}},
      // A byte and wider: big-endian integers.
      {3, 1, 0xab, {0x00, 0xab}},
      {4, 1, 0x1234, {0, 0, 0x12, 0x34}},
      {5, 0, 0x01020304, {1, 2, 3, 4}},
      {6, 0, 0x0102030405060708, {1, 2, 3, 4, 5, 6, 7, 8}},
  };
  for (const ByteLayoutCase& c : cases) {
    std::vector<uint8_t> block(512, 0);
    refcount_set(block, c.index, c.order, c.value);
    std::vector<uint8_t> head(block.begin(), block.begin() + c.want.size());
    EXPECT_EQ(head, c.want) << "order " << c.order << " index " << c.index;
    EXPECT_EQ(refcount_get(block, c.index, c.order), c.value);
  }
}

// Every entry of a block at every width: distinct values, set in one pass, read back in
// another, so that a set that spills into a neighbour shows up.
TEST(Qcow2Refcount, EveryEntryRoundTripsAtEveryWidth) {
  constexpr uint32_t kClusterBits = 9;
  for (uint32_t order = 0; order <= 6; ++order) {
    std::vector<uint8_t> block(512, 0);
    const uint64_t n = refcounts_per_block(kClusterBits, order);
    const uint64_t max = refcount_max(order);
    auto value_of = [&](uint64_t i) { return (i * 0x9e3779b97f4a7c15ull) & max; };
    for (uint64_t i = 0; i < n; ++i) refcount_set(block, i, order, value_of(i));
    for (uint64_t i = 0; i < n; ++i) {
      ASSERT_EQ(refcount_get(block, i, order), value_of(i)) << "order " << order << " i " << i;
    }
    // Overwrite with the maximum and with 0: neighbours stay.
    refcount_set(block, 1, order, max);
    EXPECT_EQ(refcount_get(block, 1, order), max);
    EXPECT_EQ(refcount_get(block, 0, order), value_of(0));
    EXPECT_EQ(refcount_get(block, 2, order), value_of(2));
    refcount_set(block, 1, order, 0);
    EXPECT_EQ(refcount_get(block, 1, order), 0u);
    EXPECT_EQ(refcount_get(block, 2, order), value_of(2));
  }
}

}  // namespace
}  // namespace strata::qcow2
