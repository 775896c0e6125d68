// strata-img: the image tool, compatible with qemu-img for the subcommands it has.
//
//   strata-img [-h | -V] COMMAND [command options]
#include <fmt/format.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

constexpr Subcommand kSubcommands[] = {
    {"bench", run_bench,
     "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
     "[--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] "
     "[-t cache] [-w] [-U] [--image-opts] filename"},
    {"commit", run_commit,
     "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] "
     "[-r rate_limit] [-d] [-p] [--progress=json] filename"},
    {"create", run_create,
     "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename "
     "[size]"},
    {"check", run_check,
     "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] "
     "[-T src_cache] [-U] filename"},
    {"info", run_info,
     "info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] "
     "filename"},
    {"map", run_map,
     "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] "
     "[--max-length=len] [--output=ofmt] [-U] filename"},
};

constexpr LongOption kGlobalOptions[] = {{"help", false, 'h'}, {"version", false, 'V'}};

}  // namespace

void help(std::string_view prog) {
  fmt::print(
      "{0} version {1}\n"
      "usage: {0} [standard options] command [command options]\n"
      "Strata disk image utility, compatible with qemu-img\n"
      "\n"
      "    '-h', '--help'       display this help and exit\n"
      "    '-V', '--version'    output version information and exit\n"
      "\n"
      "Command syntax:\n",
      prog, STRATA_VERSION);
  for (const Subcommand& c : kSubcommands) fmt::print("  {}\n", c.synopsis);
  fmt::print(
      "\n"
      "Command parameters:\n"
      "  'filename' is a disk image filename\n"
      "  'fmt' is the disk image format (default: raw; Strata never probes the format)\n"
      "  'cache' is the cache mode: none, writeback, unsafe, directsync, writethrough\n"
      "  'aio' is the AIO mode: threads, io_uring, or native (an alias of io_uring)\n"
      "  bench's -n asks for native AIO, like qemu-img's: Strata's is io_uring\n"
      "  Sizes take the suffixes k, M, G, T, P and E (binary units).\n"
      "  --progress=json prints one JSON object per line on stderr, at most ten a second and a\n"
      "    final one: {{\"offset\": bytes done, \"len\": bytes in all, \"elapsed\": seconds}}\n");
  std::exit(0);
}

namespace {

int run(int argc, char** argv) {
  const std::string prog = program_name(argv[0]);
  const std::vector<std::string> args(argv, argv + argc);
  // Global options come before the subcommand ("+": stop at the first operand).
  OptionParser parser(args, "+:hV", kGlobalOptions);
  if (auto opt = next_option(prog, parser)) {
    if (opt->id == 'h') help(prog);
    fmt::print("{} version {}\n", prog, STRATA_VERSION);
    return 0;
  }
  const std::vector<std::string>& rest = parser.operands();
  if (rest.empty()) usage_error(prog, "Not enough arguments");
  for (const Subcommand& c : kSubcommands) {
    if (c.name == rest[0]) return c.run(prog, rest);
  }
  usage_error(prog, fmt::format("Command not found: {}", rest[0]));
}

}  // namespace
}  // namespace strata::tools::img

int main(int argc, char** argv) { return strata::tools::img::run(argc, argv); }
