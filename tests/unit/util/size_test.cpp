#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "strata/options.h"

namespace strata {
namespace {

struct SizeCase {
  std::string_view text;
  std::optional<uint64_t> want;
};

constexpr uint64_t kKiB = uint64_t{1} << 10;

TEST(ParseSize, Table) {
  const SizeCase cases[] = {
      {"0", 0},
      {"512", 512},
      {"007", 7},
      {"1k", kKiB},
      {"1K", kKiB},
      {"64k", 64 * kKiB},
      {"1m", uint64_t{1} << 20},
      {"3M", uint64_t{3} << 20},
      {"1g", uint64_t{1} << 30},
      {"2G", uint64_t{2} << 30},
      {"1t", uint64_t{1} << 40},
      {"1T", uint64_t{1} << 40},
      {"1p", uint64_t{1} << 50},
      {"1P", uint64_t{1} << 50},
      {"1e", uint64_t{1} << 60},
      {"15E", uint64_t{15} << 60},
      {"0k", 0},
      {"18446744073709551615", UINT64_MAX},
      // Overflow.
      {"16E", std::nullopt},
      {"18446744073709551616", std::nullopt},
      {"99999999999999999999999", std::nullopt},
      {"17179869184G", std::nullopt},
      {"17179869183G", uint64_t{17179869183} << 30},
      // Not a size.
      {"", std::nullopt},
      {"k", std::nullopt},
      {"-1", std::nullopt},
      {"+1", std::nullopt},
      {"1.5G", std::nullopt},
      {"0x10", std::nullopt},
      {" 1", std::nullopt},
      {"1 ", std::nullopt},
      {"1kk", std::nullopt},
      {"1KB", std::nullopt},
      {"1B", std::nullopt},
      {"1Z", std::nullopt},
      {"k1", std::nullopt},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_size(c.text), c.want) << "text: '" << c.text << "'";
  }
}

}  // namespace
}  // namespace strata
