// Specification of how strata-qmp reads arguments and shell lines (keyval.h).
#include "keyval.h"

#include <gtest/gtest.h>

namespace strata::qmp_client {
namespace {

using nlohmann::json;

struct TypedCase {
  const char* text;
  json expected;
};

TEST(QmpKeyval, ValuesAreTypedByTheJsonScalarRule) {
  const TypedCase cases[] = {
      {"512", json(512)},
      {"-1", json(-1)},
      {"1.5", json(1.5)},
      {"true", json(true)},
      {"false", json(false)},
      {"null", json(nullptr)},
      {"\"512\"", json("512")},  // a quoted number stays a string
      {"file", json("file")},
      {"on", json("on")},  // QEMU's on/off are not booleans here (detect-zeroes=off)
      {"off", json("off")},
      {"/tmp/x.img", json("/tmp/x.img")},
      {"", json("")},
      {"1k", json("1k")},
      {"[1]", json("[1]")},  // only scalars are parsed
      {"{}", json("{}")},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(typed_value(c.text), c.expected) << c.text;
  }
}

TEST(QmpKeyval, DottedKeysNestAndIndicesMakeLists) {
  auto args = parse_arguments({"driver=qcow2", "file.driver=file", "file.filename=a.img",
                               "file.aio.x=1", "read-only=true", "l.0=a", "l.1=b", "l.2.k=c"});
  ASSERT_TRUE(args) << args.error().message();
  json expected = {
      {"driver", "qcow2"},
      {"file", {{"driver", "file"}, {"filename", "a.img"}, {"aio", {{"x", 1}}}}},
      {"read-only", true},
      {"l", json::array({"a", "b", {{"k", "c"}}})},
  };
  EXPECT_EQ(*args, expected);
}

TEST(QmpKeyval, LaterValueWinsForARepeatedKey) {
  auto args = parse_arguments({"a=1", "a=2"});
  ASSERT_TRUE(args);
  EXPECT_EQ(*args, json({{"a", 2}}));
}

TEST(QmpKeyval, NoWordsMeanAnEmptyObject) {
  auto args = parse_arguments({});
  ASSERT_TRUE(args);
  EXPECT_EQ(*args, json::object());
}

TEST(QmpKeyval, OneJsonWordIsTheArgumentsObject) {
  auto args = parse_arguments({R"({"driver": "file", "size": 5, "n": {"x": "1"}})"});
  ASSERT_TRUE(args);
  EXPECT_EQ(*args, json({{"driver", "file"}, {"size", 5}, {"n", {{"x", "1"}}}}));
}

struct BadCase {
  std::vector<std::string> words;
  const char* message;
};

TEST(QmpKeyval, BadArgumentsAreRejectedWithAReason) {
  const BadCase cases[] = {
      {{"driver"}, "Expected '=' after parameter 'driver'"},
      {{"a..b=1"}, "Invalid parameter 'a..b'"},
      {{"=1"}, "Invalid parameter ''"},
      {{"file=f0", "file.driver=file"}, "Parameters 'file.*' used inconsistently"},
      {{"file.driver=file", "file=f0"}, "Parameters 'file.*' used inconsistently"},
      {{"l.0=a", "l.2=c"}, "Parameter 'l.1' missing"},
      {{"{\"a\": "}, "Arguments are not valid JSON: {\"a\": "},
  };
  for (const auto& c : cases) {
    auto args = parse_arguments(c.words);
    ASSERT_FALSE(args) << c.message;
    EXPECT_EQ(args.error().message(), c.message);
    EXPECT_EQ(args.error().err(), EINVAL);
  }
}

TEST(QmpKeyval, ShellWordsHonourQuotesAndBackslashes) {
  struct Case {
    const char* line;
    std::vector<std::string> words;
  };
  const Case cases[] = {
      {"  a  b\tc ", {"a", "b", "c"}},
      {"filename='my disk.img'", {"filename=my disk.img"}},
      {"x=\"a \\\" b\"", {"x=a \" b"}},
      {"x='\"512\"'", {"x=\"512\""}},
      {"a\\ b", {"a b"}},
      {"''", {""}},
      {"", {}},
  };
  for (const auto& c : cases) {
    auto words = split_words(c.line);
    ASSERT_TRUE(words) << c.line;
    EXPECT_EQ(*words, c.words) << c.line;
  }
  auto bad = split_words("a='b");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "Unterminated ' quote");
}

TEST(QmpKeyval, ShellLinesBecomeRequests) {
  struct Case {
    const char* line;
    json request;
  };
  const Case cases[] = {
      {"query-block", {{"execute", "query-block"}}},
      {"  blockdev-add driver=file node-name=f0 filename=x",
       {{"execute", "blockdev-add"},
        {"arguments", {{"driver", "file"}, {"node-name", "f0"}, {"filename", "x"}}}}},
      {"block_resize {\"node-name\": \"f0\", \"size\": 1024}",
       {{"execute", "block_resize"}, {"arguments", {{"node-name", "f0"}, {"size", 1024}}}}},
      {"{\"execute\": \"quit\", \"id\": 7}", {{"execute", "quit"}, {"id", 7}}},
  };
  for (const auto& c : cases) {
    auto request = parse_request_line(c.line);
    ASSERT_TRUE(request) << c.line;
    EXPECT_EQ(*request, c.request) << c.line;
  }
  EXPECT_FALSE(parse_request_line("{\"arguments\": {}}"));
  EXPECT_FALSE(parse_request_line("{\"execute\": "));
  EXPECT_FALSE(parse_request_line("blockdev-add driver"));
}

}  // namespace
}  // namespace strata::qmp_client
