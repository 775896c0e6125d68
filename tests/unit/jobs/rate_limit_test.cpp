// RateLimiter: QEMU's ratelimit arithmetic, driven with explicit times (no clock).
#include <gtest/gtest.h>

#include <cstdint>

#include "strata/job.h"

namespace strata {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSlice = RateLimiter::kSliceNs;

TEST(RateLimit, SpeedZeroNeverWaits) {
  RateLimiter limiter;
  EXPECT_EQ(limiter.calculate_delay(0, uint64_t{1} << 40), 0u);
  limiter.set_speed(1000);
  limiter.set_speed(0);
  EXPECT_EQ(limiter.calculate_delay(5, uint64_t{1} << 40), 0u);
}

TEST(RateLimit, WithinTheSliceQuotaNoWait) {
  RateLimiter limiter;
  limiter.set_speed(10'000);  // 1000 bytes per 100 ms slice
  EXPECT_EQ(limiter.calculate_delay(1 * kMs, 400), 0u);
  EXPECT_EQ(limiter.calculate_delay(2 * kMs, 599), 0u);  // 999 < 1000
}

TEST(RateLimit, ReachingTheQuotaWaitsForTheSliceEnd) {
  RateLimiter limiter;
  limiter.set_speed(10'000);
  // Slice starts at 1 ms; 1000 bytes is exactly one slice: wait until 101 ms.
  EXPECT_EQ(limiter.calculate_delay(1 * kMs, 1000), kSlice);
  // Asking again at 51 ms without sending: still 50 ms to go.
  EXPECT_EQ(limiter.calculate_delay(51 * kMs, 0), 50 * kMs);
}

TEST(RateLimit, ExcessStretchesTheSlice) {
  RateLimiter limiter;
  limiter.set_speed(10'000);
  // 2500 bytes = 2.5 slices: the next dispatch waits 250 ms from the slice start.
  EXPECT_EQ(limiter.calculate_delay(0, 2500), 250 * kMs);
  // After the stretched slice ends, a new slice starts with a fresh quota.
  EXPECT_EQ(limiter.calculate_delay(251 * kMs, 999), 0u);
  EXPECT_EQ(limiter.calculate_delay(252 * kMs, 1), kSlice - 1 * kMs);
}

TEST(RateLimit, TinySpeedStillHasAQuotaOfOneByte) {
  RateLimiter limiter;
  limiter.set_speed(1);  // 0.1 byte per slice -> 1
  EXPECT_EQ(limiter.calculate_delay(0, 1), kSlice);
  RateLimiter huge;
  huge.set_speed(1);
  // A megabyte at one byte per slice: a long wait, proportional to the excess.
  EXPECT_EQ(huge.calculate_delay(0, 1 << 20), (uint64_t{1} << 20) * kSlice);
}

TEST(RateLimit, CustomSlice) {
  RateLimiter limiter;
  limiter.set_speed(1'000'000, 10 * kMs);  // 10000 bytes per 10 ms
  EXPECT_EQ(limiter.calculate_delay(0, 9'999), 0u);
  EXPECT_EQ(limiter.calculate_delay(0, 10'001), 20 * kMs);
}

}  // namespace
}  // namespace strata
