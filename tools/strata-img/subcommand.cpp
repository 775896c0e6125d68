// The conventions subcommand.h declares that every subcommand shares: qemu-img's error exits
// and the pieces of its getopt loops. help() is in main.cpp, beside the table it prints.
#include "subcommand.h"

#include <fmt/format.h>

#include <cstdlib>

#include "cli.h"

namespace strata::tools::img {

void usage_error(std::string_view prog, std::string_view message) {
  report_error(prog, message);
  fmt::print(stderr, "Try '{} --help' for more information\n", prog);
  std::exit(1);
}

void fail_exit(std::string_view prog, std::string_view message) {
  report_error(prog, message);
  std::exit(1);
}

void option_error(std::string_view prog, const OptionError& error) {
  using Kind = OptionError::Kind;
  if (error.kind == Kind::kMissingShortArg || error.kind == Kind::kMissingLongArg) {
    usage_error(prog, fmt::format("missing argument for option '{}'", error.element));
  }
  usage_error(prog, fmt::format("unrecognized option '{}'", error.element));
}

std::optional<ParsedOption> next_option(std::string_view prog, OptionParser& parser) {
  OptionParser::Step step = parser.next();
  if (step.status == OptionParser::Status::kEnd) return std::nullopt;
  if (step.error) option_error(prog, *step.error);
  return std::move(step.option);
}

bool apply_image_option(std::string_view prog, const ParsedOption& opt, ImageSpec& spec) {
  switch (opt.id) {
    case 'h':
      help(prog);
    case 'f':
      spec.format = opt.arg;
      return true;
    case 'U':
      spec.force_share = true;
      return true;
    case kImageOpts:
      spec.image_opts = true;
      return true;
    case kObject:
      usage_error(prog, "--object is not supported by strata-img");
    default:
      return false;
  }
}

std::string image_filename_operand(std::string_view prog, const OptionParser& parser) {
  if (parser.operands().size() != 1) usage_error(prog, "Expecting one image file name");
  return parser.operands()[0];
}

OutputFormat output_format_option(std::string_view prog, std::string_view text) {
  auto format = parse_output_format(text);
  if (!format) fail_exit(prog, "--output must be used with human or json as argument.");
  return *format;
}

void size_option_error(std::string_view prog, std::string_view name, SizeArgError error,
                       uint64_t max) {
  if (error == SizeArgError::kInvalid) {
    report_error(prog, fmt::format("Invalid {} specified. You may use k, M, G, T, P or E "
                                   "suffixes for",
                                   name));
    fail_exit(prog, "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
  }
  fail_exit(prog, fmt::format("Invalid {} specified. Must be between 0 and {}.", name, max));
}

uint64_t size_option(std::string_view prog, std::string_view name, const std::string& text,
                     uint64_t max) {
  const SizeArg parsed = parse_size_arg(text);
  if (parsed.error) size_option_error(prog, name, *parsed.error, max);
  if (parsed.value > max) size_option_error(prog, name, SizeArgError::kTooLarge, max);
  return parsed.value;
}

}  // namespace strata::tools::img
