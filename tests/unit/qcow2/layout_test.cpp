// The qcow2 header: decode validation (every error, with QEMU's text and errno), encode/decode
// round trips, QEMU's extension order.
#include "format/qcow2/layout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

namespace strata::qcow2 {
namespace {

// A consistent small image header: 64 KiB clusters, 1 MiB, refcount table in cluster 1, L1
// table in cluster 3.
Header base_header() {
  Header h;
  h.version = 3;
  h.cluster_bits = 16;
  h.size = 1 << 20;
  h.l1_size = 1;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.header_length = kV3FullHeaderLength;
  h.feature_names = known_feature_names();
  return h;
}

// The first cluster as written: encode, padded with zeroes.
std::vector<uint8_t> cluster_of(const Header& h) {
  Result<std::vector<uint8_t>> bytes = encode_header(h);
  EXPECT_TRUE(bytes) << bytes.error().message();
  std::vector<uint8_t> out = bytes ? *bytes : std::vector<uint8_t>{};
  out.resize(h.cluster_size(), 0);
  return out;
}

std::vector<uint8_t> be64_bytes(std::initializer_list<uint64_t> values) {
  std::vector<uint8_t> out;
  for (uint64_t v : values) {
    out.resize(out.size() + 8);
    store_be64(&out[out.size() - 8], v);
  }
  return out;
}

// Bitmaps extension payload: nb_bitmaps, reserved, directory size, directory offset.
std::vector<uint8_t> bitmaps_ext(uint32_t nb, uint32_t reserved, uint64_t dir_size,
                                 uint64_t dir_offset) {
  std::vector<uint8_t> out(24);
  store_be32(&out[0], nb);
  store_be32(&out[4], reserved);
  store_be64(&out[8], dir_size);
  store_be64(&out[16], dir_offset);
  return out;
}

struct ErrorCase {
  const char* what;
  std::function<void(Header&)> edit_header;         // before encoding
  std::function<void(std::vector<uint8_t>&)> edit;  // on the encoded bytes
  int err;
  const char* message;
};

void no_header_edit(Header&) {}
void no_byte_edit(std::vector<uint8_t>&) {}

const ErrorCase kErrorCases[] = {
    {"magic", no_header_edit, [](auto& b) { b[3] = 0; }, EINVAL, "Image is not in qcow2 format"},
    {"version 1", no_header_edit, [](auto& b) { store_be32(&b[4], 1); }, ENOTSUP,
     "Unsupported qcow2 version 1"},
    {"version 4", no_header_edit, [](auto& b) { store_be32(&b[4], 4); }, ENOTSUP,
     "Unsupported qcow2 version 4"},
    {"cluster bits 8", no_header_edit, [](auto& b) { store_be32(&b[20], 8); }, EINVAL,
     "Unsupported cluster size: 2^8"},
    {"cluster bits 22", no_header_edit, [](auto& b) { store_be32(&b[20], 22); }, EINVAL,
     "Unsupported cluster size: 2^22"},
    {"header_length 96", no_header_edit, [](auto& b) { store_be32(&b[100], 96); }, EINVAL,
     "qcow2 header too short"},
    {"header_length over cluster", [](Header& h) { h.cluster_bits = 9; },
     [](auto& b) { store_be32(&b[100], 1024); }, EINVAL, "qcow2 header exceeds cluster size"},
    {"backing offset", no_header_edit, [](auto& b) { store_be64(&b[8], 0x10001); }, EINVAL,
     "Invalid backing file offset"},
    {"compression type 2", no_header_edit, [](auto& b) { b[104] = 2; }, ENOTSUP,
     "qcow2: unknown compression type: 2"},
    {"zlib with compression bit",
     [](Header& h) { h.incompatible_features = incompat::kCompressionType; }, no_byte_edit, EINVAL,
     "qcow2: Compression type incompatible feature bit must not be set"},
    {"zstd without compression bit", [](Header& h) { h.compression_type = CompressionType::kZstd; },
     no_byte_edit, EINVAL, "qcow2: Compression type incompatible feature bit must be set"},
    {"unknown incompatible bit", [](Header& h) { h.incompatible_features = 1ull << 5; },
     no_byte_edit, ENOTSUP, "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"},
    {"unknown incompatible bits, feature table of 512-byte clusters is not written",
     [](Header& h) {
       h.cluster_bits = 9;
       h.l1_size = 32;
       h.l1_table_offset = 0x600;
       h.refcount_table_offset = 0x200;
       h.incompatible_features = (1ull << 5) | (1ull << 63);
     },
     no_byte_edit, ENOTSUP,
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000020"},
    {"unknown incompatible bits named by the image's table",
     [](Header& h) {
       h.incompatible_features = (1ull << 5) | (1ull << 6) | incompat::kDirty;
       std::vector<uint8_t> table(96, 0);
       table[1] = 6;
       std::memcpy(&table[2], "sixth", 5);
       table[48 + 1] = 5;
       std::memcpy(&table[50], "fifth", 5);
       h.other_extensions.push_back({ext::kFeatureTable, table});
     },
     no_byte_edit, ENOTSUP, "Unsupported qcow2 feature(s): sixth, fifth"},
    {"unknown bit named, one not",
     [](Header& h) {
       h.incompatible_features = (1ull << 5) | (1ull << 6);
       std::vector<uint8_t> table(48, 0);
       table[1] = 5;
       std::memcpy(&table[2], "fifth", 5);
       h.other_extensions.push_back({ext::kFeatureTable, table});
     },
     no_byte_edit, ENOTSUP,
     "Unsupported qcow2 feature(s): fifth, Unknown incompatible feature: 40"},
    {"extended L2 with 8 KiB clusters",
     [](Header& h) {
       h.cluster_bits = 13;
       h.l1_size = 2;
       h.incompatible_features = incompat::kExtendedL2;
     },
     no_byte_edit, EINVAL, "Unsupported subcluster size: 256"},
    {"refcount order 7", [](Header& h) { h.refcount_order = 7; }, no_byte_edit, EINVAL,
     "Reference count entry width too large; may not exceed 64 bits"},
    {"no refcount table", [](Header& h) { h.refcount_table_clusters = 0; }, no_byte_edit, EINVAL,
     "Image does not contain a reference count table"},
    {"refcount table too large", [](Header& h) { h.refcount_table_clusters = 129; }, no_byte_edit,
     EFBIG, "Reference count table too large"},
    {"refcount table unaligned", [](Header& h) { h.refcount_table_offset = 0x10200; }, no_byte_edit,
     EINVAL, "Reference count table offset invalid"},
    {"refcount table past INT64_MAX",
     [](Header& h) { h.refcount_table_offset = 0x7fffffffffff0000ull; }, no_byte_edit, EINVAL,
     "Reference count table offset invalid"},
    {"too many snapshots", [](Header& h) { h.nb_snapshots = 65537; }, no_byte_edit, EFBIG,
     "Snapshot table too large"},
    {"snapshot table unaligned",
     [](Header& h) {
       h.nb_snapshots = 1;
       h.snapshots_offset = 0x40008;
     },
     no_byte_edit, EINVAL, "Snapshot table offset invalid"},
    {"L1 too large", [](Header& h) { h.l1_size = 4194305; }, no_byte_edit, EFBIG,
     "Active L1 table too large"},
    {"L1 unaligned", [](Header& h) { h.l1_table_offset = 0x30008; }, no_byte_edit, EINVAL,
     "Active L1 table offset invalid"},
    {"image too big",
     [](Header& h) {
       h.cluster_bits = 9;
       h.refcount_table_offset = 0x200;
       h.l1_table_offset = 0x600;
       h.size = 1ull << 62;
     },
     no_byte_edit, EFBIG, "Image is too big"},
    {"L1 too small", [](Header& h) { h.size = (512ull << 20) + 1; }, no_byte_edit, EINVAL,
     "L1 table is too small"},
    {"extension too large",
     [](Header& h) {
       h.other_extensions.push_back({0x12345678, {1, 2}});
     },
     [](auto& b) { store_be32(&b[112 + 4], 0x10000); }, EINVAL, "Header extension too large"},
    {"extension header past a backing file offset",
     [](Header& h) { h.backing_file = "base.qcow2"; }, [](auto& b) { store_be64(&b[8], 116); },
     EINVAL, "Header extension too large"},
    {"backing format too long", [](Header& h) { h.backing_format = "0123456789abcdef"; },
     no_byte_edit, EINVAL, "ERROR: ext_backing_format: len=16 too large (>=16)"},
    {"crypto extension without LUKS",
     [](Header& h) {
       h.other_extensions.push_back({ext::kCryptoHeader, be64_bytes({0x10000, 1})});
     },
     no_byte_edit, EINVAL, "CRYPTO header extension only expected with LUKS encryption method"},
    {"crypto extension size",
     [](Header& h) {
       h.crypt_method = 2;
       h.other_extensions.push_back({ext::kCryptoHeader, be64_bytes({0x10000})});
     },
     no_byte_edit, EINVAL, "CRYPTO header extension size 8, but expected size 16"},
    {"crypto header unaligned",
     [](Header& h) {
       h.crypt_method = 2;
       h.other_extensions.push_back({ext::kCryptoHeader, be64_bytes({4097, 1})});
     },
     no_byte_edit, EINVAL,
     "Encryption header offset '4097' is not a multiple of cluster size '65536'"},
    {"bitmaps extension length",
     [](Header& h) {
       h.other_extensions.push_back({ext::kBitmaps, be64_bytes({1, 2})});
     },
     no_byte_edit, EINVAL, "bitmaps_ext: Invalid extension length"},
    {"bitmaps reserved",
     [](Header& h) {
       h.autoclear_features = autoclear::kBitmaps;
       h.other_extensions.push_back({ext::kBitmaps, bitmaps_ext(1, 1, 64, 0x40000)});
     },
     no_byte_edit, EINVAL, "bitmaps_ext: Reserved field is not zero"},
    {"too many bitmaps",
     [](Header& h) {
       h.autoclear_features = autoclear::kBitmaps;
       h.other_extensions.push_back({ext::kBitmaps, bitmaps_ext(65536, 0, 64, 0x40000)});
     },
     no_byte_edit, EINVAL,
     "bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535"},
    {"zero bitmaps",
     [](Header& h) {
       h.autoclear_features = autoclear::kBitmaps;
       h.other_extensions.push_back({ext::kBitmaps, bitmaps_ext(0, 0, 64, 0x40000)});
     },
     no_byte_edit, EINVAL, "found bitmaps extension with zero bitmaps"},
    {"bitmap directory unaligned",
     [](Header& h) {
       h.autoclear_features = autoclear::kBitmaps;
       h.other_extensions.push_back({ext::kBitmaps, bitmaps_ext(1, 0, 64, 0x40200)});
     },
     no_byte_edit, EINVAL, "bitmaps_ext: invalid bitmap directory offset"},
    {"bitmap directory too large",
     [](Header& h) {
       h.autoclear_features = autoclear::kBitmaps;
       h.other_extensions.push_back({ext::kBitmaps, bitmaps_ext(1, 0, 67107841, 0x40000)});
     },
     no_byte_edit, EINVAL,
     "bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size "
     "(67107840)"},
    {"data-file-raw without data file",
     [](Header& h) { h.autoclear_features = autoclear::kDataFileRaw; }, no_byte_edit, EINVAL,
     "data-file-raw requires a data file"},
    {"backing file name over 1023 bytes", [](Header& h) { h.backing_file = "base"; },
     [](auto& b) { store_be32(&b[16], 1024); }, EINVAL, "Backing file name too long"},
    {"backing file name past the cluster",
     [](Header& h) {
       h.cluster_bits = 9;
       h.l1_size = 32;
       h.l1_table_offset = 0x600;
       h.refcount_table_offset = 0x200;
       h.backing_file = "base";
     },
     [](auto& b) { store_be32(&b[16], 512 - 120 + 1); }, EINVAL, "Backing file name too long"},
};

TEST(Qcow2Layout, EveryDecodeErrorHasQemusTextAndErrno) {
  for (const ErrorCase& c : kErrorCases) {
    Header h = base_header();
    c.edit_header(h);
    std::vector<uint8_t> bytes = cluster_of(h);
    c.edit(bytes);
    Result<Header> decoded = decode_header(bytes);
    ASSERT_FALSE(decoded) << c.what;
    EXPECT_EQ(decoded.error().message(), c.message) << c.what;
    EXPECT_EQ(decoded.error().err(), c.err) << c.what;
  }
}

TEST(Qcow2Layout, CheckModeAllowsMissingRefcountTableAndBadSnapshotPointer) {
  Header h = base_header();
  h.refcount_table_clusters = 0;
  h.nb_snapshots = 70000;
  h.snapshots_offset = 0x123;
  EXPECT_FALSE(decode_header(cluster_of(h)));
  Result<Header> checked = decode_header(cluster_of(h), /*check_mode=*/true);
  ASSERT_TRUE(checked) << checked.error().message();
  EXPECT_EQ(checked->nb_snapshots, 70000u);
}

TEST(Qcow2Layout, PeekClusterBits) {
  std::vector<uint8_t> bytes = cluster_of(base_header());
  Result<uint32_t> bits = peek_cluster_bits(std::span(bytes).first(24));
  ASSERT_TRUE(bits);
  EXPECT_EQ(*bits, 16u);
  store_be32(&bytes[20], 30);
  EXPECT_EQ(peek_cluster_bits(bytes).error().message(), "Unsupported cluster size: 2^30");
  bytes[0] = 0;
  EXPECT_EQ(peek_cluster_bits(bytes).error().message(), "Image is not in qcow2 format");
}

TEST(Qcow2Layout, V2DecodesWithV3Defaults) {
  Header h = base_header();
  h.version = 2;
  h.backing_file = "base.img";
  h.backing_format = "raw";
  std::vector<uint8_t> bytes = cluster_of(h);
  Result<Header> d = decode_header(bytes);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->version, 2u);
  EXPECT_EQ(d->refcount_order, 4u);
  EXPECT_EQ(d->header_length, kV2HeaderLength);
  EXPECT_EQ(d->incompatible_features, 0u);
  EXPECT_EQ(d->backing_file, "base.img");
  EXPECT_EQ(d->backing_format, "raw");
  EXPECT_TRUE(d->feature_names.empty());  // v2 has no feature table
}

TEST(Qcow2Layout, ShortInputReadsAsZeroes) {
  Header h = base_header();
  h.version = 2;
  std::vector<uint8_t> bytes = cluster_of(h);
  bytes.resize(kV2HeaderLength);
  Result<Header> d = decode_header(bytes);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->size, h.size);
  EXPECT_FALSE(decode_header(std::span(bytes).first(3)));
}

TEST(Qcow2Layout, RoundTripWithEveryExtension) {
  Header h = base_header();
  h.incompatible_features =
      incompat::kDataFile | incompat::kCompressionType | incompat::kExtendedL2;
  h.compatible_features = compat::kLazyRefcounts;
  h.autoclear_features = autoclear::kBitmaps | (1ull << 7);  // unknown autoclear bits are kept
  h.compression_type = CompressionType::kZstd;
  h.refcount_order = 6;
  h.crypt_method = 2;
  h.backing_file = "../base image.qcow2";
  h.backing_format = "qcow2";
  h.data_file = "data.raw";
  h.unknown_header_fields = {1, 2, 3, 4, 5, 6, 7, 8};
  h.header_length = kV3FullHeaderLength + 8;
  h.other_extensions = {
      {0x0badc0de, {9, 8, 7}},
      {ext::kBitmaps, bitmaps_ext(2, 0, 128, 0x50000)},
      {ext::kCryptoHeader, be64_bytes({0x60000, 0x1000})},
      {0x0badc0df, {}},
  };
  std::vector<uint8_t> bytes = cluster_of(h);
  Result<Header> d = decode_header(bytes);
  ASSERT_TRUE(d) << d.error().message();
  // Decoding gives the extensions in QEMU's write order: crypto, bitmaps, then unknown ones.
  Header want = h;
  want.other_extensions = {h.other_extensions[2], h.other_extensions[1], h.other_extensions[0],
                           h.other_extensions[3]};
  EXPECT_EQ(*d, want);
  // And encoding what was decoded gives the same bytes.
  std::vector<uint8_t> again = cluster_of(*d);
  EXPECT_EQ(again, bytes);
}

TEST(Qcow2Layout, EncodeLayoutMatchesQemus) {
  Header h = base_header();
  h.backing_file = "b";
  h.backing_format = "raw";
  Result<std::vector<uint8_t>> bytes = encode_header(h);
  ASSERT_TRUE(bytes);
  const std::vector<uint8_t>& b = *bytes;
  EXPECT_EQ(load_be32(&b[100]), 112u);  // header_length
  EXPECT_EQ(load_be32(&b[112]), ext::kBackingFormat);
  EXPECT_EQ(load_be32(&b[116]), 3u);
  EXPECT_EQ(load_be32(&b[128]), ext::kFeatureTable);
  EXPECT_EQ(load_be32(&b[132]), 8u * 48);
  const size_t end = 128 + 8 + 8 * 48;
  EXPECT_EQ(load_be64(&b[end]), 0u);  // end marker
  EXPECT_EQ(load_be64(&b[8]), end + 8);
  EXPECT_EQ(load_be32(&b[16]), 1u);
  EXPECT_EQ(b.size(), end + 8 + 1);
  EXPECT_EQ(b.back(), 'b');
}

TEST(Qcow2Layout, DataFileNameIsWrittenOnlyWithTheDataFileBit) {
  Header h = base_header();
  h.data_file = "x.raw";
  Result<Header> d = decode_header(cluster_of(h));
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->data_file);
}

