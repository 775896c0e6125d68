// qcow2 creation: QEMU's option checks with their exact texts, the -o value conversion, and the
// layout of created images (where QEMU's allocator puts the L1 table, the refcount table when it
// must grow, and preallocated clusters). Byte-for-byte comparison with qemu-img itself is
// tests/interop/img_create_test.py.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "format/qcow2/entries.h"
#include "format/qcow2/layout.h"
#include "format/qcow2/qcow2_create.h"
#include "format/qcow2/refcount.h"
#include "strata/driver.h"

namespace strata::qcow2 {
namespace {

namespace fs = std::filesystem;

struct ValidationCase {
  const char* name;
  CreateOptions options;
  const char* error;  // nullptr: valid
};

CreateOptions with(void (*change)(CreateOptions&)) {
  CreateOptions o;
  o.size = 1 << 20;
  change(o);
  return o;
}

TEST(Qcow2CreateValidation, QemuTextsInQemuOrder) {
  const ValidationCase cases[] = {
      {"defaults", with([](CreateOptions&) {}), nullptr},
      {"extended l2 on v2", with([](CreateOptions& o) { o.version = 2, o.extended_l2 = true; }),
       "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
       "version=v3 or greater)"},
      {"cluster size not a power of two", with([](CreateOptions& o) { o.cluster_size = 3000; }),
       "Cluster size must be a power of two between 512 and 2048k"},
      {"cluster size too small", with([](CreateOptions& o) { o.cluster_size = 256; }),
       "Cluster size must be a power of two between 512 and 2048k"},
      {"cluster size too large", with([](CreateOptions& o) { o.cluster_size = 4 << 20; }),
       "Cluster size must be a power of two between 512 and 2048k"},
      {"extended l2 small clusters",
       with([](CreateOptions& o) { o.extended_l2 = true, o.cluster_size = 8192; }),
       "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"},
      {"extended l2 16k",
       with([](CreateOptions& o) { o.extended_l2 = true, o.cluster_size = 16384; }), nullptr},
      {"backing and preallocation", with([](CreateOptions& o) {
         o.backing_file = "b", o.preallocation = PreallocMode::kFalloc;
       }),
       "Backing file and preallocation can only be used at the same time if extended_l2 is on"},
      {"backing and preallocation with extended l2", with([](CreateOptions& o) {
         o.backing_file = "b", o.preallocation = PreallocMode::kMetadata, o.extended_l2 = true;
       }),
       nullptr},
      {"backing format alone", with([](CreateOptions& o) { o.backing_fmt = "raw"; }),
       "Backing format cannot be used without backing file"},
      {"lazy refcounts on v2",
       with([](CreateOptions& o) { o.version = 2, o.lazy_refcounts = true; }),
       "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or "
       "greater)"},
      {"refcount width 3", with([](CreateOptions& o) { o.refcount_bits = 3; }),
       "Refcount width must be a power of two and may not exceed 64 bits"},
      {"refcount width 128", with([](CreateOptions& o) { o.refcount_bits = 128; }),
       "Refcount width must be a power of two and may not exceed 64 bits"},
      {"refcount width 0", with([](CreateOptions& o) { o.refcount_bits = 0; }),
       "Refcount width must be a power of two and may not exceed 64 bits"},
      {"refcount width on v2", with([](CreateOptions& o) { o.version = 2, o.refcount_bits = 8; }),
       "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
       "version=v3 or greater)"},
      {"data-file-raw alone", with([](CreateOptions& o) { o.data_file_raw = true; }),
       "data-file-raw requires data-file"},
      {"data-file-raw with backing", with([](CreateOptions& o) {
         o.data_file = "d", o.data_file_raw = true, o.backing_file = "b";
       }),
       "Backing file and data-file-raw cannot be used at the same time"},
      {"data file on v2", with([](CreateOptions& o) { o.version = 2, o.data_file = "d"; }),
       "External data files are only supported with compatibility level 1.1 and above (use "
       "version=v3 or greater)"},
      {"zstd on v2",
       with([](CreateOptions& o) { o.version = 2, o.compression_type = CompressionType::kZstd; }),
       "Non-zlib compression type is only supported with compatibility level 1.1 and above (use "
       "version=v3 or greater)"},
      {"zlib named on v2",
       with([](CreateOptions& o) { o.version = 2, o.compression_type = CompressionType::kZlib; }),
       nullptr},
      // QEMU checks the version against extended L2 before the cluster size.
      {"first error wins",
       with([](CreateOptions& o) { o.version = 2, o.extended_l2 = true, o.cluster_size = 3; }),
       "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
       "version=v3 or greater)"},
  };
  for (const ValidationCase& c : cases) {
    CreateOptions o = c.options;
    Result<void> r = validate_create_options(o);
    if (c.error == nullptr) {
      EXPECT_TRUE(r) << c.name << ": " << r.error().message();
    } else {
      ASSERT_FALSE(r) << c.name;
      EXPECT_EQ(r.error().message(), c.error) << c.name;
      EXPECT_EQ(r.error().err(), EINVAL) << c.name;
    }
  }
}

TEST(Qcow2CreateValidation, DataFileRawForcesMetadataPreallocation) {
  CreateOptions o = with([](CreateOptions& o) { o.data_file = "d", o.data_file_raw = true; });
  ASSERT_TRUE(validate_create_options(o));
  EXPECT_EQ(o.preallocation, PreallocMode::kMetadata);
  o.preallocation = PreallocMode::kFull;
  ASSERT_TRUE(validate_create_options(o));
  EXPECT_EQ(o.preallocation, PreallocMode::kFull);
}

TEST(Qcow2CreateValues, EnumTextsAndConversions) {
  struct Case {
    CreateOptionValues values;
    const char* error;
  };
  const Case cases[] = {
      {{{"compat", "2"}}, "Parameter 'version' does not accept value '2'"},
      {{{"preallocation", "xyz"}}, "Parameter 'preallocation' does not accept value 'xyz'"},
      {{{"compression_type", "lz4"}}, "Parameter 'compression-type' does not accept value 'lz4'"},
      {{{"backing_fmt", "foo"}}, "Parameter 'backing-fmt' does not accept value 'foo'"},
  };
  for (const Case& c : cases) {
    Result<CreateOptions> r = create_options_from_values(c.values);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message(), c.error);
  }
  Result<CreateOptions> r = create_options_from_values({{"compat", "0.10"},
                                                        {"cluster_size", "4096"},
                                                        {"lazy_refcounts", "yes"},
                                                        {"refcount_bits", "8"},
                                                        {"preallocation", "falloc"},
                                                        {"compression_type", "zstd"},
                                                        {"backing_file", "b"},
                                                        {"backing_fmt", "qcow2"},
                                                        {"size", "1000"}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->version, 2u);
  EXPECT_EQ(r->cluster_size, 4096u);
  EXPECT_TRUE(r->lazy_refcounts);
  EXPECT_EQ(r->refcount_bits, 8u);
  EXPECT_EQ(r->preallocation, PreallocMode::kFalloc);
  EXPECT_EQ(r->compression_type, CompressionType::kZstd);
  EXPECT_EQ(r->backing_file, "b");
  EXPECT_EQ(r->backing_fmt, "qcow2");
  EXPECT_EQ(r->size, 1000u);
  Result<CreateOptions> v3 = create_options_from_values({{"compat", "v3"}});
  ASSERT_TRUE(v3);
  EXPECT_EQ(v3->version, 3u);
}

TEST(CreateBool, QemuSpellings) {
  for (const char* t : {"on", "yes", "true", "y"}) EXPECT_EQ(parse_create_bool(t), true) << t;
  for (const char* t : {"off", "no", "false", "n"}) EXPECT_EQ(parse_create_bool(t), false) << t;
  for (const char* t : {"", "ON", "1", "maybe"}) EXPECT_EQ(parse_create_bool(t), std::nullopt) << t;
}

TEST(ImageCreators, Registry) {
  ASSERT_NE(find_image_creator("qcow2"), nullptr);
  ASSERT_NE(find_image_creator("raw"), nullptr);
  EXPECT_EQ(find_image_creator("vmdk"), nullptr);
  EXPECT_TRUE(find_image_creator("qcow2")->supports_backing);
  EXPECT_FALSE(find_image_creator("raw")->supports_backing);
}

class Qcow2CreateFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/dev/shm/strata-create-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const char* name) const { return (dir_ / name).string(); }
  std::vector<uint8_t> read(const char* name) const {
    std::ifstream in(path(name), std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  uint64_t refcount_of(const std::vector<uint8_t>& f, const Header& h, uint64_t cluster) const {
    const uint64_t per_block = refcounts_per_block(h.cluster_bits, h.refcount_order);
    const uint64_t block =
        load_be64(&f[h.refcount_table_offset + cluster / per_block * 8]) & kOffsetMask;
    if (block == 0) return 0;
    std::span<const uint8_t> b(&f[block], h.cluster_size());
    return refcount_get(b, cluster % per_block, h.refcount_order);
  }

  fs::path dir_;
};

TEST_F(Qcow2CreateFile, DefaultLayoutIsQemus) {
  CreateOptions o;
  o.size = 64 << 20;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_TRUE(l) << l.error().message();
  // Header, refcount table, refcount block, then an 8-byte L1 table in cluster 3.
  EXPECT_EQ(l->refcount_table_offset, 0x10000u);
  EXPECT_EQ(l->l1_table_offset, 0x30000u);
  EXPECT_EQ(l->l1_size, 1u);
  EXPECT_EQ(fs::file_size(path("a.qcow2")), 0x30008u);
  const std::vector<uint8_t> f = read("a.qcow2");
  Result<Header> h = decode_header(std::span(f).first(0x10000));
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(h->size, 64u << 20);
  EXPECT_EQ(h->header_length, kV3FullHeaderLength);
  for (uint64_t c = 0; c < 4; ++c) EXPECT_EQ(refcount_of(f, *h, c), 1u) << c;
  EXPECT_EQ(refcount_of(f, *h, 4), 0u);
}

TEST_F(Qcow2CreateFile, SizeRoundsUpToSectors) {
  CreateOptions o;
  o.size = 1000;
  ASSERT_TRUE(create_qcow2(path("a.qcow2"), o));
  const std::vector<uint8_t> f = read("a.qcow2");
  EXPECT_EQ(load_be64(&f[24]), 1024u);
}

// 512-byte clusters with 64-bit refcounts: one refcount block covers 64 clusters, so the L1
// table of a 200 MiB image outgrows it and QEMU moves the refcount table.
TEST_F(Qcow2CreateFile, RefcountTableGrowsAsQemus) {
  CreateOptions o;
  o.size = 200 << 20;
  o.cluster_size = 512;
  o.refcount_bits = 64;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->l1_table_offset, 0x600u);
  EXPECT_EQ(l->l1_size, 6400u);
  EXPECT_EQ(l->refcount_table_offset, 0x200u);  // the old table's cluster, hooked up in place
  EXPECT_EQ(l->file_length, 0xd000u);
  const std::vector<uint8_t> f = read("a.qcow2");
  EXPECT_EQ(load_be64(&f[0x200]), 0x400u);
  EXPECT_EQ(load_be64(&f[0x208]), 0xce00u);
}

TEST_F(Qcow2CreateFile, FallocMovesTheRefcountTableAndMapsEveryCluster) {
  CreateOptions o;
  o.size = 3 << 20;
  o.preallocation = PreallocMode::kFalloc;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->refcount_table_offset, 0x40000u);
  EXPECT_EQ(l->file_length, 0x350000u);
  const std::vector<uint8_t> f = read("a.qcow2");
  const uint64_t l2 = load_be64(&f[0x30000]);
  EXPECT_EQ(l2, kOflagCopied | 0x10000);  // in the freed cluster of the first table
  for (uint64_t i = 0; i < 48; ++i) {
    EXPECT_EQ(load_be64(&f[0x10000 + i * 8]), kOflagCopied | (0x50000 + i * 0x10000)) << i;
  }
}

