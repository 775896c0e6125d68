// The commands about the open image rather than single requests: open, close, quit, length,
// truncate, map, flush, sleep, and reopen (QEMU's bdrv_reopen with keep_old_opts, on the image's
// root node).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "command.h"
#include "format.h"
#include "strata/block_backend.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::tools::io {
namespace {

// ---- open, close, quit ----

int open_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kOpen{
    .name = "open",
    .altname = "o",
    .run = open_command,
    .argmin = 1,
    .argmax = -1,
    .no_file_ok = true,
    .args = "[-rnkU] [-t cache] [-i aio] [-d discard] [-o options] [path]",
    .oneline = "open the file specified by path",
    .help =
        "\n"
        " opens a new file in the requested mode\n"
        "\n"
        " Example:\n"
        " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n"
        "\n"
        " Opens a file for subsequent use by all of the other strata-io commands.\n"
        " Without a driver option the image is opened as raw: Strata never probes.\n"
        " -r, -- open file read-only\n"
        " -n, -- disable host cache, short for -t none\n"
        " -U, -- force shared permissions\n"
        " -k, -- use io_uring (QEMU's native AIO), short for -i native\n"
        " -i, -- use AIO mode (threads, native or io_uring)\n"
        " -t, -- use the given cache mode for the image\n"
        " -d, -- use the given discard mode for the image\n"
        " -o, -- options to be given to the block driver\n"
        "\n",
};

// Applies one of open's options to `spec`; returns a negative errno after printing.
int apply_open_option(IoContext& ctx, const ParsedOption& opt, ImageSpec& spec) {
  switch (opt.id) {
    case 'r':
      spec.read_only = true;
      break;
    case 'n':
      spec.cache = CacheMode{.direct = true};
      break;
    case 'U':
      spec.force_share = true;
      break;
    case 'k':
      spec.aio = "native";
      break;
    case 't':
      if (auto mode = parse_cache_mode(opt.arg)) {
        spec.cache = *mode;
        break;
      }
      report_error(ctx.prog, fmt::format("Invalid cache option: {}", opt.arg));
      return -EINVAL;
    case 'i':
      if (auto aio = parse_aio_mode(opt.arg)) {
        spec.aio = *aio;
        break;
      }
      report_error(ctx.prog, fmt::format("Invalid aio option: {}", opt.arg));
      return -EINVAL;
    case 'd':
      if (auto discard = parse_discard_mode(opt.arg)) {
        spec.discard = *discard;
        break;
      }
      report_error(ctx.prog, fmt::format("Invalid discard option: {}", opt.arg));
      return -EINVAL;
    case 'o': {
      if (ctx.image_opts) {
        fmt::print("--image-opts and 'open -o' are mutually exclusive\n");
        return -EINVAL;
      }
      auto parsed = parse_keyval(opt.arg);
      if (!parsed) {
        report_error(ctx.prog, parsed.error().message());
        return -EINVAL;
      }
      spec.extra.update(*parsed, /*merge_objects=*/true);
      break;
    }
  }
  return 0;
}

int open_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "rnkUt:i:d:o:");
  // Like qemu-io's open, the defaults are writethrough with discard=unmap, whatever the command
  // line said for the first image.
  ImageSpec spec;
  spec.cache = CacheMode{.writethrough = true};
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kOpen, args, *step.error);
    if (int r = apply_open_option(ctx, step.option, spec); r < 0) return r;
  }
  if (args.operands.size() > 1) return usage(kOpen);
  spec.image_opts = ctx.image_opts || args.operands.empty();
  spec.filename = args.operands.empty() ? std::string() : args.operands[0];
  std::optional<std::string> shown;
  if (!spec.image_opts) shown = spec.filename;
  return open_file(ctx, spec, shown) == 0 ? 0 : -EINVAL;
}

int close_command(IoContext& ctx, std::span<const std::string>) {
  drain_aio(ctx);
  close_image(*ctx.loop, *ctx.engine, ctx.image);
  return 0;
}

