#include "strata/align.h"
#include "strata/checked.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace strata {
namespace {

TEST(Checked, AddDetectsOverflow) {
  EXPECT_EQ(checked_add<uint64_t>(1, 2), 3u);
  EXPECT_FALSE(checked_add<uint64_t>(std::numeric_limits<uint64_t>::max(), 1));
  EXPECT_FALSE(checked_add<int64_t>(std::numeric_limits<int64_t>::max(), 1));
}

TEST(Checked, MulDetectsOverflow) {
  EXPECT_EQ(checked_mul<uint64_t>(1u << 20, 1u << 20), uint64_t{1} << 40);
  EXPECT_FALSE(checked_mul<uint64_t>(uint64_t{1} << 33, uint64_t{1} << 31));
}

TEST(Checked, SubDetectsUnderflow) {
  EXPECT_EQ(checked_sub<uint64_t>(5, 3), 2u);
  EXPECT_FALSE(checked_sub<uint64_t>(3, 5));
}

TEST(Checked, RangeWithin) {
  EXPECT_TRUE(range_within(0, 10, 10));
  EXPECT_TRUE(range_within(10, 0, 10));
  EXPECT_FALSE(range_within(10, 1, 10));
  EXPECT_FALSE(range_within(11, 0, 10));
  EXPECT_FALSE(range_within(5, std::numeric_limits<uint64_t>::max(), 10));
}

TEST(Align, Basics) {
  EXPECT_TRUE(is_power_of_2(4096));
  EXPECT_FALSE(is_power_of_2(0));
  EXPECT_FALSE(is_power_of_2(12));
  EXPECT_EQ(align_down(4097, 4096), 4096u);
  EXPECT_EQ(align_up(4097, 4096), 8192u);
  EXPECT_EQ(align_up(4096, 4096), 4096u);
  EXPECT_TRUE(is_aligned(8192, 512));
  EXPECT_FALSE(is_aligned(8193, 512));
}

}  // namespace
}  // namespace strata
