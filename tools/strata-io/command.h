// strata-io's commands: the table entry each command is, the state they share, and the
// dispatcher that splits a command line and runs it the way qemu-io does.
//
// A command returns 0 or a negative errno. Any negative return makes strata-io exit with status 1
// at the end, like qemu-io 7.2; the command has printed its own message by then.
//
// Threading: the main thread, which also runs the event loop (commands call run_sync).
#pragma once

#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "getopt.h"
#include "image.h"
#include "strata/perm.h"

namespace strata {
class BlockBackend;
class Engine;
class EventLoop;
}  // namespace strata

namespace strata::tools::io {

// Counts aio_read/aio_write requests in flight so aio_flush and exit can wait for them.
class AioTracker {
 public:
  void begin() { ++in_flight_; }
  void end();
  uint64_t in_flight() const { return in_flight_; }
  // Awaitable: resumes when nothing is in flight.
  auto drained() {
    struct Awaiter {
      AioTracker* t;
      bool await_ready() const noexcept { return t->in_flight_ == 0; }
      void await_suspend(std::coroutine_handle<> h) { t->waiter_ = h; }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

 private:
  uint64_t in_flight_ = 0;
  std::coroutine_handle<> waiter_;
};

// Everything the commands act on.
struct IoContext {
  std::string prog;  // "strata-io", for error messages
  EventLoop* loop = nullptr;
  Engine* engine = nullptr;
  OpenImage image;          // image.blk is null when no file is open
  bool image_opts = false;  // --image-opts: the file argument is keyval text
  bool misalign = false;    // -m: buffers start 16 bytes past an aligned address
  bool quit = false;
  AioTracker aio;

  BlockBackend* blk() const { return image.blk.get(); }
};

// A buffer for one request: aligned for O_DIRECT (or deliberately misaligned with -m) and filled
// with a byte, as qemu-io's qemu_io_alloc does.
class IoBuffer {
 public:
  IoBuffer(size_t len, uint8_t fill, bool misalign);
  uint8_t* data() const { return data_; }
  size_t size() const { return len_; }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> mem_;
  uint8_t* data_ = nullptr;
  size_t len_ = 0;
};

using CommandFn = int (*)(IoContext& ctx, std::span<const std::string> argv);

struct Command {
  std::string_view name;
  std::string_view altname;  // one-letter alias ("r" for read), or empty
  CommandFn run;
  int argmin;
  int argmax;               // -1: no limit
  bool global = false;      // runs without an open file and never needs one (quit, help)
  bool no_file_ok = false;  // runs without an open file (open, sleep)
  Perm perm = Perm::kNone;  // permission to take on the image before running (write: WRITE)
  std::string_view args;    // synopsis of the arguments; empty for none
  std::string_view oneline;
  std::string_view help;  // longer help text, or empty
};

// The command tables, one per command group.
std::span<const Command> rw_commands();     // read, write, discard (rw_commands.cpp)
std::span<const Command> aio_commands();    // aio_read, aio_write, aio_flush (aio_commands.cpp)
std::span<const Command> image_commands();  // open, close, length, map, ... (image_commands.cpp)

// Prints "<name> <args> -- <oneline>" (a command's usage) and returns -EINVAL.
int usage(const Command& cmd);

// A command's options and operands, scanned with getopt's rules (argv[0] is the command name).
// Commands walk `steps` in order and stop at the first error, as qemu-io's getopt loops do.
struct ScannedArgs {
  std::string name;  // the command as typed ("r" or "read"): getopt's messages use it
  std::vector<OptionParser::Step> steps;
  std::vector<std::string> operands;
};
ScannedArgs scan_args(std::span<const std::string> argv, std::string_view optstring);

// Prints getopt's message for `error` ("read: invalid option -- 'Z'") and the command's usage;
// returns -EINVAL.
int option_error(const Command& cmd, const ScannedArgs& args, const OptionError& error);

// Runs one command line (split at spaces, like qemu-io: no quoting). Returns 0 or a negative
// errno.
int run_command_line(IoContext& ctx, std::string_view line);

// Opens `spec` as the current file, holding consistent-read (and write unless read-only) and
// sharing everything, as qemu-io does. On failure prints "can't open device <shown_name>: ..."
// ("can't open: ..." without a name: --image-opts) and returns a negative errno.
int open_file(IoContext& ctx, const ImageSpec& spec, const std::optional<std::string>& shown_name);

// Waits until every aio request has completed.
void drain_aio(IoContext& ctx);

}  // namespace strata::tools::io
