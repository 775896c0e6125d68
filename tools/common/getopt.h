// OptionParser: command-line option scanning with GNU getopt_long's rules, as a value.
//
// The front ends must accept exactly what qemu-io and qemu-img accept, and both use glibc's
// getopt_long: clustered short flags ("-rU"), attached or separate arguments ("-c10", "-c 10"),
// long options with "=" or a separate argument and unambiguous abbreviations ("--form raw"),
// "--" to end options, and permutation (options after operands still count, so qemu-io's
// "read 0 512 -v" works). CLI11 follows other rules, so the tools use this instead. Unlike
// getopt it keeps no global state, so one process can parse the top-level command line and then
// every qemu-io command line with separate parsers.
//
// Errors are returned, not printed: qemu-io prints glibc's texts (getopt_message) and qemu-img
// prints its own ("unrecognized option '-Z'"), from the same facts.
//
// Thread safety: a parser is a plain value; use one per thread.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strata::tools {

struct LongOption {
  std::string_view name;
  bool has_arg = false;
  int id = 0;  // returned as ParsedOption::id; a short option's id is its character
};

struct OptionError {
  enum class Kind {
    kUnknownShort,       // "-Z"
    kUnknownLong,        // "--bogus"
    kMissingShortArg,    // "-c" at the end
    kMissingLongArg,     // "--cache" at the end
    kUnexpectedLongArg,  // "--help=x"
    kAmbiguousLong,      // "--no" matching two options
  };
  Kind kind;
  char short_opt = 0;     // the option character (short kinds)
  std::string long_name;  // the long name as matched, or as typed when unknown/ambiguous
  std::string element;    // the whole command-line element that held the option
  std::vector<std::string> candidates;  // kAmbiguousLong: the matching names
};

struct ParsedOption {
  int id = 0;
  std::string arg;      // the option's argument, if it takes one
  std::string element;  // the command-line element that held the option
};

class OptionParser {
 public:
  // `args[0]` is the program or command name and is skipped. `short_opts` uses getopt's syntax
  // ("c:rU": a colon after a letter means it takes an argument); a leading '+' stops at the
  // first operand (POSIX mode) and a leading ':' is ignored (it only changes glibc's printing).
  OptionParser(std::span<const std::string> args, std::string_view short_opts,
               std::span<const LongOption> long_opts = {});

  enum class Status { kOption, kError, kEnd };
  struct Step {
    Status status = Status::kEnd;
    ParsedOption option;               // kOption
    std::optional<OptionError> error;  // kError
  };

  // The next option in command-line order, an error, or kEnd once options are exhausted.
  // Parsing may continue after an error.
  Step next();

  // The operands (non-option arguments) in order. Complete once next() returned kEnd.
  const std::vector<std::string>& operands() const { return operands_; }

 private:
  Step parse_long(const std::string& element, size_t start);
  Step parse_short();

  std::span<const std::string> args_;
  std::string_view short_opts_;
  std::span<const LongOption> long_opts_;
  bool posix_ = false;
  size_t index_ = 1;     // the element being scanned
  size_t char_pos_ = 0;  // inside a cluster of short options; 0 when between elements
  std::vector<std::string> operands_;
};

// glibc's message for `error`, as getopt prints it (without the trailing newline):
//   "<prog>: invalid option -- 'Z'", "<prog>: unrecognized option '--bogus'", ...
std::string getopt_message(std::string_view prog, const OptionError& error);

}  // namespace strata::tools
