// OptionParser must scan exactly as glibc's getopt_long does for qemu-io and qemu-img.
#include "getopt.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strata::tools {
namespace {

constexpr LongOption kLong[] = {
    {"cache", true, 't'},    {"cmd", true, 'c'},         {"format", true, 'f'},
    {"help", false, 'h'},    {"image-opts", false, 300}, {"no-drain", false, 301},
    {"nocache", false, 'n'},
};

// The scan as text: options in order ("-c[x]" with an argument, "--300" for long-only ids),
// errors as "!kind:what", then "|" and the operands.
std::string trace(std::vector<std::string> args, std::string_view short_opts) {
  args.insert(args.begin(), "prog");
  OptionParser p(args, short_opts, kLong);
  std::string out;
  for (auto s = p.next(); s.status != OptionParser::Status::kEnd; s = p.next()) {
    if (!out.empty()) out += ' ';
    if (s.error) {
      out += "!" + getopt_message("p", *s.error);
      continue;
    }
    const int id = s.option.id;
    out += id < 256 ? std::string("-") + static_cast<char>(id) : "--" + std::to_string(id);
    if (!s.option.arg.empty()) out += "[" + s.option.arg + "]";
  }
  out += " |";
  for (const auto& o : p.operands()) out += " " + o;
  return out;
}

struct Case {
  std::vector<std::string> args;
  std::string_view short_opts;
  std::string expected;
};

TEST(OptionParser, ScansLikeGetoptLong) {
  const Case cases[] = {
      // Short options: clusters, attached and separate arguments.
      {{"-r", "-U", "f.img"}, "rUc:", "-r -U | f.img"},
      {{"-rU", "f.img"}, "rUc:", "-r -U | f.img"},
      {{"-c10", "f.img"}, "rUc:", "-c[10] | f.img"},
      {{"-c", "10", "f.img"}, "rUc:", "-c[10] | f.img"},
      {{"-rc", "read 0 1", "f.img"}, "rUc:", "-r -c[read 0 1] | f.img"},
      // An argument may start with '-'.
      {{"-c", "-v"}, "c:v", "-c[-v] |"},
      // Order is kept, repeats too (qemu-io's -c).
      {{"-c", "a", "-c", "b"}, "c:", "-c[a] -c[b] |"},
      // Permutation: options after operands still count.
      {{"read", "0", "512", "-v"}, "v", "-v | read 0 512"},
      {{"0", "-q", "512"}, "q", "-q | 0 512"},
      // "--" ends options; "-" alone is an operand.
      {{"-q", "--", "-v", "x"}, "qv", "-q | -v x"},
      {{"-", "-q"}, "q", "-q | -"},
      // POSIX mode ('+') stops at the first operand.
      {{"-h", "bench", "-c", "1"}, "+hc:", "-h | bench -c 1"},
      // Long options: "=", separate argument, unambiguous abbreviations.
      {{"--cache=none", "x"}, "", "-t[none] | x"},
      {{"--cache", "none", "x"}, "", "-t[none] | x"},
      {{"--form", "raw"}, "", "-f[raw] |"},
      {{"--image-opt"}, "", "--300 |"},
      {{"--no-drain"}, "", "--301 |"},
      // An exact name wins over being a prefix of another ("--cmd" vs nothing; "--nocache").
      {{"--nocache"}, "", "-n |"},
      // Errors, with glibc's texts.
      {{"-Z", "x"}, "rU", "!p: invalid option -- 'Z' | x"},
      {{"-rZU"}, "rU", "-r !p: invalid option -- 'Z' -U |"},
      {{"-c"}, "c:", "!p: option requires an argument -- 'c' |"},
      {{"--bogus=3"}, "", "!p: unrecognized option '--bogus=3' |"},
      {{"--cache"}, "", "!p: option '--cache' requires an argument |"},
      {{"--help=x"}, "", "!p: option '--help' doesn't allow an argument |"},
      {{"--no"}, "", "!p: option '--no' is ambiguous; possibilities: '--no-drain' '--nocache' |"},
      {{"--c"}, "", "!p: option '--c' is ambiguous; possibilities: '--cache' '--cmd' |"},
  };
  for (const Case& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += " " + a;
    EXPECT_EQ(trace(c.args, c.short_opts), c.expected) << "args:" << joined;
  }
}

TEST(OptionParser, ReportsTheElementHoldingTheOption) {
  // qemu-img names the whole element in its messages ("unrecognized option '-Z'").
  std::vector<std::string> args = {"prog", "-qZ", "--pattern"};
  LongOption longs[] = {{"pattern", true, 300}};
  OptionParser p(args, "q", longs);
  auto s = p.next();
  EXPECT_EQ(s.status, OptionParser::Status::kOption);
  s = p.next();
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->kind, OptionError::Kind::kUnknownShort);
  EXPECT_EQ(s.error->element, "-qZ");
  s = p.next();
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->kind, OptionError::Kind::kMissingLongArg);
  EXPECT_EQ(s.error->element, "--pattern");
  EXPECT_EQ(p.next().status, OptionParser::Status::kEnd);
}

}  // namespace
}  // namespace strata::tools