TEST_F(Qcow2CreateFile, MetadataPreallocationPutsEachL2BeforeItsData) {
  CreateOptions o;
  o.size = 300 << 10;
  o.extended_l2 = true;
  o.preallocation = PreallocMode::kMetadata;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_TRUE(l) << l.error().message();
  const std::vector<uint8_t> f = read("a.qcow2");
  EXPECT_EQ(load_be64(&f[0x30000]), kOflagCopied | 0x40000);
  for (uint64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(load_be64(&f[0x40000 + i * 16]), kOflagCopied | (0x50000 + i * 0x10000)) << i;
    EXPECT_EQ(load_be64(&f[0x40000 + i * 16 + 8]), 0u) << i;  // no subcluster marked
  }
  // The file ends where the data does: the size ends on a subcluster boundary.
  EXPECT_EQ(l->file_length, 0x90000u + (300 << 10) - 4 * 0x10000);
}

TEST_F(Qcow2CreateFile, FailureRemovesTheFiles) {
  { std::ofstream(path("a.qcow2")) << "old"; }
  CreateOptions o;
  o.size = 1 << 20;
  o.data_file = path("a.data");
  o.version = 2;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_FALSE(l);
  EXPECT_FALSE(fs::exists(path("a.qcow2")));
  EXPECT_FALSE(fs::exists(path("a.data")));
}

TEST_F(Qcow2CreateFile, TooLargeIsEfbig) {
  CreateOptions o;
  o.size = 100ull << 40;
  o.cluster_size = 512;
  Result<CreateLayout> l = create_qcow2(path("a.qcow2"), o);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().err(), EFBIG);
}

}  // namespace
}  // namespace strata::qcow2
