// aio_read, aio_write and aio_flush: requests that run in the background while later commands
// go on, reported when they complete (qemu-io 7.2's aio_read_f/aio_write_f/aio_flush_f).
//
// A request is a coroutine spawned on the event loop; it makes progress whenever the loop runs
// (during later commands, aio_flush, sleep, and at exit). Like qemu-io, a failed or mismatching
// aio request only prints: the command itself succeeded once it was submitted.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "command.h"
#include "format.h"
#include "strata/block_backend.h"
#include "strata/event_loop.h"

namespace strata::tools::io {
namespace {

using Clock = std::chrono::steady_clock;

struct AioRequest {
  IoContext* ctx = nullptr;
  bool write = false;
  bool zero = false;
  bool machine = false;
  bool quiet = false;
  bool verbose = false;
  std::optional<uint8_t> pattern;
  ReqFlags flags = ReqFlags::kNone;
  int64_t offset = 0;
  int64_t size = 0;
  std::optional<IoBuffer> buf;
  IoVec iov;
  Clock::time_point start;
};

void report_read(const AioRequest& req, std::chrono::nanoseconds took) {
  if (req.pattern) {
    const uint8_t* p = req.buf->data();
    if (!std::all_of(p, p + req.size, [&](uint8_t b) { return b == *req.pattern; })) {
      fmt::print("Pattern verification failed at offset {}, {} bytes\n", req.offset, req.size);
    }
  }
  if (req.quiet) return;
  if (req.verbose) fmt::print("{}", hex_dump(req.buf->data(), req.offset, req.size));
  fmt::print("{}", report("read", took, req.offset, req.size, req.size, 1, req.machine));
}

Task<void> run_aio(std::unique_ptr<AioRequest> req) {
  BlockBackend* blk = req->ctx->blk();
  const auto offset = static_cast<uint64_t>(req->offset);
  const auto size = static_cast<uint64_t>(req->size);
  auto task = !req->write ? blk->read(offset, size, req->iov)
              : req->zero ? blk->pwrite_zeroes(offset, size, req->flags)
                          : blk->write(offset, size, req->iov, req->flags);
  auto r = co_await task;
  const std::chrono::nanoseconds took = Clock::now() - req->start;
  if (!r) {
    fmt::print("{} failed: {}\n", req->write ? "aio_write" : "readv",
               std::strerror(r.error().err()));
  } else if (req->write) {
    if (!req->quiet) {
      fmt::print("{}", report("wrote", took, req->offset, req->size, req->size, 1, req->machine));
    }
  } else {
    report_read(*req, took);
  }
  AioTracker& tracker = req->ctx->aio;
  req.reset();
  tracker.end();
}

// Builds the request's buffer from length operands (qemu-io's create_iovec): one allocation cut
// into one iovec element per length.
bool build_iovec(AioRequest& req, std::span<const std::string> lengths, uint8_t fill) {
  std::vector<size_t> sizes;
  int64_t total = 0;
  for (const std::string& arg : lengths) {
    auto len = parse_num(arg);
    if (!len) return false;
    if (*len > kMaxRequestBytes) {
      fmt::print("Argument '{}' exceeds maximum size {}\n", arg, kMaxRequestBytes);
      return false;
    }
    if (total > kMaxRequestBytes - *len) {
      fmt::print("The total number of bytes exceed the maximum size {}\n", kMaxRequestBytes);
      return false;
    }
    sizes.push_back(static_cast<size_t>(*len));
    total += *len;
  }
  req.buf.emplace(static_cast<size_t>(total), fill, req.ctx->misalign);
  uint8_t* p = req.buf->data();
  for (size_t s : sizes) {
    req.iov.push_back(p, s);
    p += s;
  }
  req.size = total;
  return true;
}

void submit(IoContext& ctx, std::unique_ptr<AioRequest> req) {
  req->start = Clock::now();
  ctx.aio.begin();
  spawn(run_aio(std::move(req)));
}

// ---- aio_read ----

int aio_read_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kAioRead{
    .name = "aio_read",
    .run = aio_read_command,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Cqv] [-P pattern] off len [len..]",
    .oneline = "asynchronously reads a number of bytes",
};

int aio_read_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "CP:qv");
  auto req = std::make_unique<AioRequest>();
  req->ctx = &ctx;
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kAioRead, args, *step.error);
    switch (step.option.id) {
      case 'C':
        req->machine = true;
        break;
      case 'q':
        req->quiet = true;
        break;
      case 'v':
        req->verbose = true;
        break;
      case 'P':
        if (!(req->pattern = parse_pattern(step.option.arg))) return -EINVAL;
        break;
    }
  }
  if (args.operands.size() < 2) return usage(kAioRead);
  auto offset = parse_num(args.operands[0]);
  if (!offset) return -EINVAL;
  req->offset = *offset;
  if (!build_iovec(*req, std::span(args.operands).subspan(1), 0xab)) return -EINVAL;
  submit(ctx, std::move(req));
  return 0;
}

