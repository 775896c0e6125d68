#include "format.h"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace strata::tools::io {
namespace {

// printf with a C format, for the few places where qemu-io's exact C formatting ("%f", "%05.2f")
// is the specification.
template <class... Args>
std::string c_format(const char* format, Args... args) {
  char buf[128];
  const int n = std::snprintf(buf, sizeof(buf), format, args...);
  return std::string(buf, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
}

struct Unit {
  int shift;
  const char* suffix;
};
constexpr Unit kUnits[] = {{60, " EiB"}, {50, " PiB"}, {40, " TiB"},
                           {30, " GiB"}, {20, " MiB"}, {10, " KiB"}};

}  // namespace

std::string human_size(double value) {
  std::string text;
  const char* suffix = " bytes";
  bool found = false;
  for (const Unit& u : kUnits) {
    const double unit = static_cast<double>(uint64_t{1} << u.shift);
    if (value >= unit) {
      text = c_format("%.3f", value / unit);
      suffix = u.suffix;
      found = true;
      break;
    }
  }
  if (!found) text = c_format("%f", value);
  // qemu-io cuts at the first ".000", wherever it is, and appends the suffix.
  const size_t cut = text.find(".000");
  if (cut != std::string::npos) text.resize(cut);
  return text + suffix;
}

std::string time_string(std::chrono::nanoseconds elapsed, bool verbose) {
  const int64_t ns = elapsed.count();
  const int64_t sec = ns / 1000000000;
  const double frac = static_cast<double>(ns % 1000000000) / 1e9;
  if (!verbose && sec == 0) return c_format("%05.2f sec", frac);
  const auto hours = static_cast<unsigned>(sec / 3600);
  const auto minutes = static_cast<unsigned>((sec % 3600) / 60);
  const double seconds = static_cast<double>(sec % 60) + frac;
  return c_format("%u:%02u:%05.2f", hours, minutes, seconds);
}

std::string report(std::string_view op, std::chrono::nanoseconds elapsed, int64_t offset,
                   int64_t count, int64_t total, int ops, bool machine_readable) {
  const double secs = static_cast<double>(elapsed.count()) / 1e9;
  const std::string ts = time_string(elapsed, machine_readable);
  const double bytes_rate = static_cast<double>(total) / secs;
  const double ops_rate = static_cast<double>(ops) / secs;
  if (machine_readable) {
    return fmt::format("{},{},{},", total, ops, ts) + c_format("%.3f,%.3f\n", bytes_rate, ops_rate);
  }
  std::string out = fmt::format("{} {}/{} bytes at offset {}\n", op, total, count, offset);
  out += fmt::format("{}, {} ops; {} ({}/sec and ", human_size(static_cast<double>(total)), ops, ts,
                     human_size(bytes_rate));
  out += c_format("%.4f ops/sec)\n", ops_rate);
  return out;
}

std::string hex_dump(const uint8_t* buf, int64_t offset, int64_t len) {
  std::string out;
  for (int64_t i = 0; i < len; i += 16) {
    const int64_t n = std::min<int64_t>(16, len - i);
    out += fmt::format("{:08x}:  ", offset + i);
    for (int64_t j = 0; j < n; j++) out += fmt::format("{:02x} ", buf[i + j]);
    out += ' ';
    for (int64_t j = 0; j < n; j++) {
      const unsigned char c = buf[i + j];
      out += std::isalnum(c) ? static_cast<char>(c) : '.';
    }
    out += '\n';
  }
  return out;
}

std::optional<uint8_t> parse_pattern(std::string_view arg) {
  const std::string text(arg);
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text.c_str(), &end, 0);
  if (value < 0 || value > 255 || *end != '\0') {
    std::printf("%s is not a valid pattern byte\n", text.c_str());
    return std::nullopt;
  }
  return static_cast<uint8_t>(value);
}

std::optional<int64_t> parse_num(std::string_view arg) {
  const SizeArg parsed = parse_size_arg(arg);
  if (!parsed.error) return static_cast<int64_t>(parsed.value);
  if (*parsed.error == SizeArgError::kTooLarge) {
    fmt::print("Parsing error: argument too large -- {}\n", arg);
  } else {
    fmt::print("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {}\n",
               arg);
  }
  return std::nullopt;
}

}  // namespace strata::tools::io
