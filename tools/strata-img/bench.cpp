// strata-img bench: qemu-img bench's sequential I/O benchmark, with its flags, output and
// semantics (qemu-img.c img_bench/bench_cb in QEMU 7.2):
//
//   - `count` requests of `bufsize` bytes, `depth` in flight; the first at `offset`, each next
//     one `step` bytes further (default: bufsize), wrapping at the image size;
//   - with --flush-interval N (write tests only), whenever the number of requests not yet
//     issued is a multiple of N: drain the queue, flush, then go on; with --no-drain, flush
//     without draining;
//   - a failed request ends the run: "Failed request: <strerror>", exit status 1.
//
// This file is the command line and the report; the request loop is bench_queue.h.
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>

#include "bench_queue.h"
#include "cli.h"
#include "image.h"
#include "image_session.h"
#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

struct BenchOptions {
  ImageSpec spec;
  int count = 75000;
  int depth = 64;
  uint64_t offset = 0;
  uint64_t bufsize = 4096;
  uint64_t step = 0;  // 0: bufsize
  uint8_t pattern = 0;
  bool write = false;
  int flush_interval = 0;
  bool drain_on_flush = true;
};

// ---- option parsing ----

enum LongOnly { kFlushInterval = kFirstOwnOption, kPattern, kNoDrain };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},
    {"flush-interval", true, kFlushInterval},
    {"image-opts", false, kImageOpts},
    {"pattern", true, kPattern},
    {"no-drain", false, kNoDrain},
    {"force-share", false, 'U'},
};

// An integer the way qemu_strtoul reads it (decimal, 0x hex, 0 octal; the whole text) up to max.
std::optional<unsigned long> parse_ulong(const std::string& text, unsigned long max) {
  if (text.empty() || text[0] == '-') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(text.c_str(), &end, 0);
  if (errno != 0 || *end != '\0' || v > max) return std::nullopt;
  return v;
}

// Applies one option to `o`; exits with qemu-img's message on a bad value.
void apply_bench_option(std::string_view prog, const ParsedOption& opt, BenchOptions& o) {
  // bench has no --object: its parser never returns it.
  if (apply_image_option(prog, opt, o.spec)) return;
  const std::string& arg = opt.arg;
  switch (opt.id) {
    case 'c': {
      auto v = parse_ulong(arg, INT_MAX);
      if (!v) fail_exit(prog, "Invalid request count specified");
      o.count = static_cast<int>(*v);
      break;
    }
    case 'd': {
      // Depth 0 would never issue a request (qemu-img then waits forever): refused.
      auto v = parse_ulong(arg, INT_MAX);
      if (!v || *v == 0) fail_exit(prog, "Invalid queue depth specified");
      o.depth = static_cast<int>(*v);
      break;
    }
    case 'n':
      o.spec.aio = "native";
      break;  // qemu-img: native AIO, Strata's io_uring
    case 'i': {
      auto aio = parse_aio_mode(arg);
      if (!aio) fail_exit(prog, fmt::format("Invalid aio option: {}", arg));
      o.spec.aio = *aio;
      break;
    }
    case 'o':
      o.offset = size_option(prog, "offset", arg, INT64_MAX);
      break;
    case 'q':
      break;  // qemu-img bench prints its lines even with -q
    case 's':
      o.bufsize = size_option(prog, "buffer size", arg, INT_MAX);
      break;
    case 'S':
      o.step = size_option(prog, "step_size", arg, INT_MAX);
      break;
    case 't': {
      auto mode = parse_cache_mode(arg);
      if (!mode) fail_exit(prog, "Invalid cache mode");
      o.spec.cache = *mode;
      break;
    }
    case 'w':
      o.write = true;
      break;
    case kNoDrain:
      o.drain_on_flush = false;
      break;
    case kPattern: {
      auto v = parse_ulong(arg, 0xff);
      if (!v) fail_exit(prog, "Invalid pattern byte specified");
      o.pattern = static_cast<uint8_t>(*v);
      break;
    }
    case kFlushInterval: {
      auto v = parse_ulong(arg, INT_MAX);
      if (!v) fail_exit(prog, "Invalid flush interval specified");
      o.flush_interval = static_cast<int>(*v);
      break;
    }
  }
}