constexpr Command kClose{
    .name = "close",
    .altname = "c",
    .run = close_command,
    .argmin = 0,
    .argmax = 0,
    .oneline = "close the current open file",
};

int quit_command(IoContext& ctx, std::span<const std::string>) {
  ctx.quit = true;
  return 0;
}

constexpr Command kQuit{
    .name = "quit",
    .altname = "q",
    .run = quit_command,
    .argmin = -1,
    .argmax = -1,
    .global = true,
    .oneline = "exit the program",
};

// ---- length, truncate, flush ----

int length_command(IoContext& ctx, std::span<const std::string>) {
  fmt::print("{}\n", human_size(static_cast<double>(ctx.blk()->size())));
  return 0;
}

constexpr Command kLength{
    .name = "length",
    .altname = "l",
    .run = length_command,
    .argmin = 0,
    .argmax = 0,
    .oneline = "gets the length of the current file",
};

int truncate_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kTruncate{
    .name = "truncate",
    .altname = "t",
    .run = truncate_command,
    .argmin = 1,
    .argmax = 3,
    .perm = Perm::kWrite | Perm::kResize,
    .args = "[-m prealloc_mode] off",
    .oneline = "truncates the current file at the given offset",
};

constexpr std::array<std::pair<std::string_view, PreallocMode>, 4> kPreallocModes{{
    {"off", PreallocMode::kOff},
    {"metadata", PreallocMode::kMetadata},
    {"falloc", PreallocMode::kFalloc},
    {"full", PreallocMode::kFull},
}};

int truncate_command(IoContext& ctx, std::span<const std::string> argv) {
  const ScannedArgs args = scan_args(argv, "m:");
  PreallocMode prealloc = PreallocMode::kOff;
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kTruncate, args, *step.error);
    const auto* mode = std::find_if(kPreallocModes.begin(), kPreallocModes.end(),
                                    [&](const auto& m) { return m.first == step.option.arg; });
    if (mode == kPreallocModes.end()) {
      report_error(ctx.prog, fmt::format("Invalid preallocation mode '{}'", step.option.arg));
      return -EINVAL;
    }
    prealloc = mode->second;
  }
  // qemu-io takes the first operand and ignores the rest.
  if (args.operands.empty()) return usage(kTruncate);
  auto size = parse_num(args.operands[0]);
  if (!size) return -EINVAL;
  // qemu-io is a debugging tool and does not ask for an exact size either.
  auto r = run_sync(*ctx.loop,
                    ctx.blk()->truncate(static_cast<uint64_t>(*size), /*exact=*/false, prealloc));
  if (!r) {
    report_error(ctx.prog, r.error().message());
    return -r.error().err();
  }
  return 0;
}

int flush_command(IoContext& ctx, std::span<const std::string>) {
  // qemu-io's flush prints nothing, even on failure; the exit status tells.
  auto r = run_sync(*ctx.loop, ctx.blk()->flush());
  return r ? 0 : -r.error().err();
}

constexpr Command kFlush{
    .name = "flush",
    .altname = "f",
    .run = flush_command,
    .argmin = 0,
    .argmax = 0,
    .oneline = "flush all in-core file state to disk",
};

// ---- map ----

struct MapRun {
  bool allocated;
  uint64_t bytes;
};

// The longest run from `offset` whose extents agree on allocation (qemu-io's map_is_allocated).
Task<Result<MapRun>> next_run(BlockBackend* blk, uint64_t offset, uint64_t bytes) {
  auto first_task = blk->block_status(offset, bytes);
  auto first = co_await first_task;
  if (!first) co_return first.error();
  MapRun run{has_flag(first->flags, BlockStatusFlags::kAllocated), first->bytes};
  while (run.bytes < bytes) {
    auto task = blk->block_status(offset + run.bytes, bytes - run.bytes);
    auto st = co_await task;
    if (!st || st->bytes == 0 ||
        has_flag(st->flags, BlockStatusFlags::kAllocated) != run.allocated) {
      break;
    }
    run.bytes += st->bytes;
  }
  co_return run;
}

