// QEMU's printing conventions: QDict key order, JSON escaping, the human dump and size_to_str.
// The expected texts are qemu-img 7.2's output for the same values.
#include "qemu_json.h"

#include <gtest/gtest.h>

#include <iterator>
#include <string>

#include "image_chain.h"

namespace strata::tools {
namespace {

using nlohmann::ordered_json;

TEST(QemuJson, BucketsOfImageInfoKeysMatchQemu) {
  // qemu-img info --output=json prints these keys in exactly this order.
  const char* keys[] = {
      "snapshots",        "virtual-size", "filename",        "cluster-size",
      "format",           "actual-size",  "format-specific", "full-backing-filename",
      "backing-filename", "dirty-flag"};
  for (size_t i = 1; i < std::size(keys); ++i) {
    EXPECT_LT(qdict_bucket(keys[i - 1]), qdict_bucket(keys[i])) << keys[i - 1] << " " << keys[i];
  }
  EXPECT_EQ(qdict_bucket("backing-filename-format"), 206u);
  EXPECT_EQ(qdict_bucket("filename"), 313u);
}

TEST(QemuJson, PrettyPrintsInQdictOrder) {
  ordered_json info;
  info["filename"] = "base.qcow2";
  info["format"] = "raw";
  info["dirty-flag"] = false;
  info["virtual-size"] = 1048576;
  EXPECT_EQ(qemu_json_pretty(info),
            "{\n"
            "    \"virtual-size\": 1048576,\n"
            "    \"filename\": \"base.qcow2\",\n"
            "    \"format\": \"raw\",\n"
            "    \"dirty-flag\": false\n"
            "}");
}

TEST(QemuJson, NestsListsAndObjects) {
  ordered_json v = ordered_json::array();
  v.push_back({{"id", "1"}});
  v.push_back(ordered_json::array());
  EXPECT_EQ(qemu_json_pretty(v),
            "[\n"
            "    {\n"
            "        \"id\": \"1\"\n"
            "    },\n"
            "    []\n"
            "]");
}

TEST(QemuJson, EscapesLikeQemu) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"plain", "\"plain\""},
      {"a\"b\\c", "\"a\\\"b\\\\c\""},
      {"\n\t\r\b\f", "\"\\n\\t\\r\\b\\f\""},
      {std::string("\x01", 1), "\"\\u0001\""},
      {"\x7f", "\"\\u007F\""},
      {"caf\xc3\xa9", "\"caf\\u00E9\""},
      {"\xf0\x9f\x98\x80", "\"\\uD83D\\uDE00\""},
      {"\xff", "\"\\uFFFD\""},
      {"a/b", "\"a/b\""},
  };
  for (const Case& c : cases) EXPECT_EQ(qemu_json_pretty(ordered_json(c.in)), c.out) << c.in;
}

TEST(QemuJson, HumanDumpOfFormatSpecificData) {
  ordered_json data;
  data["compat"] = "1.1";
  data["extended-l2"] = false;
  data["lazy-refcounts"] = true;
  data["corrupt"] = false;
  data["refcount-bits"] = 16;
  data["compression-type"] = "zlib";
  EXPECT_EQ(qemu_dump_dict(data, 1),
            "    compat: 1.1\n"
            "    compression type: zlib\n"
            "    lazy refcounts: true\n"
            "    refcount bits: 16\n"
            "    corrupt: false\n"
            "    extended l2: false\n");
}

TEST(QemuJson, HumanDumpOfNestedList) {
  ordered_json data;
  data["bitmaps"] = ordered_json::array({ordered_json{{"name", "b0"}}});
  EXPECT_EQ(qemu_dump_dict(data, 1),
            "    bitmaps:\n"
            "        [0]:\n"
            "            name: b0\n");
}

TEST(QemuJson, SizeToStr) {
  struct Case {
    uint64_t in;
    const char* out;
  };
  const Case cases[] = {
      {0, "0 B"},         {1, "1 B"},           {999, "999 B"},        {1000, "0.977 KiB"},
      {1024, "1 KiB"},    {1536, "1.5 KiB"},    {331776, "324 KiB"},   {1023976, "1e+03 KiB"},
      {1048576, "1 MiB"}, {67108864, "64 MiB"}, {1ull << 60, "1 EiB"}, {UINT64_MAX, "16 EiB"},
  };
  for (const Case& c : cases) EXPECT_EQ(qemu_size_to_str(c.in), c.out) << c.in;
}

TEST(QemuJson, OutputFormat) {
  EXPECT_EQ(parse_output_format("human"), OutputFormat::kHuman);
  EXPECT_EQ(parse_output_format("json"), OutputFormat::kJson);
  EXPECT_EQ(parse_output_format("JSON"), std::nullopt);
  EXPECT_EQ(parse_output_format(""), std::nullopt);
}

TEST(ImageChain, FullBackingFilename) {
  struct Case {
    const char* image;
    const char* backing;
    const char* full;
  };
  const Case cases[] = {
      {"top.qcow2", "mid.qcow2", "mid.qcow2"},
      {"dir/top.qcow2", "mid.qcow2", "dir/mid.qcow2"},
      {"/a/b/top.qcow2", "../mid.qcow2", "/a/b/../mid.qcow2"},
      {"/a/top.qcow2", "/abs/base.qcow2", "/abs/base.qcow2"},
      {"/a/top.qcow2", "nbd:unix:/s", "nbd:unix:/s"},
      {"/a/top.qcow2", "sub/x:y", "/a/sub/x:y"},
      {"/a/top.qcow2", "", ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(full_backing_filename(c.image, c.backing), c.full) << c.image << " " << c.backing;
  }
}

}  // namespace
}  // namespace strata::tools
