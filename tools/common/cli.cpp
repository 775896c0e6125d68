#include "cli.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>

#include "strata/options.h"

namespace strata::tools {

std::optional<CacheMode> parse_cache_mode(std::string_view text) {
  if (text == "none" || text == "off") return CacheMode{.direct = true};
  if (text == "writeback") return CacheMode{};
  if (text == "unsafe") return CacheMode{.no_flush = true};
  if (text == "directsync") return CacheMode{.direct = true, .writethrough = true};
  if (text == "writethrough") return CacheMode{.writethrough = true};
  return std::nullopt;
}

std::optional<std::string> parse_aio_mode(std::string_view text) {
  if (text == "threads" || text == "native" || text == "io_uring") return std::string(text);
  return std::nullopt;
}

std::optional<std::string> parse_discard_mode(std::string_view text) {
  if (text == "ignore" || text == "off") return "ignore";
  if (text == "unmap" || text == "on") return "unmap";
  return std::nullopt;
}

SizeArg parse_size_arg(std::string_view text) {
  auto value = parse_size(text);
  if (value) {
    if (*value > static_cast<uint64_t>(INT64_MAX)) return {0, SizeArgError::kTooLarge};
    return {*value, std::nullopt};
  }
  // parse_size refuses both malformed text and values that overflow; only well-formed digits
  // (with at most a suffix) can have overflowed.
  std::string_view digits = text;
  if (!digits.empty() &&
      std::string_view("kKmMgGtTpPeE").find(digits.back()) != std::string_view::npos) {
    digits.remove_suffix(1);
  }
  const bool well_formed =
      !digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos;
  return {0, well_formed ? SizeArgError::kTooLarge : SizeArgError::kInvalid};
}

std::string program_name(const char* argv0) {
  std::string_view path = argv0 == nullptr ? "" : argv0;
  const size_t slash = path.rfind('/');
  if (slash != std::string_view::npos) path.remove_prefix(slash + 1);
  return std::string(path);
}

void report_error(std::string_view prog, std::string_view message) {
  fmt::print(stderr, "{}: {}\n", prog, message);
}

void report_error(std::string_view prog, std::string_view message, std::string_view hint) {
  report_error(prog, message);
  if (!hint.empty()) fmt::print(stderr, "{}\n", hint);
}

}  // namespace strata::tools
