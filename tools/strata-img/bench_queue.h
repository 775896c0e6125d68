// BenchQueue: the scheduling core of `strata-img bench`, qemu-img bench's request loop
// (qemu-img.c bench_cb, QEMU 7.2) as coroutines.
//
//   - `count` requests, at most `depth` in flight; the first at `offset`, each next one `step`
//     bytes further, wrapping at the image size (offset %= size, as qemu-img does: a request that
//     then crosses the end fails, like qemu-img's);
//   - with a flush interval N: whenever a request completes while the number of requests not yet
//     issued is a multiple of N, flush. With drain_on_flush, issue nothing more until every
//     request in flight has completed and the flush is done; without it, flush alongside;
//   - the first failure stops the run: nothing more is issued, what is in flight completes, and
//     the error is returned ("Failed request" / "Failed flush request").
//
// The queue is `depth` worker coroutines. Each owns one slice of the caller's buffer and loops:
// take the next offset, issue one request, account for its completion. Nothing is allocated per
// request (buffers and iovecs are made once; the request path recycles coroutine frames).
//
// Threading: runs on the event loop's thread, driving the loop until the run is over.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {
class EventLoop;
}

namespace strata::tools::img {

// What the queue sends requests to: the image (a BlockBackend) or a test double.
class BenchTarget {
 public:
  virtual ~BenchTarget() = default;
  // One read or write of iov.size() bytes at `offset`.
  virtual Task<Result<void>> request(uint64_t offset, IoVec iov) = 0;
  virtual Task<Result<void>> flush() = 0;
};

struct BenchParams {
  int64_t count = 0;
  int depth = 1;  // REQUIRES: > 0
  uint64_t offset = 0;
  uint64_t bufsize = 4096;
  uint64_t step = 4096;
  uint64_t image_size = 0;
  int flush_interval = 0;  // 0: never flush
  bool drain_on_flush = true;
};

struct BenchOutcome {
  // From the start until the last request completed.
  std::chrono::steady_clock::duration elapsed{};
  // Set if the run stopped early; `failed` says what failed ("Failed request", "Failed flush
  // request").
  std::optional<Error> error;
  std::string failed;
};

// How many requests can be in flight at once: the depth, unless there are fewer requests.
int bench_slots(const BenchParams& params);

// Runs the benchmark to completion on `loop`. `buffers` holds bench_slots(params) * bufsize
// bytes; request slot i uses bytes [i * bufsize, (i + 1) * bufsize).
BenchOutcome run_bench_queue(EventLoop& loop, BenchTarget& target, const BenchParams& params,
                             uint8_t* buffers);

}  // namespace strata::tools::img