int map_command(IoContext& ctx, std::span<const std::string>) {
  uint64_t offset = 0;
  uint64_t bytes = ctx.blk()->size();
  while (bytes > 0) {
    auto run = run_sync(*ctx.loop, next_run(ctx.blk(), offset, bytes));
    if (!run) {
      report_error(ctx.prog, fmt::format("Failed to get allocation status: {}",
                                         std::strerror(run.error().err())));
      return -run.error().err();
    }
    if (run->bytes == 0) {
      report_error(ctx.prog, "Unexpected end of image");
      return -EIO;
    }
    fmt::print("{} ({:#x}) bytes {} at offset {} ({:#x})\n",
               human_size(static_cast<double>(run->bytes)), run->bytes,
               run->allocated ? "    allocated" : "not allocated",
               human_size(static_cast<double>(offset)), offset);
    offset += run->bytes;
    bytes -= run->bytes;
  }
  return 0;
}

constexpr Command kMap{
    .name = "map",
    .run = map_command,
    .argmin = 0,
    .argmax = 0,
    .oneline = "prints the allocated areas of a file",
};

// ---- sleep ----

int sleep_command(IoContext& ctx, std::span<const std::string> argv) {
  char* end = nullptr;
  const long ms = std::strtol(argv[1].c_str(), &end, 0);
  if (ms < 0 || *end != '\0') {
    fmt::print("{} is not a valid number\n", argv[1]);
    return -EINVAL;
  }
  run_sync(*ctx.loop, ctx.loop->sleep_ms(static_cast<uint64_t>(ms)));
  return 0;
}

constexpr Command kSleep{
    .name = "sleep",
    .run = sleep_command,
    .argmin = 1,
    .argmax = 1,
    .no_file_ok = true,
    .oneline = "waits for the given value in milliseconds",
};

// ---- reopen ----

int reopen_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kReopen{
    .name = "reopen",
    .run = reopen_command,
    .argmin = 0,
    .argmax = -1,
    .args = "[(-r|-w)] [-c cache] [-o options]",
    .oneline = "reopens an image with new options",
    .help =
        "\n"
        " Changes the open options of an already opened image\n"
        "\n"
        " Example:\n"
        " 'reopen -o cache.direct=on' - bypasses the host page cache from now on\n"
        "\n"
        " -r, -- Reopen the image read-only\n"
        " -w, -- Reopen the image read-write\n"
        " -c, -- Change the cache mode to the given value\n"
        " -o, -- Changes block driver options (cf. 'open' command)\n"
        "\n",
};

// What reopen's flags asked for, before they are turned into node options.
struct ReopenRequest {
  std::optional<bool> read_only;                      // -r / -w
  std::optional<CacheMode> cache;                     // -c
  nlohmann::json options = nlohmann::json::object();  // every -o, merged, later keys winning
};

// Puts `value` at the dotted `key` ("file.node-name") in `options`, nesting objects; a later key
// wins over an earlier one, as QemuOpts' merged lists do.
void set_dotted(nlohmann::json& options, std::string_view key, std::string value) {
  nlohmann::json* obj = &options;
  for (size_t dot = key.find('.'); dot != std::string_view::npos; dot = key.find('.')) {
    nlohmann::json& next = (*obj)[std::string(key.substr(0, dot))];
    if (!next.is_object()) next = nlohmann::json::object();
    obj = &next;
    key.remove_prefix(dot + 1);
  }
  (*obj)[std::string(key)] = std::move(value);
}

