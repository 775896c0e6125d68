#include "progress.h"

#include <fmt/format.h>
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdio>

namespace strata::tools {
namespace {

constexpr double kJsonInterval = 0.1;  // seconds between JSON lines while running
constexpr float kMinSkip = 1.0F;       // QEMU's min_skip for commit and convert

volatile std::sig_atomic_t g_signal_pending = 0;

void on_sigusr1(int /*signal*/) { g_signal_pending = 1; }

void install_sigusr1() {
  struct sigaction action {};
  sigfillset(&action.sa_mask);
  action.sa_handler = on_sigusr1;
  sigaction(SIGUSR1, &action, nullptr);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

ProgressReporter::Sink stdio_sink(std::FILE* file) {
  return [file](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), file);
    std::fflush(file);
  };
}

double steady_seconds() {
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  return std::chrono::duration<double>(now).count();
}

}  // namespace

ProgressReporter::ProgressReporter(Mode mode, Sink out, Sink err, Clock clock)
    : mode_(mode),
      out_(out ? std::move(out) : stdio_sink(stdout)),
      err_(err ? std::move(err) : stdio_sink(stderr)),
      clock_(clock ? std::move(clock) : Clock(steady_seconds)) {}

float ProgressReporter::percent(uint64_t offset, uint64_t len) {
  if (len == 0) return 0.0F;
  const float p = static_cast<float>(offset) / static_cast<float>(len) * 100.0F;
  return p > 100.0F ? 100.0F : p;
}

void ProgressReporter::begin() {
  start_ = clock_();
  install_sigusr1();
  if (mode_ == Mode::kFrames) {
    last_frame_ = 0.0F;
    print_frame(0.0F);
  } else if (mode_ == Mode::kJson) {
    print_json(start_);
  }
}

void ProgressReporter::set_len(uint64_t len) { len_ = len; }

void ProgressReporter::update(uint64_t offset) {
  offset_ = offset;
  const double now = clock_();
  serve_line_request(now);
  if (mode_ == Mode::kFrames) {
    const float current = percent(offset_, len_);
    // QEMU's rule: a frame when the figure moved by more than min_skip, or is 0 or 100.
    if (current > last_frame_ + kMinSkip || current < last_frame_ - kMinSkip || current == 100.0F ||
        current == 0.0F) {
      print_frame(current);
    }
  } else if (mode_ == Mode::kJson && now - last_json_ >= kJsonInterval) {
    print_json(now);
  }
}

void ProgressReporter::end(bool success) {
  const double now = clock_();
  serve_line_request(now);
  if (success) offset_ = len_;
  if (mode_ == Mode::kFrames) {
    if (success) print_frame(100.0F);
    out_("\n");
  } else if (mode_ == Mode::kJson) {
    print_json(now);
  }
}

void ProgressReporter::print_frame(float current) {
  last_frame_ = current;
  out_(fmt::format("    ({:.2f}/100%)\r", current));
}

void ProgressReporter::print_json(double now) {
  last_json_ = now;
  err_(fmt::format("{{\"offset\": {}, \"len\": {}, \"elapsed\": {:.6f}}}\n", offset_, len_,
                   now - start_));
}

void ProgressReporter::serve_line_request(double now) {
  if (g_signal_pending != 0) {
    g_signal_pending = 0;
    line_requested_ = true;
  }
  if (!line_requested_) return;
  line_requested_ = false;
  if (mode_ == Mode::kJson) {
    print_json(now);
  } else if (mode_ == Mode::kSignalOnly) {
    err_(fmt::format("    ({:.2f}/100%)\n", percent(offset_, len_)));
  }
}

}  // namespace strata::tools
