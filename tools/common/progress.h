// Progress of a long operation (commit now, convert later), reported the ways qemu-img's users
// rely on (ecosystem-conventions.md 1.2):
//   - Mode::kFrames (-p): qemu-img's frames on stdout, "    (%3.2f/100%)\r", a new frame only
//     when the figure moved by more than 1 point or is 0 or 100 (QEMU's qemu_progress_print with
//     min_skip 1), and a "\n" at the end, success or not;
//   - Mode::kJson (--progress=json): one JSON object per line on stderr,
//       {"offset": 1048576, "len": 4194304, "elapsed": 0.012345}
//     offset and len in bytes (the operation's own measure: for commit, bytes of the image
//     looked at), elapsed in seconds since begin(). At most one line per 100 ms while it runs,
//     always one at begin() and a final one at end(). The keys are stable; new keys may only be
//     added;
//   - Mode::kSignalOnly (neither, or -q): nothing, except that SIGUSR1 asks for one line
//     "    (%3.2f/100%)\n" on stderr, printed at the next update, as qemu-img does. In kJson mode
//     SIGUSR1 asks for an extra JSON line instead, so that stderr stays parseable.
// The percentage is computed in float, as QEMU does, so the frames show the same figures.
//
// Threading: one thread (the event loop's); the SIGUSR1 handler only sets a flag.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

namespace strata::tools {

class ProgressReporter {
 public:
  enum class Mode { kSignalOnly, kFrames, kJson };
  // Where text goes; the defaults write to stdout / stderr and flush.
  using Sink = std::function<void(std::string_view)>;
  // Seconds on a monotonic clock; the default is std::chrono::steady_clock.
  using Clock = std::function<double()>;

  explicit ProgressReporter(Mode mode, Sink out = {}, Sink err = {}, Clock clock = {});

  // Starts the clock and reports 0 (a frame; a JSON line with len 0 until set_len). Installs
  // the SIGUSR1 handler.
  void begin();
  void set_len(uint64_t len);
  // Reports that `offset` of len bytes are done.
  void update(uint64_t offset);
  // As SIGUSR1 does: one line at the next update.
  void request_line() { line_requested_ = true; }
  // Ends the report: on success a final 100% frame; then the frames' "\n" or the final JSON line.
  void end(bool success);

  // The figure qemu-img shows for offset/len (0 when len is 0).
  static float percent(uint64_t offset, uint64_t len);

 private:
  void print_frame(float current);
  void print_json(double now);
  // Consumes a pending SIGUSR1 (or request_line) and prints its line.
  void serve_line_request(double now);

  Mode mode_;
  Sink out_;
  Sink err_;
  Clock clock_;
  double start_ = 0;
  double last_json_ = 0;
  float last_frame_ = 0;
  uint64_t offset_ = 0;
  uint64_t len_ = 0;
  bool line_requested_ = false;
};

}  // namespace strata::tools
