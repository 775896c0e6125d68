// strata-io's output must be qemu-io 7.2's, byte for byte. The expected strings below are what
// /usr/bin/qemu-io prints for the same values.
#include "format.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace strata::tools::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

TEST(HumanSize, MatchesQemuIoCvtstr) {
  struct Case {
    double value;
    std::string_view text;
  };
  const Case cases[] = {
      {0, "0 bytes"},
      {1, "1 bytes"},
      {512, "512 bytes"},
      {1023, "1023 bytes"},
      {1024, "1 KiB"},
      {1536, "1.500 KiB"},
      {4096, "4 KiB"},
      {1000448, "977 KiB"},  // truncate 1000000 on qemu: 977 KiB
      {1024.5, "1 KiB"},     // "%.3f" rounds to 1.000, which is cut
      {1025, "1.001 KiB"},
      {64.0 * (1 << 20), "64 MiB"},
      {4.125 * (1 << 20), "4.125 MiB"},
      {3.0 * (1 << 30), "3 GiB"},
      {2.0 * (uint64_t{1} << 40), "2 TiB"},
      {1.0 * (uint64_t{1} << 50), "1 PiB"},
      {7.0 * (uint64_t{1} << 60), "7 EiB"},
      {100.5, "100.500000 bytes"},  // rates below 1 KiB keep "%f"'s digits
      {2.25e6, "2.146 MiB"},
  };
  for (const Case& c : cases) EXPECT_EQ(human_size(c.value), c.text) << c.value;
}

TEST(TimeString, MatchesQemuIoTimestr) {
  EXPECT_EQ(time_string(nanoseconds(0), false), "00.00 sec");
  EXPECT_EQ(time_string(milliseconds(1), false), "00.00 sec");
  EXPECT_EQ(time_string(milliseconds(250), false), "00.25 sec");
  EXPECT_EQ(time_string(milliseconds(1500), false), "0:00:01.50");
  EXPECT_EQ(time_string(seconds(3725), false), "1:02:05.00");
  // -C always uses the long form.
  EXPECT_EQ(time_string(milliseconds(250), true), "0:00:00.25");
}

TEST(Report, TwoLinesLikeQemuIo) {
  EXPECT_EQ(report("wrote", milliseconds(1), 0, 4096, 4096, 1, false),
            "wrote 4096/4096 bytes at offset 0\n"
            "4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n");
  EXPECT_EQ(report("read", milliseconds(500), 1048576, 512, 512, 1, false),
            "read 512/512 bytes at offset 1048576\n"
            "512 bytes, 1 ops; 00.50 sec (1 KiB/sec and 2.0000 ops/sec)\n");
}

TEST(Report, MachineReadableWithC) {
  EXPECT_EQ(report("read", milliseconds(500), 0, 512, 512, 1, true),
            "512,1,0:00:00.50,1024.000,2.000\n");
}

TEST(HexDump, SixteenBytesALineAndAShortLastLine) {
  uint8_t buf[40];
  for (int i = 0; i < 40; i++) buf[i] = 0xab;
  buf[0] = 'A';
  buf[1] = '7';
  buf[2] = ' ';
  buf[3] = 0;
  EXPECT_EQ(hex_dump(buf, 0x1230, 40),
            "00001230:  41 37 20 00 ab ab ab ab ab ab ab ab ab ab ab ab  A7..............\n"
            "00001240:  ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab  ................\n"
            "00001250:  ab ab ab ab ab ab ab ab  ........\n");
  EXPECT_EQ(hex_dump(buf, 0, 0), "");
}

TEST(ParsePattern, StrtolRulesAndQemuIoMessage) {
  struct Case {
    std::string_view text;
    std::optional<uint8_t> value;
  };
  const Case cases[] = {
      {"0", 0},
      {"171", 171},
      {"0xab", 0xab},
      {"0XFF", 0xff},
      {"0253", 0253},
      {"+5", 5},
      {"255", 255},
      {"256", std::nullopt},
      {"-1", std::nullopt},
      {"0x1ff", std::nullopt},
      {"ab", std::nullopt},
      {"0x", std::nullopt},
      {"12 ", std::nullopt},
  };
  for (const Case& c : cases) {
    testing::internal::CaptureStdout();
    const auto got = parse_pattern(c.text);
    const std::string out = testing::internal::GetCapturedStdout();
    EXPECT_EQ(got, c.value) << c.text;
    EXPECT_EQ(out, c.value ? "" : std::string(c.text) + " is not a valid pattern byte\n") << c.text;
  }
}

TEST(ParseNum, QemuIoParsingMessages) {
  testing::internal::CaptureStdout();
  EXPECT_EQ(parse_num("64k"), 65536);
  EXPECT_EQ(parse_num("abc"), std::nullopt);
  EXPECT_EQ(parse_num("99999999999999999999"), std::nullopt);
  EXPECT_EQ(testing::internal::GetCapturedStdout(),
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- abc\n"
            "Parsing error: argument too large -- 99999999999999999999\n");
}

}  // namespace
}  // namespace strata::tools::io
