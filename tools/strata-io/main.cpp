// strata-io: the test and debugging tool, command-line compatible with qemu-io for its command
// subset, so that behaviour can be compared line by line with the real qemu-io.
//
//   strata-io [-f FMT] [-r] [-U] [-t CACHE] [-i AIO] [--image-opts] -c CMD ... FILE
//
// Exit status, as qemu-io 7.2: 1 when the image cannot be opened or the command line is wrong,
// 1 when any command failed, else 0.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "command.h"
#include "getopt.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"

namespace strata::tools::io {
namespace {

enum LongOnly { kObject = 256, kImageOpts };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},        {"version", false, 'V'},
    {"cmd", true, 'c'},          {"format", true, 'f'},
    {"read-only", false, 'r'},   {"snapshot", false, 's'},
    {"nocache", false, 'n'},     {"copy-on-read", false, 'C'},
    {"misalign", false, 'm'},    {"native-aio", false, 'k'},
    {"aio", true, 'i'},          {"discard", true, 'd'},
    {"cache", true, 't'},        {"trace", true, 'T'},
    {"object", true, kObject},   {"image-opts", false, kImageOpts},
    {"force-share", false, 'U'},
};

void usage(std::string_view prog) {
  fmt::print(
      "Usage: {0} [OPTIONS]... [-c STRING]... [file]\n"
      "Strata disk exerciser, compatible with qemu-io\n"
      "\n"
      "  --image-opts         treat file as option string\n"
      "  -c, --cmd STRING     execute command with its arguments\n"
      "                       from the given string\n"
      "  -f, --format FMT     specifies the block driver to use (default: raw;\n"
      "                       Strata never probes the format)\n"
      "  -r, --read-only      export read-only\n"
      "  -n, --nocache        disable host cache, short for -t none\n"
      "  -m, --misalign       misalign allocations for O_DIRECT\n"
      "  -k, --native-aio     use io_uring (QEMU's native AIO), short for -i native\n"
      "  -i, --aio=MODE       use AIO mode (threads, native or io_uring)\n"
      "  -t, --cache=MODE     use the given cache mode for the image\n"
      "                       (none, writeback, unsafe, directsync, writethrough)\n"
      "  -d, --discard=MODE   use the given discard mode for the image\n"
      "  -U, --force-share    force shared permissions\n"
      "  -h, --help           display this help and exit\n"
      "  -V, --version        output version information and exit\n"
      "\n"
      "See '{0} -c help' for information on available commands.\n",
      prog);
}

// What the command line asked for.
struct Options {
  ImageSpec spec;
  bool has_file = false;  // a file operand was given (even an empty one)
  std::vector<std::string> commands;
  bool misalign = false;
};

// Applies one option; returns false (after printing) when strata-io must exit with status 1.
bool apply_option(std::string_view prog, const ParsedOption& opt, Options& o) {
  const std::string& arg = opt.arg;
  auto invalid = [&](std::string_view what) {
    report_error(prog, fmt::format("Invalid {} option: {}", what, arg));
    return false;
  };
  switch (opt.id) {
    case 'c':
      o.commands.push_back(arg);
      break;
    case 'f':
      o.spec.format = arg;
      break;
    case 'r':
      o.spec.read_only = true;
      break;
    case 'n':
      o.spec.cache = CacheMode{.direct = true};
      break;
    case 'm':
      o.misalign = true;
      break;
    case 'k':
      o.spec.aio = "native";
      break;
    case 'U':
      o.spec.force_share = true;
      break;
    case kImageOpts:
      o.spec.image_opts = true;
      break;
    case 'i':
      if (auto aio = parse_aio_mode(arg)) {
        o.spec.aio = *aio;
        break;
      }
      return invalid("aio");
    case 'd':
      if (auto discard = parse_discard_mode(arg)) {
        o.spec.discard = *discard;
        break;
      }
      return invalid("discard");
    case 't':
      if (auto mode = parse_cache_mode(arg)) {
        o.spec.cache = *mode;
        break;
      }
      return invalid("cache");
    default:
      // -s, -C, -T, --object: QEMU features Strata does not have.
      report_error(prog, fmt::format("option '{}' is not supported", opt.element));
      return false;
  }
  return true;
}

// Parses the command line; exits for --help, --version and errors.
Options parse_command_line(std::string_view prog, std::span<const std::string> args) {
  Options o;
  // qemu-io's default cache mode is writethrough (unlike qemu-img's writeback).
  o.spec.cache = CacheMode{.writethrough = true};
  OptionParser parser(args, "hVc:d:f:rsnCmki:t:T:U", kLongOptions);
  for (auto step = parser.next(); step.status != OptionParser::Status::kEnd; step = parser.next()) {
    if (step.error) {
      fmt::print(stderr, "{}\n", getopt_message(prog, *step.error));
      usage(prog);
      std::exit(1);
    }
    if (step.option.id == 'h') {
      usage(prog);
      std::exit(0);
    }
    if (step.option.id == 'V') {
      fmt::print("{} version {}\n", prog, STRATA_VERSION);
      std::exit(0);
    }
    if (!apply_option(prog, step.option, o)) std::exit(1);
  }
  if (parser.operands().size() > 1) {
    usage(prog);
    std::exit(1);
  }
  if (!o.spec.format.empty() && o.spec.image_opts) {
    report_error(prog, "--image-opts and -f are mutually exclusive");
    std::exit(1);
  }
  if (!parser.operands().empty()) {
    o.has_file = true;
    o.spec.filename = parser.operands()[0];
  }
  return o;
}

// Runs the -c commands in order, or reads commands from stdin after a prompt. Returns the last
// failure (negative errno) or 0.
int command_loop(IoContext& ctx, const std::vector<std::string>& commands) {
  int last_error = 0;
  auto run = [&](std::string_view line) {
    const int r = run_command_line(ctx, line);
    if (r < 0) last_error = r;
  };
  if (!commands.empty()) {
    for (const std::string& c : commands) {
      if (ctx.quit) break;
      run(c);
    }
    return last_error;
  }
  std::string line;
  while (!ctx.quit) {
    fmt::print("{}> ", ctx.prog);
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    run(line);
  }
  return last_error;
}

int run(int argc, char** argv) {
  const std::string prog = program_name(argv[0]);
  const std::vector<std::string> args(argv, argv + argc);
  Options options = parse_command_line(prog, args);

  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  IoContext ctx;
  ctx.prog = prog;
  ctx.loop = &loop;
  ctx.engine = &engine;
  ctx.image_opts = options.spec.image_opts;
  ctx.misalign = options.misalign;

  if (options.has_file) {
    std::optional<std::string> shown;
    if (!options.spec.image_opts) shown = options.spec.filename;
    if (open_file(ctx, options.spec, shown) < 0) return 1;
  }
  const int last_error = command_loop(ctx, options.commands);
  // Everything in flight completes before the image closes, as qemu-io drains at exit.
  drain_aio(ctx);
  close_image(loop, engine, ctx.image);
  return last_error < 0 ? 1 : 0;
}

}  // namespace
}  // namespace strata::tools::io

int main(int argc, char** argv) { return strata::tools::io::run(argc, argv); }
