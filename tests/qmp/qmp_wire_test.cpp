// The QMP wire format: splitting a stream into messages, envelope checks, QEMU's output form.
#include "qmp_wire.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strata::qmp {
namespace {

std::vector<std::string> split(const std::vector<std::string>& chunks,
                               size_t max = kMaxMessageBytes) {
  JsonSplitter splitter(max);
  std::vector<RawMessage> out;
  for (const auto& chunk : chunks) splitter.feed(chunk, out);
  std::vector<std::string> texts;
  for (const auto& m : out) texts.push_back(m.error ? "ERROR: " + *m.error : m.text);
  return texts;
}

TEST(JsonSplitter, CutsMessagesByBalanceNotByLine) {
  struct Case {
    std::vector<std::string> chunks;
    std::vector<std::string> messages;
  };
  const Case cases[] = {
      {{"{\"a\":1}\n"}, {"{\"a\":1}"}},
      {{"{\"a\":", "\n 1}"}, {"{\"a\":\n 1}"}},
      {{"{}{}"}, {"{}", "{}"}},
      {{"{\"s\":\"}{\\\"\"}"}, {"{\"s\":\"}{\\\"\"}"}},
      {{"{'a':'b'}"}, {"{\"a\":\"b\"}"}},
      {{"{'it\\'s':'say \"hi\"'}"}, {"{\"it's\":\"say \\\"hi\\\"\"}"}},
      {{"[1,[2]] "}, {"[1,[2]]"}},
      {{"\"str\" 12 nul\n"}, {"\"str\"", "12", "nul"}},
      {{"}\n"}, {"}"}},
      {{"  \r\n\t"}, {}},
      {{"{\"a\":1"}, {}},  // incomplete: waits for more
  };
  for (const auto& c : cases) EXPECT_EQ(split(c.chunks), c.messages) << c.chunks[0];
}

TEST(JsonSplitter, OversizedMessageIsReportedOnceAndSkipped) {
  EXPECT_EQ(split({"{\"a\":\"0123456789\"}{\"b\":1}"}, 8),
            (std::vector<std::string>{"ERROR: JSON token size limit exceeded", "{\"b\":1}"}));
  // The limit holds across chunks, and braces inside the skipped string do not count.
  EXPECT_EQ(split({"{\"a\":\"01234", "56}{789\"}", "{}"}, 8),
            (std::vector<std::string>{"ERROR: JSON token size limit exceeded", "{}"}));
}

TEST(JsonSplitter, DeepNestingIsRefused) {
  std::string deep = std::string(kMaxNesting + 1, '[') + std::string(kMaxNesting + 1, ']');
  EXPECT_EQ(split({deep + "{}"}),
            (std::vector<std::string>{"ERROR: JSON nesting depth limit exceeded", "{}"}));
  std::string ok = std::string(kMaxNesting, '[') + std::string(kMaxNesting, ']');
  EXPECT_EQ(split({ok}), (std::vector<std::string>{ok}));
}

TEST(ParseRequest, EnvelopeErrorsHaveQemuTexts) {
  struct Case {
    std::string text;
    std::string error;  // "" when valid
    bool has_id;
  };
  const Case cases[] = {
      {"{\"execute\":\"x\"}", "", false},
      {"{\"execute\":\"x\",\"arguments\":{},\"id\":[1]}", "", true},
      {"{\"exec-oob\":\"x\"}", "", false},
      {"[1]", "QMP input must be a JSON object", false},
      {"{\"id\":1}", "QMP input lacks member 'execute'", true},
      {"{\"execute\":1}", "QMP input member 'execute' must be a string", false},
      {"{\"execute\":\"x\",\"arguments\":1}", "QMP input member 'arguments' must be an object",
       false},
      {"{\"execute\":\"x\",\"bad\":1,\"id\":2}", "QMP input member 'bad' is unexpected", true},
      {"{\"execute\":\"x\",\"exec-oob\":\"y\"}", "QMP input member 'exec-oob' is unexpected",
       false},
      {"{\"execute\"", "JSON parse error, premature EOI", false},
      {"{bad}", "JSON parse error, invalid token '{b'", false},
  };
  for (const auto& c : cases) {
    Parsed p = parse_request({c.text, std::nullopt});
    if (c.error.empty()) {
      ASSERT_TRUE(p.request) << c.text;
      EXPECT_EQ(p.request->id.has_value(), c.has_id) << c.text;
    } else {
      ASSERT_TRUE(p.error) << c.text;
      EXPECT_EQ(p.error->desc, c.error) << c.text;
      EXPECT_EQ(p.error->id.has_value(), c.has_id) << c.text;
    }
  }
}

TEST(Dump, PrintsLikeQemu) {
  // Key order is QEMU's QDict order, as observed from qemu-storage-daemon 7.2.
  EXPECT_EQ(dump(make_return(Json::object(), Json(1))), "{\"return\": {}, \"id\": 1}");
  EXPECT_EQ(dump(make_error("GenericError", "x", Json("a"))),
            "{\"id\": \"a\", \"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}");
  Json version = Json::object();
  version["major"] = 7;
  version["minor"] = 2;
  version["micro"] = 22;
  EXPECT_EQ(dump(version), "{\"micro\": 22, \"minor\": 2, \"major\": 7}");
  EXPECT_EQ(dump(Json::array({1, "\xc3\xa9", nullptr, true})), "[1, \"\\u00e9\", null, true]");
}

TEST(MakeEvent, HasTimestampAndData) {
  Json e = make_event("X", Json{{"a", 1}});
  EXPECT_EQ(e["event"], "X");
  EXPECT_EQ(e["data"]["a"], 1);
  EXPECT_GT(e["timestamp"]["seconds"].get<int64_t>(), 1600000000);
  EXPECT_LT(e["timestamp"]["microseconds"].get<int64_t>(), 1000000);
  EXPECT_FALSE(make_event("Y", std::nullopt).contains("data"));
}

}  // namespace
}  // namespace strata::qmp
