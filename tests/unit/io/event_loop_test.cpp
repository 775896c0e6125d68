// EventLoop: cross-thread post, yield ordering, timers, run/poll/stop, run_sync.
#include "strata/event_loop.h"

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

TEST(EventLoop, PostFromAnotherThreadRunsOnTheLoopThread) {
  EventLoop loop;
  auto work = asio::make_work_guard(loop.context());
  std::thread::id ran_on;
  std::thread poster([&] {
    loop.post([&] {
      ran_on = std::this_thread::get_id();
      loop.stop();
    });
  });
  loop.run();
  poster.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(EventLoop, StopFromAnotherThreadEndsRun) {
  EventLoop loop;
  auto work = asio::make_work_guard(loop.context());  // run() would otherwise never end
  std::atomic<bool> stopping{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stopping = true;
    loop.stop();
  });
  loop.run();
  // run() returned because of stop(), not before it.
  EXPECT_TRUE(stopping.load());
  stopper.join();
}

TEST(EventLoop, RunReturnsWhenNoWorkIsLeftAndCanRunAgain) {
  EventLoop loop;
  int ran = 0;
  loop.post([&] { ++ran; });
  loop.run();
  EXPECT_EQ(ran, 1);
  // The context stopped when it ran out of work; run() starts it again.
  loop.post([&] { ++ran; });
  loop.run();
  EXPECT_EQ(ran, 2);
}

TEST(EventLoop, PollRunsReadyHandlersWithoutBlocking) {
  EventLoop loop;
  int ran = 0;
  for (int i = 0; i < 3; ++i) loop.post([&] { ++ran; });
  EXPECT_EQ(loop.poll(), 3u);
  EXPECT_EQ(ran, 3);
  EXPECT_EQ(loop.poll(), 0u);
  loop.post([&] { ++ran; });
  EXPECT_EQ(loop.poll(), 1u);
  EXPECT_EQ(ran, 4);
}

Task<void> note_around_yield(EventLoop* loop, std::vector<std::string>* log, std::string name) {
  log->push_back(name + ":before");
  co_await loop->yield();
  log->push_back(name + ":after");
}

TEST(EventLoop, YieldRunsAfterHandlersAlreadyQueued) {
  EventLoop loop;
  std::vector<std::string> log;
  loop.post([&] { log.push_back("posted"); });
  spawn(note_around_yield(&loop, &log, "a"));
  spawn(note_around_yield(&loop, &log, "b"));
  loop.run();
  EXPECT_EQ(log,
            (std::vector<std::string>{"a:before", "b:before", "posted", "a:after", "b:after"}));
}

Task<void> sleep_then_note(EventLoop* loop, uint64_t ms, std::vector<uint64_t>* woke) {
  co_await loop->sleep_ms(ms);
  woke->push_back(ms);
}

TEST(EventLoop, SleepMsWaitsAtLeastThatLong) {
  EventLoop loop;
  std::vector<uint64_t> woke;
  auto start = Clock::now();
  run_sync(loop, sleep_then_note(&loop, 30, &woke));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(30));
  EXPECT_EQ(woke, std::vector<uint64_t>{30});
}

TEST(EventLoop, ConcurrentSleepsWakeInDeadlineOrder) {
  EventLoop loop;
  std::vector<uint64_t> woke;
  spawn(sleep_then_note(&loop, 40, &woke));
  spawn(sleep_then_note(&loop, 5, &woke));
  spawn(sleep_then_note(&loop, 20, &woke));
  loop.run();
  // Waking in deadline order rather than spawn order shows they slept at the same time.
  EXPECT_EQ(woke, (std::vector<uint64_t>{5, 20, 40}));
}

Task<int> slow_value(EventLoop* loop, int value) {
  co_await loop->sleep_ms(1);
  co_await loop->yield();
  co_return value;
}

TEST(EventLoop, RunSyncReturnsTheTaskValueAndCanBeRepeated) {
  EventLoop loop;
  EXPECT_EQ(run_sync(loop, slow_value(&loop, 7)), 7);
  EXPECT_EQ(run_sync(loop, slow_value(&loop, 8)), 8);
  // Work posted after run_sync still runs on the next run().
  bool ran = false;
  loop.post([&] { ran = true; });
  loop.run();
  EXPECT_TRUE(ran);
}

Task<void> post_from_thread_and_wait(EventLoop* loop, std::thread::id* resumed_on) {
  struct Awaiter {
    EventLoop* loop;
    std::thread* worker;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      EventLoop* l = loop;
      *worker = std::thread([l, h] { l->post([h] { h.resume(); }); });
    }
    void await_resume() const noexcept {}
  };
  std::thread worker;
  Awaiter awaiter{loop, &worker};
  co_await awaiter;
  *resumed_on = std::this_thread::get_id();
  worker.join();
}

TEST(EventLoop, CoroutineWokenFromAnotherThreadResumesOnTheLoopThread) {
  EventLoop loop;
  std::thread::id resumed_on;
  auto work = asio::make_work_guard(loop.context());  // the worker posts later
  run_sync(loop, post_from_thread_and_wait(&loop, &resumed_on));
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

}  // namespace
}  // namespace strata
