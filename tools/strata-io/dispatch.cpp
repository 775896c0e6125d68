// Splitting a command line, finding the command and checking it before it runs, as qemu-io's
// qemuio_command does: the file must be open unless the command says otherwise, the argument
// count must fit, and the permission the command needs is taken on the image first (so "write"
// on a read-only image fails with the graph's "Block node is read-only").
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

#include "command.h"
#include "strata/block_backend.h"
#include "strata/event_loop.h"

namespace strata::tools::io {
namespace {

int help_command(IoContext& ctx, std::span<const std::string> argv);

constexpr Command kHelp{
    .name = "help",
    .altname = "?",
    .run = help_command,
    .argmin = 0,
    .argmax = 1,
    .global = true,
    .args = "[command]",
    .oneline = "help for one or all commands",
};

// Every command, sorted by name (the order help lists them in).
const std::vector<const Command*>& all_commands() {
  static const std::vector<const Command*> all = [] {
    std::vector<const Command*> out{&kHelp};
    for (auto table : {rw_commands(), aio_commands(), image_commands()}) {
      for (const Command& c : table) out.push_back(&c);
    }
    std::sort(out.begin(), out.end(),
              [](const Command* a, const Command* b) { return a->name < b->name; });
    return out;
  }();
  return all;
}

const Command* find_command(std::string_view name) {
  for (const Command* c : all_commands()) {
    if (c->name == name || (!c->altname.empty() && c->altname == name)) return c;
  }
  return nullptr;
}

void print_one_help(const Command& c) {
  std::string line(c.name);
  line += ' ';
  if (!c.args.empty()) {
    line += c.args;
    line += ' ';
  }
  fmt::print("{}-- {}\n", line, c.oneline);
}

int help_command(IoContext&, std::span<const std::string> argv) {
  if (argv.size() == 1) {
    for (const Command* c : all_commands()) print_one_help(*c);
    fmt::print("\nUse 'help commandname' for extended help.\n");
    return 0;
  }
  const Command* c = find_command(argv[1]);
  if (c == nullptr) {
    fmt::print("command {} not found\n", argv[1]);
    return 0;
  }
  print_one_help(*c);
  if (!c->help.empty()) fmt::print("{}", c->help);
  return 0;
}

// qemu-io's breakline: split at single spaces, dropping empty pieces. There is no quoting.
std::vector<std::string> split_line(std::string_view line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = line.find(' ', start);
    if (end == std::string_view::npos) end = line.size();
    if (end > start) out.emplace_back(line.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool argument_count_ok(const Command& c, int nargs) {
  if (nargs >= c.argmin && (c.argmax == -1 || nargs <= c.argmax)) return true;
  if (c.argmax == -1) {
    fmt::print(stderr, "bad argument count {} to {}, expected at least {} arguments\n", nargs,
               c.name, c.argmin);
  } else if (c.argmin == c.argmax) {
    fmt::print(stderr, "bad argument count {} to {}, expected {} arguments\n", nargs, c.name,
               c.argmin);
  } else {
    fmt::print(stderr, "bad argument count {} to {}, expected between {} and {} arguments\n", nargs,
               c.name, c.argmin, c.argmax);
  }
  return false;
}

}  // namespace

void AioTracker::end() {
  if (--in_flight_ == 0 && waiter_) std::exchange(waiter_, {}).resume();
}

IoBuffer::IoBuffer(size_t len, uint8_t fill, bool misalign) : len_(len) {
  constexpr size_t kAlign = 4096;
  constexpr size_t kMisalign = 16;
  const size_t extra = misalign ? kMisalign : 0;
  const size_t total = (len + extra + kAlign - 1) / kAlign * kAlign + kAlign;
  mem_.reset(std::aligned_alloc(kAlign, total));
  if (!mem_) {
    fmt::print(stderr, "strata-io: out of memory allocating {} bytes\n", len);
    std::exit(1);
  }
  data_ = static_cast<uint8_t*>(mem_.get()) + extra;
  std::fill(data_, data_ + len, fill);
}

int usage(const Command& cmd) {
  fmt::print("{} {} -- {}\n", cmd.name, cmd.args, cmd.oneline);
  return -EINVAL;
}

ScannedArgs scan_args(std::span<const std::string> argv, std::string_view optstring) {
  ScannedArgs out;
  out.name = argv.empty() ? std::string() : argv[0];
  OptionParser parser(argv, optstring);
  for (auto step = parser.next(); step.status != OptionParser::Status::kEnd; step = parser.next()) {
    out.steps.push_back(std::move(step));
  }
  out.operands = parser.operands();
  return out;
}

int option_error(const Command& cmd, const ScannedArgs& args, const OptionError& error) {
  fmt::print(stderr, "{}\n", getopt_message(args.name, error));
  return usage(cmd);
}

int run_command_line(IoContext& ctx, std::string_view line) {
  std::vector<std::string> argv = split_line(line);
  if (argv.empty()) return 0;
  const Command* cmd = find_command(argv[0]);
  if (cmd == nullptr) {
    fmt::print(stderr, "command \"{}\" not found\n", argv[0]);
    return -EINVAL;
  }
  if (!cmd->global && !cmd->no_file_ok && ctx.blk() == nullptr) {
    fmt::print(stderr, "no file open, try 'help open'\n");
    return -EINVAL;
  }
  if (!argument_count_ok(*cmd, static_cast<int>(argv.size()) - 1)) return -EINVAL;

  // Take the permission the command needs now, and keep it (qemu-io never gives it back).
  if (cmd->perm != Perm::kNone && ctx.blk() != nullptr && !has_all(ctx.blk()->perm(), cmd->perm)) {
    auto r = ctx.blk()->set_perm(ctx.blk()->perm() | cmd->perm, ctx.blk()->shared());
    if (!r) {
      report_error(ctx.prog, r.error().message(), r.error().hint());
      return -r.error().err();
    }
  }
  return cmd->run(ctx, argv);
}

void drain_aio(IoContext& ctx) {
  if (ctx.aio.in_flight() == 0) return;
  auto wait = [](AioTracker* t) -> Task<void> { co_await t->drained(); };
  run_sync(*ctx.loop, wait(&ctx.aio));
}

}  // namespace strata::tools::io