// ---- aio_write ----

int aio_write_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kAioWrite{
    .name = "aio_write",
    .run = aio_write_command,
    .argmin = 2,
    .argmax = -1,
    .perm = Perm::kWrite,
    .args = "[-Cfquz] [-P pattern] off len [len..]",
    .oneline = "asynchronously writes a number of bytes",
};

// aio_write's option checks, in qemu-io's order; returns a negative errno after printing.
int check_aio_write(const ScannedArgs& args, AioRequest& req) {
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kAioWrite, args, *step.error);
    switch (step.option.id) {
      case 'C':
        req.machine = true;
        break;
      case 'f':
        req.flags = req.flags | ReqFlags::kFua;
        break;
      case 'q':
        req.quiet = true;
        break;
      case 'u':
        req.flags = req.flags | ReqFlags::kMayUnmap;
        break;
      case 'z':
        req.zero = true;
        break;
      case 'P':
        if (!(req.pattern = parse_pattern(step.option.arg))) return -EINVAL;
        break;
    }
  }
  if (args.operands.size() < 2) return usage(kAioWrite);
  if (req.zero && args.operands.size() != 2) {
    fmt::print("-z supports only a single length parameter\n");
    return -EINVAL;
  }
  if (has_flag(req.flags, ReqFlags::kMayUnmap) && !req.zero) {
    fmt::print("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (req.zero && req.pattern) {
    fmt::print("-z and -P cannot be specified at the same time\n");
    return -EINVAL;
  }
  return 0;
}

int aio_write_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "CfP:quz");
  auto req = std::make_unique<AioRequest>();
  req->ctx = &ctx;
  req->write = true;
  if (int r = check_aio_write(args, *req); r < 0) return r;
  auto offset = parse_num(args.operands[0]);
  if (!offset) return -EINVAL;
  req->offset = *offset;
  if (ctx.image.writethrough) req->flags = req->flags | ReqFlags::kFua;
  if (req->zero) {
    auto count = parse_num(args.operands[1]);
    if (!count) return -EINVAL;
    req->size = *count;
  } else if (!build_iovec(*req, std::span(args.operands).subspan(1), req->pattern.value_or(0xcd))) {
    return -EINVAL;
  }
  submit(ctx, std::move(req));
  return 0;
}

// ---- aio_flush ----

int aio_flush_command(IoContext& ctx, std::span<const std::string>) {
  drain_aio(ctx);
  return 0;
}

constexpr Command kAioFlush{
    .name = "aio_flush",
    .run = aio_flush_command,
    .argmin = 0,
    .argmax = 0,
    .oneline = "completes all outstanding aio requests",
};

constexpr Command kAioCommands[] = {kAioRead, kAioWrite, kAioFlush};

}  // namespace

std::span<const Command> aio_commands() { return kAioCommands; }

}  // namespace strata::tools::io
