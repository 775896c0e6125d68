// read, write and discard: one synchronous request each, reported as qemu-io reports it.
//
// Texts and their order follow qemu-io 7.2's read_f, write_f and discard_f: option problems and
// "read failed: <strerror>" go to stdout, a pattern mismatch is reported before the request's
// report lines and makes the command fail, -q silences the report (and the -v dump).
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "command.h"
#include "format.h"
#include "strata/block_backend.h"
#include "strata/event_loop.h"

namespace strata::tools::io {
namespace {

using Clock = std::chrono::steady_clock;

// Runs one request on the loop and measures it.
Result<void> timed(EventLoop& loop, Task<Result<void>> request, std::chrono::nanoseconds& took) {
  const auto start = Clock::now();
  auto r = run_sync(loop, std::move(request));
  took = Clock::now() - start;
  return r;
}

// offset and length operands; prints the parsing message and returns nullopt on failure.
struct Range {
  int64_t offset;
  int64_t count;
};
std::optional<Range> parse_range(std::span<const std::string> operands) {
  auto offset = parse_num(operands[0]);
  if (!offset) return std::nullopt;
  auto count = parse_num(operands[1]);
  if (!count) return std::nullopt;
  return Range{*offset, *count};
}

bool too_long(int64_t count, std::string_view given, std::string_view what) {
  if (count <= kMaxRequestBytes) return false;
  fmt::print("length cannot exceed {}{}, given {}\n", kMaxRequestBytes, what, given);
  return true;
}

// ---- read ----

int read_command(IoContext& ctx, std::span<const std::string> argv);

constexpr std::string_view kReadHelp =
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n";

constexpr Command kRead{
    .name = "read",
    .altname = "r",
    .run = read_command,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Cqv] [-P pattern [-s off] [-l len]] off len",
    .oneline = "reads a number of bytes at a specified offset",
    .help = kReadHelp,
};

struct ReadFlags {
  bool machine = false;
  bool quiet = false;
  bool verbose = false;
  std::optional<uint8_t> pattern;
  std::optional<int64_t> pattern_offset;  // -s
  std::optional<int64_t> pattern_count;   // -l
};

// Scans read's options; returns a negative errno after printing the problem.
int parse_read_flags(const ScannedArgs& args, ReadFlags& f) {
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kRead, args, *step.error);
    const std::string& arg = step.option.arg;
    switch (step.option.id) {
      case 'C':
        f.machine = true;
        break;
      case 'p':
        break;  // ignored, as in qemu-io
      case 'q':
        f.quiet = true;
        break;
      case 'v':
        f.verbose = true;
        break;
      case 'P':
        if (!(f.pattern = parse_pattern(arg))) return -EINVAL;
        break;
      case 'l':
        if (!(f.pattern_count = parse_num(arg))) return -EINVAL;
        break;
      case 's':
        if (!(f.pattern_offset = parse_num(arg))) return -EINVAL;
        break;
    }
  }
  if (args.operands.size() != 2) return usage(kRead);
  return 0;
}

// Compares the read data with the pattern; prints the mismatch line.
bool pattern_matches(const IoBuffer& buf, uint8_t pattern, int64_t offset, int64_t skip,
                     int64_t len) {
  const uint8_t* p = buf.data() + skip;
  if (std::all_of(p, p + len, [&](uint8_t b) { return b == pattern; })) return true;
  fmt::print("Pattern verification failed at offset {}, {} bytes\n", offset + skip, len);
  return false;
}

int read_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "Cl:pP:qs:v");
  ReadFlags f;
  if (int r = parse_read_flags(args, f); r < 0) return r;
  auto range = parse_range(args.operands);
  if (!range) return -EINVAL;
  if (too_long(range->count, args.operands[1], "")) return -EINVAL;
  if (!f.pattern && (f.pattern_count || f.pattern_offset)) return usage(kRead);
  const int64_t skip = f.pattern_offset.value_or(0);
  const int64_t check_len = f.pattern_count.value_or(range->count - skip);
  if (check_len < 0 || skip > range->count || check_len > range->count - skip) {
    fmt::print("pattern verification range exceeds end of read data\n");
    return -EINVAL;
  }

  IoBuffer buf(static_cast<size_t>(range->count), 0xab, ctx.misalign);
  std::chrono::nanoseconds took{};
  auto request =
      ctx.blk()->read(static_cast<uint64_t>(range->offset), static_cast<uint64_t>(range->count),
                      IoVec(buf.data(), buf.size()));
  auto r = timed(*ctx.loop, std::move(request), took);
  if (!r) {
    fmt::print("read failed: {}\n", std::strerror(r.error().err()));
    return -r.error().err();
  }
  int ret = 0;
  if (f.pattern && !pattern_matches(buf, *f.pattern, range->offset, skip, check_len)) {
    ret = -EINVAL;
  }
  if (f.quiet) return ret;
  if (f.verbose) fmt::print("{}", hex_dump(buf.data(), range->offset, range->count));
  fmt::print("{}", report("read", took, range->offset, range->count, range->count, 1, f.machine));
  return ret;
}

// ---- write ----

int write_command(IoContext& ctx, std::span<const std::string> argv);

constexpr std::string_view kWriteHelp =
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -c, -- write compressed data with blk_write_compressed\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes using pwrite_zeroes\n"
    "\n";