// Merges reopen's -o text into `options`. qemu-io reads it as QemuOpts text, not keyval: a
// value runs to the next single comma (",," is a comma), and a bare name is a deprecated
// short-form boolean ("foo" is foo=on, "nofoo" foo=off) that draws a warning. It cannot fail.
// (One difference stays: QemuOpts keeps keys flat, so "a.b=1,a=2" names 'a.b' in QEMU's
// complaint and 'a' in Strata's.)
void merge_qemu_opts(std::string_view prog, std::string_view text, nlohmann::json& options) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t name_end = std::min(text.find_first_of("=,", pos), text.size());
    std::string name(text.substr(pos, name_end - pos));
    std::string value;
    pos = name_end;
    if (pos < text.size() && text[pos] == '=') {
      for (++pos; pos < text.size(); ++pos) {
        if (text[pos] == ',' && (pos + 1 >= text.size() || text[pos + 1] != ',')) break;
        if (text[pos] == ',') ++pos;  // ",," stands for one comma
        value += text[pos];
      }
    } else {
      const std::string shown = name;
      value = "on";
      if (name.starts_with("no")) {
        name.erase(0, 2);
        value = "off";
      }
      // QemuOpts says nothing for the names that ask for help.
      if (shown != "help" && shown != "?") {
        report_error(prog,
                     fmt::format("warning: short-form boolean option '{}' deprecated", shown));
        fmt::print(stderr, "Please use {}={} instead\n", name, value);
      }
    }
    if (pos < text.size()) ++pos;  // the comma
    set_dotted(options, name, std::move(value));
  }
}

// Reads reopen's arguments with qemu-io's getopt loop; prints and returns a negative errno on the
// first problem.
int parse_reopen_args(IoContext& ctx, std::span<const std::string> argv, ReopenRequest& req) {
  const ScannedArgs args = scan_args(argv, "c:o:rw");
  for (const auto& step : args.steps) {
    if (step.error) return option_error(kReopen, args, *step.error);
    const std::string& arg = step.option.arg;
    switch (step.option.id) {
      case 'c':
        req.cache = parse_cache_mode(arg);
        if (!req.cache) {
          report_error(ctx.prog, fmt::format("Invalid cache option: {}", arg));
          return -EINVAL;
        }
        break;
      case 'o':
        merge_qemu_opts(ctx.prog, arg, req.options);
        break;
      case 'r':
      case 'w':
        if (req.read_only) {
          report_error(ctx.prog, "Only one -r/-w option may be given");
          return -EINVAL;
        }
        req.read_only = step.option.id == 'r';
        break;
    }
  }
  if (!args.operands.empty()) return usage(kReopen);
  return 0;
}

bool has_cache_option(const nlohmann::json& options) {
  auto cache = options.find("cache");
  return cache != options.end() && cache->is_object() &&
         (cache->contains("direct") || cache->contains("no-flush"));
}

// The reopen entry for the image's root node: the -o options, plus read-only and the cache
// options from the flags (or the node's current values), which qemu-io always states, so they
// become explicit options of the node. Fails for the flag/option clashes qemu-io refuses.
Result<nlohmann::json> reopen_entry(const Node& node, const ReopenRequest& req) {
  nlohmann::json entry = req.options;
  auto on_off = [](bool b) { return b ? "on" : "off"; };
  if (entry.contains("read-only")) {
    if (req.read_only) return fail(EINVAL, "Cannot set both -r/-w and 'read-only'");
  } else {
    entry["read-only"] = on_off(req.read_only.value_or(node.is_read_only()));
  }
  if (has_cache_option(entry)) {
    if (req.cache) return fail(EINVAL, "Cannot set both -c and the cache options");
  } else if (!entry.contains("cache")) {
    const NodeOptions& now = node.options();
    entry["cache"] = {{"direct", on_off(req.cache ? req.cache->direct : now.cache_direct)},
                      {"no-flush", on_off(req.cache ? req.cache->no_flush : now.cache_no_flush)}};
  }
  // QemuOpts hands discard to the generic reopen code as text, which has its own complaint (the
  // engine's is the enum's, as blockdev-reopen gives it).
  if (auto discard = entry.find("discard"); discard != entry.end() && discard->is_string()) {
    const std::string& mode = discard->get_ref<const std::string&>();
    if (!parse_discard_mode(mode)) return fail(EINVAL, "Invalid discard option");
  }
  // The engine finds the node by name, so a different name would reopen another node: refuse
  // it here with the engine's text.
  if (auto name = entry.find("node-name"); name != entry.end()) {
    if (!name->is_string() || name->get_ref<const std::string&>() != node.name()) {
      return fail(EINVAL, "Cannot change the option 'node-name'");
    }
  }
  entry["node-name"] = node.name();
  return entry;
}

