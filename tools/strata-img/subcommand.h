// strata-img's subcommands. Each lives in its own file and is one entry in main.cpp's table:
// adding "info" means writing info.cpp with run_info and adding {"info", run_info, "..."}.
//
// A subcommand gets its own arguments (args[0] is its name) and returns the process exit status.
// Shared conventions, as qemu-img's: errors are "strata-img: <message>" on stderr; a command-line
// mistake adds "Try 'strata-img --help' for more information" and exits 1. The pieces of the
// option loops that several subcommands share are here too (subcommand.cpp), so that a flag
// they have in common is read and refused with one text.
//
// Threading: the main thread, which also runs the event loop.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "cli.h"
#include "getopt.h"
#include "image.h"
#include "qemu_json.h"

namespace strata::tools::img {

struct Subcommand {
  std::string_view name;
  int (*run)(std::string_view prog, std::span<const std::string> args);
  std::string_view synopsis;  // for --help: "bench [-c count] ... filename"
};

// qemu-img's error_exit: the message, the "Try ... --help" line, and exit status 1.
[[noreturn]] void usage_error(std::string_view prog, std::string_view message);

// The message alone and exit status 1: qemu-img's error_report and exit for a bad option value.
[[noreturn]] void fail_exit(std::string_view prog, std::string_view message);

// qemu-img's reaction to a getopt error ("unrecognized option '-Z'", "missing argument for
// option '-c'"); exits with status 1.
[[noreturn]] void option_error(std::string_view prog, const OptionError& error);

// Prints strata-img's help (every subcommand's synopsis) and exits with status 0.
[[noreturn]] void help(std::string_view prog);

// ---- the option loop ----

// The ids of the long-only options that apply_image_option handles. A subcommand numbers its
// own long-only options from kFirstOwnOption.
enum SharedLongOption { kObject = 256, kImageOpts, kFirstOwnOption };

// The next option in `parser`, or nullopt once the options are exhausted. A getopt error exits
// through option_error, as every qemu-img getopt loop does.
std::optional<ParsedOption> next_option(std::string_view prog, OptionParser& parser);

// Applies an option that every subcommand opening one image reads alike: -h (help), -f,
// -U, --image-opts, and --object (refused: a usage error). False for any other option, which
// the caller then applies.
bool apply_image_option(std::string_view prog, const ParsedOption& opt, ImageSpec& spec);

// The subcommand's only operand, the image file name; any other count of operands is the usage
// error "Expecting one image file name".
std::string image_filename_operand(std::string_view prog, const OptionParser& parser);

// --output's argument; anything but "human" or "json" is reported and exits with status 1.
OutputFormat output_format_option(std::string_view prog, std::string_view text);

// qemu-img's cvtnum_full for a size option called `name` ("start offset", "rate limit"): `text`
// as a size in [0, max], or size_option_error's complaint.
uint64_t size_option(std::string_view prog, std::string_view name, const std::string& text,
                     uint64_t max);

// qemu-img's two complaints about a size: malformed (two lines, the suffixes qemu-img takes) or
// outside [0, max]. Exits with status 1.
[[noreturn]] void size_option_error(std::string_view prog, std::string_view name,
                                    SizeArgError error, uint64_t max);

// ---- the subcommands ----

int run_bench(std::string_view prog, std::span<const std::string> args);
int run_commit(std::string_view prog, std::span<const std::string> args);
int run_create(std::string_view prog, std::span<const std::string> args);
int run_check(std::string_view prog, std::span<const std::string> args);
int run_info(std::string_view prog, std::span<const std::string> args);
int run_map(std::string_view prog, std::span<const std::string> args);

}  // namespace strata::tools::img