TEST(Qcow2Layout, BitmapsExtensionWithoutAutoclearBitIsDropped) {
  Header h = base_header();
  h.other_extensions = {{ext::kBitmaps, bitmaps_ext(1, 0, 64, 0x40000)}, {0x1234, {1}}};
  Result<Header> d = decode_header(cluster_of(h));
  ASSERT_TRUE(d) << d.error().message();
  ASSERT_EQ(d->other_extensions.size(), 1u);
  EXPECT_EQ(d->other_extensions[0].type, 0x1234u);
}

TEST(Qcow2Layout, EncodeFailsWhenItDoesNotFit) {
  Header h = base_header();
  h.cluster_bits = 9;
  h.backing_file = std::string(400, 'a');  // 112 + 8 + 400 > 512
  Result<std::vector<uint8_t>> r = encode_header(h);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ENOSPC);
  h.backing_file = std::string(392, 'a');  // exactly 512
  ASSERT_TRUE(encode_header(h));
  EXPECT_EQ(encode_header(h)->size(), 512u);

  Header big = base_header();
  big.backing_file = std::string(1024, 'a');
  EXPECT_EQ(encode_header(big).error().message(), "Backing file name too long");
}

TEST(Qcow2Layout, KnownFeatureNamesAreQemus) {
  std::vector<FeatureName> names = known_feature_names();
  ASSERT_EQ(names.size(), 8u);
  EXPECT_EQ(names[0], (FeatureName{FeatureType::kIncompatible, 0, "dirty bit"}));
  EXPECT_EQ(names[4], (FeatureName{FeatureType::kIncompatible, 4, "extended L2 entries"}));
  EXPECT_EQ(names[5], (FeatureName{FeatureType::kCompatible, 0, "lazy refcounts"}));
  EXPECT_EQ(names[7], (FeatureName{FeatureType::kAutoclear, 1, "raw external data"}));
}

}  // namespace
}  // namespace strata::qcow2
