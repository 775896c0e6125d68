#include "strata/options.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace strata {
namespace {

using nlohmann::json;

enum class Kind { kString, kBool, kInt, kUint, kSize };

// Reads option "a" of `obj` as `kind` through a reader with prefix "p.", as JSON.
Result<json> read(const json& obj, OptionSyntax syntax, Kind kind) {
  OptionReader reader(obj, syntax, "p.");
  auto wrap = [](auto r) -> Result<json> {
    if (!r) return r.error();
    if (!*r) return json();  // absent
    return json(**r);
  };
  switch (kind) {
    case Kind::kString:
      return wrap(reader.get_string("a"));
    case Kind::kBool:
      return wrap(reader.get_bool("a"));
    case Kind::kInt:
      return wrap(reader.get_int("a"));
    case Kind::kUint:
      return wrap(reader.get_uint("a"));
    case Kind::kSize:
      return wrap(reader.get_size("a"));
  }
  return json();
}

struct ReadCase {
  OptionSyntax syntax;
  Kind kind;
  json value;         // the value of option "a"
  json want;          // the value read, if no error is expected
  std::string error;  // the expected message, or empty
};

constexpr auto kJson = OptionSyntax::kJson;
constexpr auto kKeyval = OptionSyntax::kKeyval;

void check(const ReadCase& c) {
  json obj = {{"a", c.value}};
  auto r = read(obj, c.syntax, c.kind);
  std::string what = "value " + c.value.dump() + (c.syntax == kJson ? " (json)" : " (keyval)");
  if (c.error.empty()) {
    ASSERT_TRUE(r) << what << ": " << r.error().message();
    EXPECT_EQ(*r, c.want) << what;
    EXPECT_EQ(r->type(), c.want.type()) << what;
  } else {
    ASSERT_FALSE(r) << what << " read as " << r->dump();
    EXPECT_EQ(r.error().message(), c.error) << what;
    EXPECT_EQ(r.error().err(), EINVAL) << what;
  }
}

TEST(OptionReader, JsonTypesMustMatch) {
  const std::string str_err = "Invalid parameter type for 'p.a', expected: string";
  const std::string bool_err = "Invalid parameter type for 'p.a', expected: boolean";
  const std::string int_err = "Invalid parameter type for 'p.a', expected: integer";
  const std::string uint_err = "Parameter 'p.a' expects uint64";
  const ReadCase cases[] = {
      {kJson, Kind::kString, "x", "x", ""},
      {kJson, Kind::kString, "", "", ""},
      {kJson, Kind::kString, 1, {}, str_err},
      {kJson, Kind::kString, true, {}, str_err},
      {kJson, Kind::kString, json::object(), {}, str_err},
      {kJson, Kind::kString, json::array(), {}, str_err},
      {kJson, Kind::kString, nullptr, {}, str_err},

      {kJson, Kind::kBool, true, true, ""},
      {kJson, Kind::kBool, false, false, ""},
      {kJson, Kind::kBool, "on", {}, bool_err},
      {kJson, Kind::kBool, 1, {}, bool_err},
      {kJson, Kind::kBool, json::object(), {}, bool_err},

      {kJson, Kind::kInt, 5, int64_t{5}, ""},
      {kJson, Kind::kInt, -5, int64_t{-5}, ""},
      {kJson, Kind::kInt, INT64_MAX, INT64_MAX, ""},
      {kJson, Kind::kInt, INT64_MIN, INT64_MIN, ""},
      {kJson, Kind::kInt, uint64_t{1} << 63, {}, int_err},
      {kJson, Kind::kInt, "5", {}, int_err},
      {kJson, Kind::kInt, 1.0, {}, int_err},
      {kJson, Kind::kInt, true, {}, int_err},

      {kJson, Kind::kUint, 5, uint64_t{5}, ""},
      {kJson, Kind::kUint, UINT64_MAX, UINT64_MAX, ""},
      {kJson, Kind::kUint, -1, {}, uint_err},
      {kJson, Kind::kUint, "5", {}, uint_err},
      {kJson, Kind::kUint, 2.5, {}, uint_err},
      {kJson, Kind::kUint, false, {}, uint_err},

      // A JSON size is a plain number, as in QMP.
      {kJson, Kind::kSize, 65536, uint64_t{65536}, ""},
      {kJson, Kind::kSize, "64k", {}, uint_err},
      {kJson, Kind::kSize, -1, {}, uint_err},
  };
  for (const auto& c : cases) check(c);
}

TEST(OptionReader, KeyvalConvertsStrings) {
  const std::string nested_err = "Parameters 'p.a.*' are unexpected";
  const std::string bool_err = "Parameter 'p.a' expects 'on' or 'off'";
  const std::string int_err = "Parameter 'p.a' expects integer";
  const std::string size_err = "Parameter 'p.a' expects size";
  const ReadCase cases[] = {
      {kKeyval, Kind::kString, "x", "x", ""},
      {kKeyval, Kind::kString, json{{"b", "1"}}, {}, nested_err},
      {kKeyval, Kind::kString, json::array({"1"}), {}, nested_err},

      {kKeyval, Kind::kBool, "on", true, ""},
      {kKeyval, Kind::kBool, "yes", true, ""},
      {kKeyval, Kind::kBool, "true", true, ""},
      {kKeyval, Kind::kBool, "y", true, ""},
      {kKeyval, Kind::kBool, "off", false, ""},
      {kKeyval, Kind::kBool, "no", false, ""},
      {kKeyval, Kind::kBool, "false", false, ""},
      {kKeyval, Kind::kBool, "n", false, ""},
      {kKeyval, Kind::kBool, true, true, ""},
      {kKeyval, Kind::kBool, "ON", {}, bool_err},
      {kKeyval, Kind::kBool, "1", {}, bool_err},
      {kKeyval, Kind::kBool, "", {}, bool_err},
      {kKeyval, Kind::kBool, json{{"b", "on"}}, {}, nested_err},

      {kKeyval, Kind::kInt, "12", int64_t{12}, ""},
      {kKeyval, Kind::kInt, "-12", int64_t{-12}, ""},
      {kKeyval, Kind::kInt, "0x10", int64_t{16}, ""},
      {kKeyval, Kind::kInt, "010", int64_t{8}, ""},
      {kKeyval, Kind::kInt, "9223372036854775807", INT64_MAX, ""},
      {kKeyval, Kind::kInt, 7, int64_t{7}, ""},
      {kKeyval, Kind::kInt, "9223372036854775808", {}, int_err},
      {kKeyval, Kind::kInt, "1k", {}, int_err},
      {kKeyval, Kind::kInt, "1.5", {}, int_err},
      {kKeyval, Kind::kInt, "", {}, int_err},
      {kKeyval, Kind::kInt, "x", {}, int_err},
      {kKeyval, Kind::kInt, json{{"b", "1"}}, {}, nested_err},

      {kKeyval, Kind::kUint, "18446744073709551615", UINT64_MAX, ""},
      {kKeyval, Kind::kUint, "0x10", uint64_t{16}, ""},
      {kKeyval, Kind::kUint, "18446744073709551616", {}, int_err},
      {kKeyval, Kind::kUint, "-1", {}, int_err},
      {kKeyval, Kind::kUint, "1k", {}, int_err},

      {kKeyval, Kind::kSize, "512", uint64_t{512}, ""},
      {kKeyval, Kind::kSize, "64k", uint64_t{65536}, ""},
      {kKeyval, Kind::kSize, "1G", uint64_t{1} << 30, ""},
      {kKeyval, Kind::kSize, 4096, uint64_t{4096}, ""},
      {kKeyval, Kind::kSize, "1.5G", {}, size_err},
      {kKeyval, Kind::kSize, "-1", {}, size_err},
      {kKeyval, Kind::kSize, "", {}, size_err},
      {kKeyval, Kind::kSize, "16E", {}, size_err},
      {kKeyval, Kind::kSize, json{{"b", "1"}}, {}, nested_err},
  };
  for (const auto& c : cases) check(c);
}

TEST(OptionReader, AbsentKeyReadsAsNothing) {
  json obj = {{"b", "1"}};
  for (auto syntax : {kJson, kKeyval}) {
    for (auto kind : {Kind::kString, Kind::kBool, Kind::kInt, Kind::kUint, Kind::kSize}) {
      auto r = read(obj, syntax, kind);
      ASSERT_TRUE(r) << r.error().message();
      EXPECT_TRUE(r->is_null());
    }
  }
}

TEST(OptionReader, MissingNamesTheFullPath) {
  json obj = json::object();
  OptionReader reader(obj, kJson, "file.");
  EXPECT_EQ(reader.missing("size").message(), "Parameter 'file.size' is missing");
  EXPECT_EQ(reader.missing("size").err(), EINVAL);
  EXPECT_EQ(reader.full_name("size"), "file.size");
  OptionReader top(obj, kJson);
  EXPECT_EQ(top.missing("size").message(), "Parameter 'size' is missing");
}

TEST(OptionReader, FinishReportsFirstUnconsumedKeyInOrder) {
  json obj = {{"c", 1}, {"b", 2}, {"a", 3}, {"d", 4}};
  OptionReader reader(obj, kJson, "file.");
  ASSERT_TRUE(reader.get_int("b"));
  auto r = reader.finish();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Parameter 'file.a' is unexpected");

  ASSERT_TRUE(reader.get_int("a"));
  ASSERT_NE(reader.take("c"), nullptr);
  r = reader.finish();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Parameter 'file.d' is unexpected");

  EXPECT_TRUE(reader.has("d"));  // has() does not consume
  r = reader.finish();
  ASSERT_FALSE(r);

  ASSERT_TRUE(reader.get_int("d"));
  EXPECT_TRUE(reader.finish());
}

TEST(OptionReader, FailedReadStillConsumes) {
  // The visitor stops at the first error, so what finish() says afterwards does not matter;
  // what matters is that a key that was asked for is never reported as unexpected.
  json obj = {{"a", "x"}};
  OptionReader reader(obj, kJson);
  EXPECT_FALSE(reader.get_int("a"));
  EXPECT_TRUE(reader.finish());
}

TEST(OptionReader, TakeReturnsRawValue) {
  json obj = {{"file", {{"driver", "file"}}}, {"backing", nullptr}};
  OptionReader reader(obj, kJson);
  const json* file = reader.take("file");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ((*file)["driver"], "file");
  const json* backing = reader.take("backing");
  ASSERT_NE(backing, nullptr);
  EXPECT_TRUE(backing->is_null());
  EXPECT_EQ(reader.take("nothing"), nullptr);
  EXPECT_TRUE(reader.finish());
}

TEST(OptionReader, HasAndEmptyReader) {
  json obj = {{"a", 1}};
  OptionReader reader(obj, kJson);
  EXPECT_TRUE(reader.has("a"));
  EXPECT_FALSE(reader.has("b"));
  EXPECT_EQ(reader.syntax(), kJson);
  EXPECT_EQ(reader.prefix(), "");

  json empty = json::object();
  OptionReader none(empty, kKeyval);
  EXPECT_TRUE(none.finish());
}

TEST(OptionReader, ExpectObject) {
  EXPECT_TRUE(OptionReader::expect_object(json::object(), "file"));
  const json not_objects[] = {"x", 1, json::array(), nullptr, true};
  for (const auto& v : not_objects) {
    auto r = OptionReader::expect_object(v, "file");
    ASSERT_FALSE(r) << v.dump();
    EXPECT_EQ(r.error().message(), "Invalid parameter type for 'file', expected: object");
  }
}

enum class Aio { kThreads, kIoUring };
constexpr std::array<std::pair<std::string_view, Aio>, 2> kAioValues = {{
    {"threads", Aio::kThreads},
    {"io_uring", Aio::kIoUring},
}};

TEST(OptionReader, EnumValues) {
  json obj = {{"aio", "io_uring"}};
  OptionReader reader(obj, kKeyval, "file.");
  auto r = reader.get_enum<Aio>("aio", kAioValues);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, Aio::kIoUring);
  EXPECT_TRUE(reader.finish());

