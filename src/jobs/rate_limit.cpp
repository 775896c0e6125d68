// RateLimiter (strata/job.h): QEMU's ratelimit semantics, as a pure function of the time given.
#include <algorithm>

#include "strata/job.h"

namespace strata {

void RateLimiter::set_speed(uint64_t speed, uint64_t slice_ns) {
  slice_ns_ = slice_ns;
  if (speed == 0) {
    slice_quota_ = 0;
    return;
  }
  // At least one byte per slice, so that a tiny speed still makes progress.
  double quota = static_cast<double>(speed) * static_cast<double>(slice_ns) / 1e9;
  slice_quota_ = std::max<uint64_t>(static_cast<uint64_t>(quota), 1);
}

uint64_t RateLimiter::calculate_delay(uint64_t now_ns, uint64_t bytes) {
  if (slice_quota_ == 0) return 0;
  if (slice_end_ < now_ns) {
    // The last slice (possibly extended) is over: start a new one.
    slice_start_ = now_ns;
    slice_end_ = now_ns + slice_ns_;
    dispatched_ = 0;
  }
  dispatched_ += bytes;
  if (dispatched_ < slice_quota_) return 0;
  // Over quota: the slice stretches to cover what was sent, and the next dispatch waits for
  // its end. The accounting is kept, so the excess is paid for exactly once.
  double slices = static_cast<double>(dispatched_) / static_cast<double>(slice_quota_);
  slice_end_ = slice_start_ + static_cast<uint64_t>(slices * static_cast<double>(slice_ns_));
  return slice_end_ > now_ns ? slice_end_ - now_ns : 0;
}

}  // namespace strata
