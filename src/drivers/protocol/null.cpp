// The `null-co` protocol driver: a device of a given size that stores nothing (QEMU 7.2's
// block/null.c semantics).
//
// Writes are dropped and succeed. Reads leave the caller's buffer untouched unless read-zeroes
// is on, as in QEMU: null-co exists to measure the block layer itself, and clearing buffers
// would cost time the measurement should not include. Every read, write and flush first waits
// latency-ns nanoseconds on the loop's timer when that is set. There is no resize.
//
// Options: size (default 1 GiB), latency-ns (default 0), read-zeroes (default off; QEMU made it
// default on only after 7.2).
#include <algorithm>
#include <asio/error_code.hpp>
#include <asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>

#include "drivers.h"
#include "strata/event_loop.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

constexpr uint64_t kDefaultSize = uint64_t{1} << 30;

// Awaitable: resumes the awaiting coroutine from the loop `ns` nanoseconds later, or does not
// suspend at all when `ns` is zero. EventLoop::sleep_ms counts whole milliseconds; latency-ns
// needs nanoseconds. The timer is made only when needed: null-co measures the block layer, so
// the common latency-free request should cost nothing here.
class Latency {
 public:
  Latency(EventLoop& loop, uint64_t ns) : loop_(&loop), ns_(ns) {}

  bool await_ready() const noexcept { return ns_ == 0; }
  void await_suspend(std::coroutine_handle<> h) {
    // latency-ns may be up to INT64_MAX; capped (at 36 years) so that now + latency cannot
    // overflow the clock.
    constexpr uint64_t kMaxNs = uint64_t{1} << 60;
    auto delay = std::chrono::nanoseconds(static_cast<int64_t>(std::min(ns_, kMaxNs)));
    timer_.emplace(loop_->context(), delay);
    timer_->async_wait([h](const asio::error_code&) { h.resume(); });
  }
  void await_resume() const noexcept {}

 private:
  EventLoop* loop_;
  uint64_t ns_;
  std::optional<asio::steady_timer> timer_;
};

class NullDriver final : public Driver {
 public:
  NullDriver(EventLoop& loop, Node& node, uint64_t length, uint64_t latency_ns, bool read_zeroes)
      : loop_(&loop),
        node_(&node),
        length_(length),
        latency_ns_(latency_ns),
        read_zeroes_(read_zeroes) {}

  uint64_t length() const override { return length_; }

  NodeLimits limits() const override {
    NodeLimits l;
    l.supports_fua = true;  // nothing is stored, so everything is as durable as it gets
    return l;
  }

  Task<Result<void>> preadv(uint64_t, uint64_t bytes, IoVec iov, ReqFlags) override {
    if (read_zeroes_) iov.fill(0, 0, bytes);
    Latency latency(*loop_, latency_ns_);
    co_await latency;
    co_return Result<void>{};
  }

  Task<Result<void>> pwritev(uint64_t, uint64_t, IoVec, ReqFlags) override {
    Latency latency(*loop_, latency_ns_);
    co_await latency;
    co_return Result<void>{};
  }

  Task<Result<void>> flush() override {
    Latency latency(*loop_, latency_ns_);
    co_await latency;
    co_return Result<void>{};
  }

  // Like QEMU's null_co_block_status: the node itself holds every byte, and the bytes are
  // known to be zero only with read-zeroes. There is never DATA: nothing was stored.
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st;
    st.bytes = bytes;
    st.flags = BlockStatusFlags::kOffsetValid;
    if (read_zeroes_) st.flags = st.flags | BlockStatusFlags::kZero;
    st.map = offset;
    st.file = node_;
    co_return st;
  }

 private:
  EventLoop* loop_;
  Node* node_;
  uint64_t length_;
  uint64_t latency_ns_;
  bool read_zeroes_;
};

Task<Result<std::unique_ptr<Driver>>> open_null(OpenContext& ctx) {
  OptionReader& options = ctx.options();
  auto size = options.get_size("size");
  if (!size) co_return size.error();
  uint64_t length = size->value_or(kDefaultSize);
  if (length > kMaxNodeLength) co_return size_too_large(options.full_name("size"));

  auto latency = options.get_uint("latency-ns");
  if (!latency) co_return latency.error();
  // QEMU stores the value in an int64_t and refuses what turns negative.
  if (latency->value_or(0) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    co_return fail(EINVAL, "latency-ns is invalid");
  }

  auto read_zeroes = options.get_bool("read-zeroes");
  if (!read_zeroes) co_return read_zeroes.error();

  co_return std::unique_ptr<Driver>(std::make_unique<NullDriver>(
      ctx.loop(), ctx.node(), length, latency->value_or(0), read_zeroes->value_or(false)));
}

}  // namespace

// What open_null reads.
constexpr DriverOption kNullOptions[] = {
    {"size", OptionType::kSize},
    {"latency-ns", OptionType::kUint},
    {"read-zeroes", OptionType::kBool},
};

const DriverClass kNullCo = {"null-co", DriverKind::kProtocol, &open_null, false, kNullOptions};

}  // namespace strata::drivers
