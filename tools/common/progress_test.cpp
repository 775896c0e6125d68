// Progress reporting: qemu-img's -p frames and SIGUSR1 line, and the --progress=json lines,
// driven with a fake clock and captured output.
#include "progress.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

namespace strata::tools {
namespace {

using Mode = ProgressReporter::Mode;

// A reporter writing into strings, on a clock the test sets.
struct Harness {
  explicit Harness(Mode mode)
      : reporter(
            mode, [this](std::string_view s) { out += s; },
            [this](std::string_view s) { err += s; }, [this] { return now; }) {}
  std::string out;
  std::string err;
  double now = 100.0;
  ProgressReporter reporter;
};

TEST(Progress, PercentIsQemusFloatFigure) {
  struct Case {
    uint64_t offset, len;
    std::string shown;
  };
  const Case cases[] = {
      {0, 0, "0.00"},
      {0, 100, "0.00"},
      {1, 3, "33.33"},
      {2, 3, "66.67"},
      {999, 1000, "99.90"},
      {1000, 1000, "100.00"},
      {1 << 20, 3 << 20, "33.33"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(fmt::format("{:.2f}", ProgressReporter::percent(c.offset, c.len)), c.shown)
        << c.offset << "/" << c.len;
  }
}

TEST(Progress, FramesFollowQemusMinSkipRule) {
  Harness h(Mode::kFrames);
  h.reporter.begin();
  h.reporter.set_len(1000);
  // (offset, frame expected): a new frame only past 1 point from the last one, or at 0 / 100.
  const std::vector<std::pair<uint64_t, std::string>> steps = {
      {0, "    (0.00/100%)\r"},  // 0 always prints, as in qemu-img's polling loop
      {5, ""},
      {15, "    (1.50/100%)\r"},
      {20, ""},
      {25, ""},  // exactly 1 point: not more than min_skip
      {26, "    (2.60/100%)\r"},
      {500, "    (50.00/100%)\r"},
      {1000, "    (100.00/100%)\r"},
  };
  std::string want = "    (0.00/100%)\r";
  EXPECT_EQ(h.out, want);
  for (const auto& [offset, frame] : steps) {
    h.reporter.update(offset);
    want += frame;
    EXPECT_EQ(h.out, want) << "offset " << offset;
  }
  h.reporter.end(true);
  EXPECT_EQ(h.out, want + "    (100.00/100%)\r\n");
  EXPECT_EQ(h.err, "");
}

TEST(Progress, FramesEndWithOnlyANewlineOnFailure) {
  Harness h(Mode::kFrames);
  h.reporter.begin();
  h.reporter.set_len(100);
  h.reporter.update(40);
  h.reporter.end(false);
  EXPECT_EQ(h.out, "    (0.00/100%)\r    (40.00/100%)\r\n");
}

TEST(Progress, FramesIgnoreLineRequests) {
  Harness h(Mode::kFrames);
  h.reporter.begin();
  h.reporter.set_len(100);
  h.reporter.request_line();
  h.reporter.update(50);
  EXPECT_EQ(h.err, "");
}

TEST(Progress, JsonLinesAreThrottledAndEndWithTheFinalOne) {
  Harness h(Mode::kJson);
  h.reporter.begin();
  EXPECT_EQ(h.err, "{\"offset\": 0, \"len\": 0, \"elapsed\": 0.000000}\n");
  h.reporter.set_len(4096);
  h.now = 100.05;
  h.reporter.update(1024);  // 50 ms after the last line: none
  EXPECT_EQ(h.err, "{\"offset\": 0, \"len\": 0, \"elapsed\": 0.000000}\n");
  h.now = 100.125;
  h.reporter.update(2048);
  h.now = 100.2;
  h.reporter.update(3072);  // 75 ms after the last line: none
  h.now = 100.25;
  h.reporter.end(true);
  EXPECT_EQ(h.err,
            "{\"offset\": 0, \"len\": 0, \"elapsed\": 0.000000}\n"
            "{\"offset\": 2048, \"len\": 4096, \"elapsed\": 0.125000}\n"
            "{\"offset\": 4096, \"len\": 4096, \"elapsed\": 0.250000}\n");
  EXPECT_EQ(h.out, "");
}

TEST(Progress, JsonFinalLineOnFailureKeepsTheOffsetReached) {
  Harness h(Mode::kJson);
  h.reporter.begin();
  h.reporter.set_len(100);
  h.reporter.update(30);
  h.now = 101.0;
  h.reporter.end(false);
  EXPECT_EQ(h.err.substr(h.err.rfind('{')),
            "{\"offset\": 30, \"len\": 100, \"elapsed\": 1.000000}\n");
}

TEST(Progress, JsonLineRequestPrintsAnExtraJsonLine) {
  Harness h(Mode::kJson);
  h.reporter.begin();
  h.reporter.set_len(100);
  h.now = 100.01;
  h.reporter.request_line();
  h.reporter.update(10);
  EXPECT_EQ(h.err,
            "{\"offset\": 0, \"len\": 0, \"elapsed\": 0.000000}\n"
            "{\"offset\": 10, \"len\": 100, \"elapsed\": 0.010000}\n");
}

TEST(Progress, SignalOnlyPrintsNothingButTheRequestedLine) {
  Harness h(Mode::kSignalOnly);
  h.reporter.begin();
  h.reporter.set_len(200);
  h.reporter.update(50);
  EXPECT_EQ(h.err, "");
  h.reporter.request_line();
  h.reporter.update(100);
  h.reporter.update(150);  // once per request
  h.reporter.end(true);
  EXPECT_EQ(h.err, "    (50.00/100%)\n");
  EXPECT_EQ(h.out, "");
}

TEST(Progress, Sigusr1AsksForOneLine) {
  Harness h(Mode::kSignalOnly);
  h.reporter.begin();  // installs the handler; without it SIGUSR1 would end the test binary
  h.reporter.set_len(4);
  ASSERT_EQ(std::raise(SIGUSR1), 0);
  h.reporter.update(1);
  h.reporter.update(2);
  EXPECT_EQ(h.err, "    (25.00/100%)\n");
}

}  // namespace
}  // namespace strata::tools