BenchOptions parse_bench_options(std::string_view prog, std::span<const std::string> args) {
  BenchOptions o;
  o.spec.discard = "ignore";  // qemu-img opens without BDRV_O_UNMAP
  OptionParser parser(args, ":hc:d:f:ni:o:qs:S:t:wU", kLongOptions);
  while (auto opt = next_option(prog, parser)) apply_bench_option(prog, *opt, o);
  o.spec.filename = image_filename_operand(prog, parser);
  o.spec.read_only = !o.write;
  if (!o.write && o.flush_interval != 0) {
    fail_exit(prog, "--flush-interval is only available in write tests");
  }
  if (o.flush_interval != 0 && o.flush_interval < o.depth) {
    fail_exit(prog, "Flush interval can't be smaller than depth");
  }
  if (o.spec.image_opts && !o.spec.format.empty()) {
    fail_exit(prog, "--image-opts and --format are mutually exclusive");
  }
  return o;
}

// ---- the run ----

// The image as the queue's target: reads, or writes (with FUA in writethrough modes).
class ImageTarget final : public BenchTarget {
 public:
  ImageTarget(BlockBackend& blk, bool write, ReqFlags write_flags)
      : blk_(&blk), write_(write), write_flags_(write_flags) {}

  Task<Result<void>> request(uint64_t offset, IoVec iov) override {
    const uint64_t bytes = iov.size();
    if (write_) return blk_->write(offset, bytes, std::move(iov), write_flags_);
    return blk_->read(offset, bytes, std::move(iov));
  }
  Task<Result<void>> flush() override { return blk_->flush(); }

 private:
  BlockBackend* blk_;
  bool write_;
  ReqFlags write_flags_;
};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

int run_bench_on(std::string_view prog, const BenchOptions& o, EventLoop& loop, BlockBackend& blk) {
  BenchParams params;
  params.count = o.count;
  params.depth = o.depth;
  params.offset = o.offset;
  params.bufsize = o.bufsize;
  params.step = o.step != 0 ? o.step : o.bufsize;
  params.image_size = blk.size();
  params.flush_interval = o.flush_interval;
  params.drain_on_flush = o.drain_on_flush;

  fmt::print(
      "Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step size "
      "{})\n",
      o.count, o.write ? "write" : "read", o.bufsize, o.depth, o.offset, params.step);
  if (o.flush_interval != 0) fmt::print("Sending flush every {} requests\n", o.flush_interval);

  // One buffer per request slot, aligned for O_DIRECT, filled with the pattern.
  const size_t total = static_cast<size_t>(bench_slots(params)) * o.bufsize;
  const size_t alloc = (total + 4095) / 4096 * 4096 + 4096;
  std::unique_ptr<void, FreeDeleter> mem(std::aligned_alloc(4096, alloc));
  if (!mem) fail_exit(prog, "Could not allocate the request buffers");
  auto* buffers = static_cast<uint8_t*>(mem.get());
  std::memset(buffers, o.pattern, total);

  ImageTarget target(blk, o.write, o.spec.cache.writethrough ? ReqFlags::kFua : ReqFlags::kNone);
  const BenchOutcome outcome = run_bench_queue(loop, target, params, buffers);
  if (outcome.error) {
    report_error(prog, fmt::format("{}: {}", outcome.failed, std::strerror(outcome.error->err())));
    return 1;
  }
  const std::chrono::duration<double> took = outcome.elapsed;
  fmt::print("Run completed in {:.3f} seconds.\n", took.count());
  return 0;
}

}  // namespace

int run_bench(std::string_view prog, std::span<const std::string> args) {
  const BenchOptions o = parse_bench_options(prog, args);

  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  // Only check_image_spec's errors can come up here: --image-opts with --format was refused
  // while parsing, in qemu-img bench's order among its other flag checks.
  if (!image_flags_valid(prog, o.spec)) return 1;
  Perm perm = Perm::kConsistentRead;
  if (o.write) perm |= Perm::kWrite;
  auto image = open_image(loop, engine, o.spec, perm, Perm::kAll);
  if (!image) {
    report_error(prog,
                 fmt::format("Could not open '{}': {}", o.spec.filename, image.error().message()));
    return 1;
  }
  const int status = run_bench_on(prog, o, loop, *image->blk);
  close_image(loop, engine, *image);
  return status;
}

}  // namespace strata::tools::img
