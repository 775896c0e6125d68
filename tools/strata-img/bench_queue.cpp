#include "bench_queue.h"

#include <algorithm>
#include <coroutine>
#include <utility>
#include <vector>

#include "strata/event_loop.h"

namespace strata::tools::img {
namespace {

using Clock = std::chrono::steady_clock;

// State the workers share. Counting follows bench_cb: `remaining` counts requests not completed,
// `in_flight` those issued and not completed, so remaining - in_flight have not been issued.
struct Run {
  EventLoop* loop = nullptr;
  BenchTarget* target = nullptr;
  const BenchParams* params = nullptr;

  int64_t remaining = 0;
  int64_t in_flight = 0;
  uint64_t next_offset = 0;
  bool draining = false;  // a drained flush is due: issue nothing until it is done
  std::vector<std::coroutine_handle<>> drain_waiters;
  std::vector<std::coroutine_handle<>> resuming;      // released, to be resumed from the loop
  std::vector<std::coroutine_handle<>> resuming_now;  // being resumed
  int workers = 0;
  int flushes_in_flight = 0;  // undrained flushes still running
  std::coroutine_handle<> done_waiter;
  Clock::time_point finished;
  BenchOutcome outcome;

  bool over() const { return workers == 0 && flushes_in_flight == 0; }

  void fail(std::string what, Error error) {
    if (outcome.error) return;
    outcome.error = std::move(error);
    outcome.failed = std::move(what);
    release_drain_waiters();
  }

  // Lets workers waiting for a drained flush go on. They are resumed from the loop, not from
  // here: a resumed worker may reach the next flush point before the caller returns. One posted
  // handler resumes them all, so a flush costs one small allocation, not one per worker.
  void release_drain_waiters() {
    draining = false;
    const bool post_needed = resuming.empty();
    resuming.insert(resuming.end(), drain_waiters.begin(), drain_waiters.end());
    drain_waiters.clear();
    if (post_needed && !resuming.empty()) loop->post([this] { resume_released(); });
  }
  void resume_released() {
    std::swap(resuming, resuming_now);
    for (auto h : resuming_now) h.resume();
    resuming_now.clear();
  }

  void maybe_done() {
    if (over() && done_waiter) std::exchange(done_waiter, {}).resume();
  }

  // Awaitable: suspends a worker until the drained flush is done.
  auto flush_done() {
    struct Awaiter {
      Run* run;
      bool await_ready() const noexcept { return !run->draining; }
      void await_suspend(std::coroutine_handle<> h) { run->drain_waiters.push_back(h); }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

  // Awaitable: suspends the driver until the workers and flushes are all done.
  auto all_done() {
    struct Awaiter {
      Run* run;
      bool await_ready() const noexcept { return run->over(); }
      void await_suspend(std::coroutine_handle<> h) { run->done_waiter = h; }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }
};

Task<void> undrained_flush(Run* run) {
  auto task = run->target->flush();
  auto r = co_await task;
  if (!r) run->fail("Failed flush request", r.error());
  run->flushes_in_flight--;
  run->maybe_done();
}

// Accounts for one completed request and decides about flushing (bench_cb's "time for
// flush?"). Returns true when this request must now flush the drained queue: it completed last.
// A plain function, not a coroutine: it runs once per request.
bool account_completion(Run* run) {
  const int64_t not_issued = run->remaining - run->in_flight;
  run->remaining--;
  run->in_flight--;
  if (run->remaining == 0) run->finished = Clock::now();
  if (run->outcome.error) return false;  // the run is over; nothing more to flush for
  const int interval = run->params->flush_interval;
  if (interval == 0 || not_issued % interval != 0) return false;
  if (!run->params->drain_on_flush) {
    run->flushes_in_flight++;
    spawn(undrained_flush(run));
    return false;
  }
  run->draining = true;
  return run->in_flight == 0;
}

Task<void> drained_flush(Run* run) {
  auto task = run->target->flush();
  auto r = co_await task;
  if (!r) {
    run->fail("Failed request", r.error());
    co_return;
  }
  run->release_drain_waiters();
}

Task<void> worker(Run* run, uint8_t* buf) {
  const BenchParams& p = *run->params;
  const IoVec iov(buf, p.bufsize);
  while (!run->outcome.error) {
    if (run->draining) {
      co_await run->flush_done();
      continue;
    }
    if (run->remaining - run->in_flight <= 0) break;
    const uint64_t offset = run->next_offset;
    run->next_offset = p.image_size == 0 ? 0 : (offset + p.step) % p.image_size;
    run->in_flight++;
    auto request = run->target->request(offset, iov);
    auto r = co_await request;
    if (!r) {
      run->in_flight--;
      run->fail("Failed request", r.error());
      break;
    }
    if (account_completion(run)) {
      auto flush = drained_flush(run);
      co_await flush;
    }
  }
  run->workers--;
  run->maybe_done();
}

Task<void> drive(Run* run, uint8_t* buffers) {
  const BenchParams& p = *run->params;
  const int slots = bench_slots(p);
  run->workers = slots;
  for (int i = 0; i < slots; i++) {
    spawn(worker(run, buffers + static_cast<size_t>(i) * p.bufsize));
  }
  co_await run->all_done();
}

}  // namespace

int bench_slots(const BenchParams& params) {
  return static_cast<int>(std::min<int64_t>(params.depth, params.count));
}

BenchOutcome run_bench_queue(EventLoop& loop, BenchTarget& target, const BenchParams& params,
                             uint8_t* buffers) {
  Run run;
  run.loop = &loop;
  run.target = &target;
  run.params = &params;
  run.remaining = params.count;
  run.next_offset = params.offset;
  const auto slots = static_cast<size_t>(bench_slots(params));
  run.drain_waiters.reserve(slots);
  run.resuming.reserve(slots);
  run.resuming_now.reserve(slots);

  const auto start = Clock::now();
  run.finished = start;
  run_sync(loop, drive(&run, buffers));
  run.outcome.elapsed = run.finished - start;
  return std::move(run.outcome);
}

}  // namespace strata::tools::img
