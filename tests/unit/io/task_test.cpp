// Task<T>: values, errors, laziness, frame ownership, symmetric transfer, and spawn().
#include "strata/task.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "strata/event_loop.h"
#include "strata/result.h"

namespace strata {
namespace {

// Counts live copies, so a test can see whether a coroutine frame (which holds a copy of its
// parameters) has been destroyed.
struct Tracker {
  int* live;
  explicit Tracker(int* counter) : live(counter) { ++*live; }
  Tracker(const Tracker& other) : live(other.live) { ++*live; }
  Tracker(Tracker&& other) noexcept : live(other.live) { ++*live; }
  Tracker& operator=(const Tracker&) = delete;
  ~Tracker() { --*live; }
};

Task<int> answer() { co_return 42; }

Task<int> add_answers() {
  int a = co_await answer();
  int b = co_await answer();
  co_return a + b;
}

TEST(Task, ReturnsItsValueToTheAwaiter) {
  EventLoop loop;
  EXPECT_EQ(run_sync(loop, add_answers()), 84);
}

Task<std::string> echo(std::string text) { co_return text + text; }

TEST(Task, ReturnsMoveOnlyAndHeapValues) {
  EventLoop loop;
  EXPECT_EQ(run_sync(loop, echo("ab")), "abab");
}

Task<void> set_flag(bool* flag) {
  *flag = true;
  co_return;
}

Task<void> set_flag_twice(bool* first, bool* second) {
  co_await set_flag(first);
  co_await set_flag(second);
}

TEST(Task, VoidTasksRunInOrder) {
  EventLoop loop;
  bool first = false;
  bool second = false;
  run_sync(loop, set_flag_twice(&first, &second));
  EXPECT_TRUE(first);
  EXPECT_TRUE(second);
}

Task<Result<int>> parse_positive(int value) {
  if (value <= 0) co_return fail(EINVAL, "value {} is not positive", value);
  co_return value;
}

Task<Result<int>> double_positive(int value) {
  Result<int> r = co_await parse_positive(value);
  if (!r) co_return r.error().prefixed("doubling");
  co_return *r * 2;
}

TEST(Task, ResultCarriesValueOrErrorWithContext) {
  EventLoop loop;
  Result<int> ok = run_sync(loop, double_positive(21));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 42);

  Result<int> bad = run_sync(loop, double_positive(-1));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().err(), EINVAL);
  EXPECT_EQ(bad.error().message(), "doubling: value -1 is not positive");
}

Task<int> leaf(int value, std::uintptr_t* stack_mark) {
  *stack_mark = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  co_return value & 1;
}

Task<int64_t> million_awaits(std::uintptr_t* first_mark, std::uintptr_t* last_mark) {
  int64_t sum = 0;
  std::uintptr_t mark = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    sum += co_await leaf(i, &mark);
    if (i == 0) *first_mark = mark;
  }
  *last_mark = mark;
  co_return sum;
}

// Each await completes synchronously. The awaiter must carry on without nesting a stack frame
// per await (whether or not the compiler turns symmetric transfer into a tail call), or the
// stack would overflow long before the millionth.
TEST(Task, MillionSynchronousAwaitsDoNotGrowTheStack) {
  EventLoop loop;
  std::uintptr_t first = 0;
  std::uintptr_t last = 0;
  EXPECT_EQ(run_sync(loop, million_awaits(&first, &last)), 500'000);
  ASSERT_NE(first, 0u);
  std::uintptr_t distance = first > last ? first - last : last - first;
  EXPECT_LT(distance, 64u * 1024) << "the stack moved by " << distance << " bytes";
}

Task<int> count_down(int depth) {
  if (depth == 0) co_return 0;
  int below = co_await count_down(depth - 1);
  co_return below + 1;
}

TEST(Task, NestedSynchronousChainCompletes) {
  EventLoop loop;
  EXPECT_EQ(run_sync(loop, count_down(1000)), 1000);
}

Task<int> count_down_yielding(EventLoop* loop, int depth, std::vector<int>* finished) {
  if (depth == 0) {
    co_await loop->yield();  // the innermost task suspends; the whole chain waits for it
    finished->push_back(0);
    co_return 0;
  }
  int below = co_await count_down_yielding(loop, depth - 1, finished);
  finished->push_back(depth);
  co_return below + 1;
}

// When the innermost task suspends, every awaiter up the chain suspends; when it finishes, each
// task resumes its awaiter in turn, innermost first.
TEST(Task, NestedChainResumesEachAwaiterWhenTheInnermostTaskFinishesLater) {
  EventLoop loop;
  std::vector<int> finished;
  EXPECT_EQ(run_sync(loop, count_down_yielding(&loop, 50, &finished)), 50);
  ASSERT_EQ(finished.size(), 51u);
  for (int i = 0; i <= 50; ++i) EXPECT_EQ(finished[i], i);
}

Task<int> one_then_yield(EventLoop* loop, int* mixed) {
  ++*mixed;
  if (*mixed % 3 == 0) co_await loop->yield();
  co_return 1;
}

Task<int> mixed_awaits(EventLoop* loop, int* mixed) {
  int sum = 0;
  for (int i = 0; i < 3000; ++i) sum += co_await one_then_yield(loop, mixed);
  co_return sum;
}

TEST(Task, LoopMixingSynchronousAndSuspendingAwaitsGetsEveryValue) {
  EventLoop loop;
  int mixed = 0;
  EXPECT_EQ(run_sync(loop, mixed_awaits(&loop, &mixed)), 3000);
  EXPECT_EQ(mixed, 3000);
}

Task<void> touch(Tracker tracker, bool* ran) {
  (void)tracker;
  *ran = true;
  co_return;
}

TEST(Task, IsLazyAndANeverStartedTaskFreesItsFrame) {
  int live = 0;
  bool ran = false;
  {
    Tracker tracker(&live);
    Task<void> task = touch(tracker, &ran);
    EXPECT_EQ(live, 2);  // ours and the copy in the frame
    EXPECT_FALSE(ran);
  }
  EXPECT_EQ(live, 0);
  EXPECT_FALSE(ran);
}

TEST(Task, MoveAssignmentDestroysTheReplacedFrame) {
  int live_a = 0;
  int live_b = 0;
  bool ran = false;
  Task<void> task = touch(Tracker(&live_a), &ran);
  EXPECT_EQ(live_a, 1);
  task = touch(Tracker(&live_b), &ran);
  EXPECT_EQ(live_a, 0);
  EXPECT_EQ(live_b, 1);
  EventLoop loop;
  run_sync(loop, std::move(task));
  EXPECT_TRUE(ran);
  EXPECT_EQ(live_b, 0);
}

Task<void> yield_then_finish(EventLoop* loop, Tracker tracker, int* stage) {
  (void)tracker;
  *stage = 1;
  co_await loop->yield();
  *stage = 2;
}

TEST(Task, SpawnStartsNowAndTheDetachedFrameFreesItself) {
  EventLoop loop;
  int live = 0;
  int stage = 0;
  spawn(yield_then_finish(&loop, Tracker(&live), &stage));
  EXPECT_EQ(stage, 1);  // ran up to its first suspension, on this thread
  EXPECT_EQ(live, 1);   // the suspended frame holds the tracker
  loop.run();
  EXPECT_EQ(stage, 2);
  EXPECT_EQ(live, 0);  // finished, and the frame was freed at final suspend
}

}  // namespace
}  // namespace strata
