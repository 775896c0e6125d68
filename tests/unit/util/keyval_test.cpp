#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "strata/options.h"

namespace strata {
namespace {

using nlohmann::json;

struct GoodCase {
  std::string_view text;
  std::string_view implied_key;
  json want;
};

TEST(ParseKeyval, GoodInputs) {
  const GoodCase cases[] = {
      {"", "", json::object()},
      {"a=1", "", {{"a", "1"}}},
      {"a=1,b=2", "", {{"a", "1"}, {"b", "2"}}},
      {"a=1,", "", {{"a", "1"}}},
      {"a=", "", {{"a", ""}}},
      {"a=,b=", "", {{"a", ""}, {"b", ""}}},
      // ",," is a literal comma, anywhere in the value.
      {"a=x,,y", "", {{"a", "x,y"}}},
      {"a=,,", "", {{"a", ","}}},
      {"a=1,,,b=2", "", {{"a", "1,"}, {"b", "2"}}},
      {"a=x=y", "", {{"a", "x=y"}}},
      {"a=1,,b", "", {{"a", "1,b"}}},
      {"a=1,,,", "", {{"a", "1,"}}},
      // Scalars are strings, whatever they look like.
      {"a=on,b=12,c=null", "", {{"a", "on"}, {"b", "12"}, {"c", "null"}}},
      // Dotted keys build objects.
      {"file.filename=x", "", {{"file", {{"filename", "x"}}}}},
      {"file.driver=file,file.filename=x,driver=raw",
       "",
       {{"driver", "raw"}, {"file", {{"driver", "file"}, {"filename", "x"}}}}},
      {"a.b.c=1,a.b.d=2", "", {{"a", {{"b", {{"c", "1"}, {"d", "2"}}}}}}},
      // The last value for a leaf wins.
      {"a=1,a=2", "", {{"a", "2"}}},
      {"a.b=1,a.b=2", "", {{"a", {{"b", "2"}}}}},
      // Names: letters, digits, '-', '_', and a downstream "__RFQDN_" prefix.
      {"node-name=n0,cache_x=1", "", {{"node-name", "n0"}, {"cache_x", "1"}}},
      {"__com.redhat_x=1", "", {{"__com.redhat_x", "1"}}},
      {"a1=1", "", {{"a1", "1"}}},
      // Implied first key.
      {"file", "driver", {{"driver", "file"}}},
      {"file,filename=x", "driver", {{"driver", "file"}, {"filename", "x"}}},
      {"file,", "driver", {{"driver", "file"}}},
      {"driver=file,filename=x", "driver", {{"driver", "file"}, {"filename", "x"}}},
      {"filename=x", "driver", {{"filename", "x"}}},
      {"nbd,id=e0", "type", {{"type", "nbd"}, {"id", "e0"}}},
      // Numeric fragments make arrays, in index order.
      {"c.0=a,c.1=b", "", json::parse(R"({"c": ["a", "b"]})")},
      {"c.1=b,c.0=a", "", json::parse(R"({"c": ["a", "b"]})")},
      {"c.0.x=1,c.1.x=2", "", json::parse(R"({"c": [{"x": "1"}, {"x": "2"}]})")},
      {"c.0.0=a,c.0.1=b", "", json::parse(R"({"c": [["a", "b"]]})")},
      {"c.00=a", "", json::parse(R"({"c": ["a"]})")},
  };
  for (const auto& c : cases) {
    auto r = parse_keyval(c.text, c.implied_key);
    ASSERT_TRUE(r) << "text: '" << c.text << "': " << r.error().message();
    EXPECT_EQ(*r, c.want) << "text: '" << c.text << "' got " << r->dump();
  }
}

struct BadCase {
  std::string_view text;
  std::string_view implied_key;
  std::string_view message;
};

TEST(ParseKeyval, BadInputsWithQemuTexts) {
  const BadCase cases[] = {
      {"a", "", "Expected '=' after parameter 'a'"},
      {"a.b", "", "Expected '=' after parameter 'a.b'"},
      {"a=1,b", "", "Expected '=' after parameter 'b'"},
      {"file,b", "driver", "Expected '=' after parameter 'b'"},
      {"=1", "", "Invalid parameter ''"},
      {",", "", "Invalid parameter ''"},
      {"1=x", "", "Invalid parameter '1'"},
      {"a..b=1", "", "Invalid parameter 'a..b'"},
      {"a.=1", "", "Invalid parameter 'a.'"},
      {".a=1", "", "Invalid parameter '.a'"},
      {"a$=1", "", "Invalid parameter 'a$'"},
      {"a.1b=1", "", "Invalid parameter 'a.1b'"},
      {"_a=1", "", "Invalid parameter '_a'"},
      {"-a=1", "", "Invalid parameter '-a'"},
      // Implied keys need a value without '=' and ','.
      {"=file", "driver", "Invalid parameter ''"},
      // A path is either an object or a string.
      {"a=1,a.b=2", "", "Parameters 'a.*' used inconsistently"},
      {"a.b=2,a=1", "", "Parameters 'a.*' used inconsistently"},
      {"a.b.c=1,a.b=2", "", "Parameters 'a.b.*' used inconsistently"},
      {"a.b=1,a.b.c=2", "", "Parameters 'a.b.*' used inconsistently"},
      {"file,driver.x=1", "driver", "Parameters 'driver.*' used inconsistently"},
      // Arrays: no mixing with members, no gaps.
      {"a.0=x,a.b=y", "", "Parameters 'a.*' used inconsistently"},
      {"a.b.0=x,a.b.c=y", "", "Parameters 'a.b.*' used inconsistently"},
      {"a.1=x", "", "Parameter 'a.0' missing"},
      {"a.0=x,a.2=y", "", "Parameter 'a.1' missing"},
      {"a.x.1=y", "", "Parameter 'a.x.0' missing"},
      {"a.0=x,a.99999999999999999999=y", "", "Parameter 'a.1' missing"},
      // Help is a request this parser cannot serve.
      {"help", "", "Help is not available for this option"},
      {"?", "driver", "Help is not available for this option"},
      {"a=1,help", "", "Help is not available for this option"},
  };
  for (const auto& c : cases) {
    auto r = parse_keyval(c.text, c.implied_key);
    ASSERT_FALSE(r) << "text: '" << c.text << "' parsed as " << r->dump();
    EXPECT_EQ(r.error().message(), c.message) << "text: '" << c.text << "'";
    EXPECT_EQ(r.error().err(), EINVAL);
  }
}

TEST(ParseKeyval, FragmentLengthLimit) {
  const std::string max_key(127, 'k');
  const std::string long_key(128, 'k');

  auto ok = parse_keyval(max_key + "=1");
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ((*ok)[max_key], "1");

  auto whole = parse_keyval(long_key + "=1");
  ASSERT_FALSE(whole);
  EXPECT_EQ(whole.error().message(), "Parameter '" + long_key + "' is too long");

  auto fragment = parse_keyval("a." + long_key + "=1");
  ASSERT_FALSE(fragment);
  EXPECT_EQ(fragment.error().message(), "Parameter fragment '" + long_key + "' is too long");

  auto first_fragment = parse_keyval(long_key + ".a=1");
  ASSERT_FALSE(first_fragment);
  EXPECT_EQ(first_fragment.error().message(), "Parameter fragment '" + long_key + "' is too long");
}

TEST(ParseKeyval, ValueKeepsEverythingButSeparators) {
  auto r = parse_keyval("filename=/tmp/a b=c.img,x=\"q\"");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["filename"], "/tmp/a b=c.img");
  EXPECT_EQ((*r)["x"], "\"q\"");
}

}  // namespace
}  // namespace strata