// qemu-io's reopen: one keep-old-options reopen of the image's root node. Like qemu-io, a reopen
// that leaves the node read-only first gives up this tool's WRITE (its BlockBackend would
// otherwise keep the node from becoming read-only), and does not take it back if the reopen
// then fails; the next command that writes takes it again (run_command_line), so nothing here
// takes WRITE after -w either.
int reopen_command(IoContext& ctx, std::span<const std::string> argv) {
  ReopenRequest req;
  if (int r = parse_reopen_args(ctx, argv, req); r < 0) return r;
  Node& node = *ctx.image.node;
  const bool ends_read_only = req.read_only.value_or(node.is_read_only());
  if (ends_read_only && has_any(ctx.blk()->perm(), Perm::kWrite | Perm::kWriteUnchanged)) {
    drain_aio(ctx);
    const Perm loosened = ctx.blk()->perm() & ~(Perm::kWrite | Perm::kWriteUnchanged);
    // Giving up a permission cannot conflict with anyone.
    auto dropped = ctx.blk()->set_perm(loosened, ctx.blk()->shared());
    if (!dropped) {
      report_error(ctx.prog, dropped.error().message());
      return -dropped.error().err();
    }
  }
  auto entry = reopen_entry(node, req);
  if (!entry) {
    report_error(ctx.prog, entry.error().message());
    return -EINVAL;
  }
  std::vector<nlohmann::json> entries{std::move(*entry)};
  auto reopened =
      run_sync(*ctx.loop, ctx.engine->reopen(std::move(entries), OptionSyntax::kKeyval, true));
  if (!reopened) {
    report_error(ctx.prog, reopened.error().message(), reopened.error().hint());
    return -EINVAL;
  }
  if (req.cache) ctx.image.writethrough = req.cache->writethrough;
  return 0;
}

constexpr Command kImageCommands[] = {kOpen,  kClose, kQuit,  kLength, kTruncate,
                                      kFlush, kMap,   kSleep, kReopen};

}  // namespace

std::span<const Command> image_commands() { return kImageCommands; }

int open_file(IoContext& ctx, const ImageSpec& spec, const std::optional<std::string>& shown_name) {
  if (ctx.blk() != nullptr) {
    report_error(ctx.prog, "file open already, try 'help close'");
    return -EBUSY;
  }
  // Option problems are reported as they are, without "can't open".
  if (auto valid = check_image_spec(spec); !valid) {
    report_error(ctx.prog, valid.error().message());
    return -valid.error().err();
  }
  Perm perm = Perm::kConsistentRead;
  if (!spec.read_only) perm |= Perm::kWrite;
  // qemu-io shares everything; a command that needs more (truncate: resize) asks for it then.
  auto image = open_image(*ctx.loop, *ctx.engine, spec, perm, Perm::kAll);
  if (!image) {
    report_error(
        ctx.prog,
        !shown_name ? fmt::format("can't open: {}", image.error().message())
                    : fmt::format("can't open device {}: {}", *shown_name, image.error().message()),
        image.error().hint());
    return -image.error().err();
  }
  ctx.image = std::move(*image);
  return 0;
}

}  // namespace strata::tools::io
