// Small pieces every front end parses and prints the same way: cache modes, aio modes, discard
// modes and sizes as QEMU's tools spell them, and one-line error reports.
//
// Thread safety: pure functions, except report_error, which writes to stderr.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace strata::tools {

// A `-t` cache mode (QEMU's bdrv_parse_cache_mode, qemu-block-semantics.md 2.2).
struct CacheMode {
  bool direct = false;        // cache.direct=on: O_DIRECT
  bool no_flush = false;      // cache.no-flush=on: flushes are ignored
  bool writethrough = false;  // every write is made durable before it completes (FUA)

  friend bool operator==(const CacheMode&, const CacheMode&) = default;
};

// "none"/"off", "writeback", "unsafe", "directsync", "writethrough"; nullopt otherwise.
std::optional<CacheMode> parse_cache_mode(std::string_view text);

// A `-i` aio mode as QEMU's tools accept it: "threads", "native" or "io_uring" (returned as
// given; the file driver maps "native" to io_uring). nullopt otherwise.
std::optional<std::string> parse_aio_mode(std::string_view text);

// A `-d` discard mode: "ignore"/"off" -> "ignore", "unmap"/"on" -> "unmap"; nullopt otherwise.
std::optional<std::string> parse_discard_mode(std::string_view text);

// A size or offset argument the way qemu-io's cvtnum reads it: digits with an optional binary
// suffix (strata/options.h parse_size), at most INT64_MAX.
enum class SizeArgError { kInvalid, kTooLarge };
struct SizeArg {
  uint64_t value = 0;
  std::optional<SizeArgError> error;
};
SizeArg parse_size_arg(std::string_view text);

// The program name to print in messages: the last component of argv[0], as glib's
// g_get_prgname gives it to qemu-io and qemu-img.
std::string program_name(const char* argv0);

// Prints "<prog>: <message>" and a newline on stderr (QEMU's error_report).
void report_error(std::string_view prog, std::string_view message);
// The same, then the error's hint (Error::hint) on a line of its own when there is one, as
// QEMU's error_report_err does ("Is another process using the image [x]?").
void report_error(std::string_view prog, std::string_view message, std::string_view hint);

}  // namespace strata::tools
