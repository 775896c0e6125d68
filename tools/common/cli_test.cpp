// The shared command-line vocabulary: cache, aio and discard modes, size arguments, and the node
// options an image is opened with.
#include "cli.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "image.h"

namespace strata::tools {
namespace {

using nlohmann::json;

TEST(CacheMode, ParsesQemuModes) {
  struct Case {
    std::string_view text;
    std::optional<CacheMode> mode;
  };
  const Case cases[] = {
      {"none", CacheMode{.direct = true}},
      {"off", CacheMode{.direct = true}},
      {"writeback", CacheMode{}},
      {"unsafe", CacheMode{.no_flush = true}},
      {"directsync", CacheMode{.direct = true, .writethrough = true}},
      {"writethrough", CacheMode{.writethrough = true}},
      {"Writeback", std::nullopt},
      {"", std::nullopt},
      {"direct", std::nullopt},
  };
  for (const Case& c : cases) EXPECT_EQ(parse_cache_mode(c.text), c.mode) << c.text;
}

TEST(AioAndDiscardModes, AcceptQemuSpellings) {
  EXPECT_EQ(parse_aio_mode("threads"), "threads");
  EXPECT_EQ(parse_aio_mode("io_uring"), "io_uring");
  EXPECT_EQ(parse_aio_mode("native"), "native");
  EXPECT_EQ(parse_aio_mode("uring"), std::nullopt);
  EXPECT_EQ(parse_discard_mode("on"), "unmap");
  EXPECT_EQ(parse_discard_mode("unmap"), "unmap");
  EXPECT_EQ(parse_discard_mode("off"), "ignore");
  EXPECT_EQ(parse_discard_mode("ignore"), "ignore");
  EXPECT_EQ(parse_discard_mode("trim"), std::nullopt);
}

TEST(SizeArg, TellsMalformedFromTooLarge) {
  struct Case {
    std::string_view text;
    uint64_t value;
    std::optional<SizeArgError> error;
  };
  const Case cases[] = {
      {"0", 0, std::nullopt},
      {"512", 512, std::nullopt},
      {"4k", 4096, std::nullopt},
      {"64M", 64 << 20, std::nullopt},
      {"1G", 1 << 30, std::nullopt},
      {"9223372036854775807", INT64_MAX, std::nullopt},
      {"7E", uint64_t{7} << 60, std::nullopt},
      // Fits in 64 bits but not in qemu-io's int64_t.
      {"9223372036854775808", 0, SizeArgError::kTooLarge},
      {"8E", 0, SizeArgError::kTooLarge},
      {"99999999999999999999", 0, SizeArgError::kTooLarge},
      {"99999999999999999999k", 0, SizeArgError::kTooLarge},
      {"abc", 0, SizeArgError::kInvalid},
      {"12q", 0, SizeArgError::kInvalid},
      {"-1", 0, SizeArgError::kInvalid},
      {"", 0, SizeArgError::kInvalid},
      {"k", 0, SizeArgError::kInvalid},
      {"1kB", 0, SizeArgError::kInvalid},
  };
  for (const Case& c : cases) {
    const SizeArg got = parse_size_arg(c.text);
    EXPECT_EQ(got.error, c.error) << c.text;
    if (!c.error) {
      EXPECT_EQ(got.value, c.value) << c.text;
    }
  }
}

TEST(ProgramName, IsTheLastPathComponent) {
  EXPECT_EQ(program_name("/usr/bin/strata-io"), "strata-io");
  EXPECT_EQ(program_name("build/bin/strata-img"), "strata-img");
  EXPECT_EQ(program_name("strata-io"), "strata-io");
}

// ---- image options ----

// "file" is the only protocol driver these tests name.
bool is_protocol(std::string_view driver) { return driver == "file"; }

json options(const ImageSpec& spec) {
  auto r = image_options(spec, is_protocol);
  EXPECT_TRUE(r) << r.error().message();
  return r ? *r : json();
}

TEST(ImageOptions, FormatOverAFileChildWithoutProbing) {
  ImageSpec spec;
  spec.filename = "disk.img";
  const json expected = {
      {"driver", "raw"},
      {"file", {{"driver", "file"}, {"filename", "disk.img"}}},
      {"read-only", "off"},
      {"discard", "unmap"},
      {"cache", {{"direct", "off"}, {"no-flush", "off"}}},
  };
  EXPECT_EQ(options(spec), expected);
}

TEST(ImageOptions, FlagsBecomeKeyvalValues) {
  ImageSpec spec;
  spec.filename = "disk.qcow2";
  spec.format = "qcow2";
  spec.read_only = true;
  spec.force_share = true;
  spec.cache = CacheMode{.direct = true, .writethrough = true};
  spec.aio = "io_uring";
  spec.discard = "ignore";
  const json expected = {
      {"driver", "qcow2"},
      {"file", {{"driver", "file"}, {"filename", "disk.qcow2"}, {"aio", "io_uring"}}},
      {"read-only", "on"},
      {"force-share", "on"},
      {"discard", "ignore"},
      {"cache", {{"direct", "on"}, {"no-flush", "off"}}},
  };
  EXPECT_EQ(options(spec), expected);
}

TEST(ImageOptions, ProtocolFormatTakesTheFilenameItself) {
  ImageSpec spec;
  spec.filename = "disk.img";
  spec.format = "file";
  spec.aio = "threads";
  const json got = options(spec);
  EXPECT_EQ(got["driver"], "file");
  EXPECT_EQ(got["filename"], "disk.img");
  EXPECT_EQ(got["aio"], "threads");
  EXPECT_FALSE(got.contains("file"));
}

TEST(ImageOptions, ImageOptsTextWinsOverFlags) {
  ImageSpec spec;
  spec.image_opts = true;
  spec.filename = "driver=raw,file.filename=x.img,read-only=on,cache.direct=on";
  spec.read_only = false;
  const json got = options(spec);
  EXPECT_EQ(got["read-only"], "on");
  EXPECT_EQ(got["cache"]["direct"], "on");
  EXPECT_EQ(got["cache"]["no-flush"], "off");
  // A file child named by file name alone gets the file driver (no format probing involved).
  EXPECT_EQ(got["file"]["driver"], "file");
}

TEST(ImageOptions, ForceShareMustAgreeWithImageOpts) {
  ImageSpec spec;
  spec.image_opts = true;
  spec.force_share = true;
  spec.filename = "driver=raw,file.filename=x.img,force-share=off";
  auto r = image_options(spec, is_protocol);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "-U conflicts with image options");
  EXPECT_FALSE(check_image_spec(spec));

  spec.filename = "driver=raw,file.filename=x.img,force-share=on";
  EXPECT_TRUE(check_image_spec(spec));
}

TEST(ImageOptions, OpenOptionsWinOverFlagsAndDefaults) {
  // qemu-io's "open -o driver=null-co,discard=ignore x.img": the text decides, flags fill in.
  ImageSpec spec;
  spec.filename = "x.img";
  spec.read_only = true;
  spec.extra = {{"driver", "null-co"}, {"discard", "ignore"}, {"read-only", "off"}};
  const json got = options(spec);
  EXPECT_EQ(got["driver"], "null-co");
  EXPECT_EQ(got["discard"], "ignore");
  EXPECT_EQ(got["read-only"], "off");
  EXPECT_EQ(got["file"]["filename"], "x.img");
}

TEST(ImageOptions, FormatFlagDoesNotOverrideOpenOptions) {
  ImageSpec spec;
  spec.filename = "x.img";
  spec.format = "raw";
  spec.extra = {{"driver", "file"}};
  const json got = options(spec);
  EXPECT_EQ(got["driver"], "file");
  EXPECT_EQ(got["filename"], "x.img");  // a protocol driver takes the file name itself
}

}  // namespace
}  // namespace strata::tools
