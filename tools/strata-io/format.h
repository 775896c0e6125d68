// strata-io's output, byte for byte as qemu-io 7.2 prints it, so that transcripts of the two
// tools compare line by line (tests/interop): human sizes ("4 KiB", "977 KiB", "1.500 KiB"),
// the report after each request ("wrote 4096/4096 bytes at offset 0" and the timing line), the
// -v hex dump, and the parsing messages.
//
// Thread safety: pure functions; the print_* ones write to stdout.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cli.h"

namespace strata::tools::io {

// qemu-io's cvtstr: "%.3f" in the largest binary unit that fits (" KiB" ... " EiB", or "%f" and
// " bytes" below 1 KiB), with a ".000" cut off. 512 -> "512 bytes", 1536 -> "1.500 KiB".
std::string human_size(double value);

// qemu-io's timestr: "SS.ss sec" under a second's whole part, else "H:MM:SS.ss" (the
// machine-readable -C form always uses the latter).
std::string time_string(std::chrono::nanoseconds elapsed, bool verbose);

// The two report lines after a request, or -C's one line:
//   "<op> <total>/<count> bytes at offset <offset>"
//   "<size>, <ops> ops; <time> (<rate>/sec and <ops/s> ops/sec)"
std::string report(std::string_view op, std::chrono::nanoseconds elapsed, int64_t offset,
                   int64_t count, int64_t total, int ops, bool machine_readable);

// The -v dump: 16 bytes a line, "%08x:  " then "%02x " per byte, a space, and the bytes as
// text (letters and digits as themselves, anything else as '.').
std::string hex_dump(const uint8_t* buf, int64_t offset, int64_t len);

// A -P pattern byte as strtol(arg, 0) reads it (decimal, 0x hex or 0 octal) in [0, 255];
// otherwise prints "<arg> is not a valid pattern byte" and returns nullopt.
std::optional<uint8_t> parse_pattern(std::string_view arg);

// An offset or length argument; on failure prints qemu-io's message ("Parsing error:
// non-numeric argument, or extraneous/unrecognized suffix -- x" or "... argument too large --
// x") and returns nullopt.
std::optional<int64_t> parse_num(std::string_view arg);

// The largest request qemu-io lets through (QEMU's BDRV_REQUEST_MAX_BYTES: INT32_MAX rounded down
// to a multiple of the maximum alignment, 2147483136).
constexpr int64_t kMaxRequestBytes = 2147483136;

}  // namespace strata::tools::io