constexpr Command kWrite{
    .name = "write",
    .altname = "w",
    .run = write_command,
    .argmin = 2,
    .argmax = -1,
    .perm = Perm::kWrite,
    .args = "[-cCfnquz] [-P pattern] off len",
    .oneline = "writes a number of bytes at a specified offset",
    .help = kWriteHelp,
};

struct WriteFlags {
  bool machine = false;
  bool quiet = false;
  bool zero = false;
  bool compressed = false;
  std::optional<uint8_t> pattern;
  ReqFlags req = ReqFlags::kNone;
};

int parse_write_flags(const ScannedArgs& args, WriteFlags& f) {
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kWrite, args, *step.error);
    switch (step.option.id) {
      case 'c':
        f.compressed = true;
        break;
      case 'C':
        f.machine = true;
        break;
      case 'f':
        f.req = f.req | ReqFlags::kFua;
        break;
      case 'n':
        f.req = f.req | ReqFlags::kNoFallback;
        break;
      case 'p':
        break;
      case 'q':
        f.quiet = true;
        break;
      case 'u':
        f.req = f.req | ReqFlags::kMayUnmap;
        break;
      case 'z':
        f.zero = true;
        break;
      case 'P':
        if (!(f.pattern = parse_pattern(step.option.arg))) return -EINVAL;
        break;
    }
  }
  if (args.operands.size() != 2) return usage(kWrite);
  if (f.compressed && has_flag(f.req, ReqFlags::kFua)) {
    fmt::print("-f and -b or -c cannot be specified at the same time\n");
    return -EINVAL;
  }
  // As qemu-io: with -z the write is a zero write and -c has no effect.
  if (f.compressed && !f.zero) f.req = f.req | ReqFlags::kCompressed;
  if (has_flag(f.req, ReqFlags::kNoFallback) && !f.zero) {
    fmt::print("-n requires -z to be specified\n");
    return -EINVAL;
  }
  if (has_flag(f.req, ReqFlags::kMayUnmap) && !f.zero) {
    fmt::print("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (f.zero && f.pattern) {
    fmt::print("Only one of -z, -P, and -s can be specified at the same time\n");
    return -EINVAL;
  }
  return 0;
}

int write_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "cCfnpP:quz");
  WriteFlags f;
  if (int r = parse_write_flags(args, f); r < 0) return r;
  auto range = parse_range(args.operands);
  if (!range) return -EINVAL;
  if (!has_flag(f.req, ReqFlags::kNoFallback) &&
      too_long(range->count, args.operands[1], " without -n")) {
    return -EINVAL;
  }
  // Writethrough cache modes make every write durable on completion.
  if (ctx.image.writethrough) f.req = f.req | ReqFlags::kFua;

  const auto offset = static_cast<uint64_t>(range->offset);
  const auto count = static_cast<uint64_t>(range->count);
  std::optional<IoBuffer> buf;
  if (!f.zero) buf.emplace(static_cast<size_t>(count), f.pattern.value_or(0xcd), ctx.misalign);
  auto request = f.zero ? ctx.blk()->pwrite_zeroes(offset, count, f.req)
                        : ctx.blk()->write(offset, count, IoVec(buf->data(), buf->size()), f.req);
  std::chrono::nanoseconds took{};
  auto r = timed(*ctx.loop, std::move(request), took);
  if (!r) {
    fmt::print("write failed: {}\n", std::strerror(r.error().err()));
    return -r.error().err();
  }
  if (f.quiet) return 0;
  fmt::print("{}", report("wrote", took, range->offset, range->count, range->count, 1, f.machine));
  return 0;
}

// ---- discard ----

int discard_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kDiscard{
    .name = "discard",
    .altname = "d",
    .run = discard_command,
    .argmin = 2,
    .argmax = -1,
    .perm = Perm::kWrite,
    .args = "[-Cq] off len",
    .oneline = "discards a number of bytes at a specified offset",
    .help =
        "\n"
        " discards a range of bytes from the given offset\n"
        "\n"
        " Example:\n"
        " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
        "\n"
        " Discards a segment of the currently open file.\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        "\n",
};

int discard_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "Cq");
  bool machine = false;
  bool quiet = false;
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kDiscard, args, *step.error);
    if (step.option.id == 'C') machine = true;
    if (step.option.id == 'q') quiet = true;
  }
  if (args.operands.size() != 2) return usage(kDiscard);
  auto range = parse_range(args.operands);
  if (!range) return -EINVAL;
  if (too_long(range->count, args.operands[1], "")) return -EINVAL;

  auto request =
      ctx.blk()->discard(static_cast<uint64_t>(range->offset), static_cast<uint64_t>(range->count));
  std::chrono::nanoseconds took{};
  auto r = timed(*ctx.loop, std::move(request), took);
  if (!r) {
    fmt::print("discard failed: {}\n", std::strerror(r.error().err()));
    return -r.error().err();
  }
  if (!quiet) {
    fmt::print("{}",
               report("discard", took, range->offset, range->count, range->count, 1, machine));
  }
  return 0;
}

constexpr Command kRwCommands[] = {kRead, kWrite, kDiscard};

}  // namespace

std::span<const Command> rw_commands() { return kRwCommands; }

}  // namespace strata::tools::io