  auto absent = reader.get_enum<Aio>("other", kAioValues);
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
}

TEST(OptionReader, EnumErrorsUseQemuTexts) {
  // QEMU's enum visitor names the member alone, without the dotted path.
  json bad = {{"aio", "native"}};
  OptionReader reader(bad, kJson, "file.");
  auto r = reader.get_enum<Aio>("aio", kAioValues);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Parameter 'aio' does not accept value 'native'");
  EXPECT_EQ(r.error().err(), EINVAL);

  // Case matters.
  json upper = {{"aio", "THREADS"}};
  OptionReader upper_reader(upper, kKeyval);
  EXPECT_FALSE(upper_reader.get_enum<Aio>("aio", kAioValues));

  // A non-string is a type error, with the full path.
  json number = {{"aio", 1}};
  OptionReader number_reader(number, kJson, "file.");
  auto t = number_reader.get_enum<Aio>("aio", kAioValues);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message(), "Invalid parameter type for 'file.aio', expected: string");
}

TEST(OptionReader, KeyvalRoundTrip) {
  auto parsed = parse_keyval("null-co,size=64k,read-zeroes=on,latency-ns=0x10", "driver");
  ASSERT_TRUE(parsed) << parsed.error().message();
  OptionReader reader(*parsed, kKeyval);
  EXPECT_EQ(*reader.get_string("driver").value(), "null-co");
  EXPECT_EQ(*reader.get_size("size").value(), 65536u);
  EXPECT_EQ(*reader.get_bool("read-zeroes").value(), true);
  EXPECT_EQ(*reader.get_uint("latency-ns").value(), 16u);
  EXPECT_TRUE(reader.finish());
}

}  // namespace
}  // namespace strata
