// strata-img's subcommands. Each lives in its own file and is one entry in main.cpp's table:
// adding "info" means writing info.cpp with run_info and adding {"info", run_info, "..."}.
//
// A subcommand gets its own arguments (args[0] is its name) and returns the process exit status.
// Shared conventions, as qemu-img's: errors are "strata-img: <message>" on stderr; a command-line
// mistake adds "Try 'strata-img --help' for more information" and exits 1.
//
// Threading: the main thread, which also runs the event loop.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "getopt.h"

namespace strata::tools::img {

struct Subcommand {
  std::string_view name;
  int (*run)(std::string_view prog, std::span<const std::string> args);
  std::string_view synopsis;  // for --help: "bench [-c count] ... filename"
};

// qemu-img's error_exit: the message, the "Try ... --help" line, and exit status 1.
[[noreturn]] void usage_error(std::string_view prog, std::string_view message);

// qemu-img's reaction to a getopt error ("unrecognized option '-Z'", "missing argument for
// option '-c'"); exits with status 1.
[[noreturn]] void option_error(std::string_view prog, const OptionError& error);

// Prints strata-img's help (every subcommand's synopsis) and exits with status 0.
[[noreturn]] void help(std::string_view prog);

int run_bench(std::string_view prog, std::span<const std::string> args);
int run_commit(std::string_view prog, std::span<const std::string> args);
int run_create(std::string_view prog, std::span<const std::string> args);
int run_check(std::string_view prog, std::span<const std::string> args);
int run_info(std::string_view prog, std::span<const std::string> args);
int run_map(std::string_view prog, std::span<const std::string> args);

}  // namespace strata::tools::img
