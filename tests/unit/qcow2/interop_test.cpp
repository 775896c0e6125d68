// Interop with QEMU 7.2: decode what qemu-img creates, re-encode it byte for byte, read its
// snapshot tables and compressed clusters. Skipped when qemu-img is not installed.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "format/qcow2/compress.h"
#include "format/qcow2/entries.h"
#include "format/qcow2/layout.h"
#include "format/qcow2/refcount.h"
#include "format/qcow2/snapshot.h"

namespace strata::qcow2 {
namespace {

namespace fs = std::filesystem;

bool have_qemu_tools() {
  return std::system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1") ==
         0;
}

// A fresh directory under /tmp, removed at the end of the test.
class QemuImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_qemu_tools()) GTEST_SKIP() << "qemu-img/qemu-io not installed";
    char templ[] = "/tmp/strata-qcow2-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs a shell command in the test directory; fails the test if it does not succeed.
  void run(const std::string& command) const {
    std::string full = "cd '" + dir_.string() + "' && " + command + " >/dev/null";
    ASSERT_EQ(std::system(full.c_str()), 0) << command;
  }

  std::vector<uint8_t> read(const std::string& name, uint64_t offset, uint64_t len) const {
    std::ifstream in(path(name), std::ios::binary);
    std::vector<uint8_t> out(len);
    in.seekg(std::streamoff(offset));
    in.read(reinterpret_cast<char*>(out.data()), std::streamsize(len));
    out.resize(size_t(in.gcount()));
    return out;
  }

  uint64_t file_size(const std::string& name) const { return fs::file_size(path(name)); }

  Header decode(const std::string& name) {
    std::vector<uint8_t> start = read(name, 0, 4096);
    Result<uint32_t> bits = peek_cluster_bits(start);
    EXPECT_TRUE(bits) << bits.error().message();
    std::vector<uint8_t> cluster0 = read(name, 0, uint64_t{1} << (bits ? *bits : 9));
    Result<Header> h = decode_header(cluster0);
    EXPECT_TRUE(h) << h.error().message();
    return h ? *h : Header{};
  }

  fs::path dir_;
};

struct CreateCase {
  const char* name;
  const char* options;  // qemu-img create arguments before the file name
  std::function<void(const Header&)> check;
};

const CreateCase kCreateCases[] = {
    {"compat 0.10", "-o compat=0.10",
     [](const Header& h) {
       EXPECT_EQ(h.version, 2u);
       EXPECT_EQ(h.header_length, 72u);
       EXPECT_EQ(h.refcount_order, 4u);
       EXPECT_TRUE(h.feature_names.empty());
     }},
    {"compat 1.1", "-o compat=1.1",
     [](const Header& h) {
       EXPECT_EQ(h.version, 3u);
       EXPECT_EQ(h.header_length, 112u);
       EXPECT_EQ(h.cluster_bits, 16u);
       EXPECT_EQ(h.feature_names, known_feature_names());
       EXPECT_EQ(h.incompatible_features, 0u);
     }},
    {"512-byte clusters", "-o cluster_size=512",
     [](const Header& h) {
       EXPECT_EQ(h.cluster_bits, 9u);
       EXPECT_TRUE(h.feature_names.empty());  // QEMU leaves the table out for small clusters
     }},
    {"2 MiB clusters", "-o cluster_size=2M",
     [](const Header& h) { EXPECT_EQ(h.cluster_bits, 21u); }},
    {"refcount_bits 1", "-o refcount_bits=1",
     [](const Header& h) { EXPECT_EQ(h.refcount_order, 0u); }},
    {"refcount_bits 16", "-o refcount_bits=16",
     [](const Header& h) { EXPECT_EQ(h.refcount_order, 4u); }},
    {"refcount_bits 64", "-o refcount_bits=64",
     [](const Header& h) { EXPECT_EQ(h.refcount_order, 6u); }},
    {"lazy refcounts", "-o lazy_refcounts=on",
     [](const Header& h) { EXPECT_EQ(h.compatible_features, compat::kLazyRefcounts); }},
    {"extended L2", "-o extended_l2=on",
     [](const Header& h) {
       EXPECT_EQ(h.incompatible_features, incompat::kExtendedL2);
       EXPECT_TRUE(h.extended_l2());
     }},
    {"zstd", "-o compression_type=zstd",
     [](const Header& h) {
       EXPECT_EQ(h.incompatible_features, incompat::kCompressionType);
       EXPECT_EQ(h.compression_type, CompressionType::kZstd);
     }},
    {"backing file with format", "-b base.qcow2 -F qcow2",
     [](const Header& h) {
       EXPECT_EQ(h.backing_file, "base.qcow2");
       EXPECT_EQ(h.backing_format, "qcow2");
     }},
    {"v2 backing file with format", "-o compat=0.10 -b base.raw -F raw",
     [](const Header& h) {
       EXPECT_EQ(h.version, 2u);
       EXPECT_EQ(h.backing_file, "base.raw");
       EXPECT_EQ(h.backing_format, "raw");
     }},
    {"512-byte clusters with backing file", "-o cluster_size=512 -b base.qcow2 -F qcow2",
     [](const Header& h) { EXPECT_EQ(h.backing_file, "base.qcow2"); }},
    {"data file, raw", "-o data_file=data.raw,data_file_raw=on",
     [](const Header& h) {
       EXPECT_EQ(h.incompatible_features, incompat::kDataFile);
       EXPECT_EQ(h.autoclear_features, autoclear::kDataFileRaw);
       EXPECT_EQ(h.data_file, "data.raw");
     }},
    {"everything v3 at once",
     "-o extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=64,"
     "cluster_size=128k,data_file=d2.raw -b base.qcow2 -F qcow2",
     [](const Header& h) {
       EXPECT_EQ(h.incompatible_features,
                 incompat::kExtendedL2 | incompat::kCompressionType | incompat::kDataFile);
       EXPECT_EQ(h.cluster_bits, 17u);
       EXPECT_EQ(h.data_file, "d2.raw");
       EXPECT_EQ(h.backing_format, "qcow2");
     }},
};

TEST_F(QemuImageTest, HeadersDecodeAndReencodeByteForByte) {
  run("qemu-img create -q -f qcow2 base.qcow2 1M && qemu-img create -q -f raw base.raw 1M");
  for (const CreateCase& c : kCreateCases) {
    SCOPED_TRACE(c.name);
    run(std::string("qemu-img create -q -f qcow2 ") + c.options + " img.qcow2 1M");
    Header h = decode("img.qcow2");
    EXPECT_EQ(h.size, 1u << 20);
    EXPECT_GT(h.refcount_table_clusters, 0u);
    c.check(h);

    Result<std::vector<uint8_t>> encoded = encode_header(h);
    ASSERT_TRUE(encoded) << encoded.error().message();
    std::vector<uint8_t> on_disk = read("img.qcow2", 0, h.cluster_size());
    ASSERT_GE(on_disk.size(), encoded->size());
    EXPECT_TRUE(std::equal(encoded->begin(), encoded->end(), on_disk.begin()));
    EXPECT_TRUE(std::all_of(on_disk.begin() + std::ptrdiff_t(encoded->size()), on_disk.end(),
                            [](uint8_t b) { return b == 0; }));
    fs::remove(path("img.qcow2"));
  }
}

// Every cluster of a fresh image is in use once, in the refcount width QEMU chose: checks the
// bit order of sub-byte widths against QEMU's.
TEST_F(QemuImageTest, RefcountsOfAFreshImageAtSeveralWidths) {
  for (const char* bits : {"1", "2", "4", "8", "16", "32", "64"}) {
    SCOPED_TRACE(bits);
    run(std::string("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=") + bits +
        " r.qcow2 64k");
    Header h = decode("r.qcow2");
    const uint64_t cs = h.cluster_size();
    std::vector<uint8_t> reftable = read("r.qcow2", h.refcount_table_offset, 8);
    ASSERT_EQ(reftable.size(), 8u);
    std::vector<uint8_t> block = read("r.qcow2", load_be64(reftable.data()), cs);
    ASSERT_EQ(block.size(), cs);
    const uint64_t used = (file_size("r.qcow2") + cs - 1) / cs;
    ASSERT_GE(used, 4u);
    for (uint64_t i = 0; i < used; ++i) EXPECT_EQ(refcount_get(block, i, h.refcount_order), 1u);
    EXPECT_EQ(refcount_get(block, used, h.refcount_order), 0u);
    fs::remove(path("r.qcow2"));
  }
}

TEST_F(QemuImageTest, SnapshotTableDecodesAndReencodes) {
  run("qemu-img create -q -f qcow2 s.qcow2 1M");
  run("qemu-io -c 'write -P 0x11 0 64k' s.qcow2");
  run("qemu-img snapshot -c first s.qcow2");
  run("qemu-img snapshot -c 'second snapshot' s.qcow2");
  Header h = decode("s.qcow2");
  ASSERT_EQ(h.nb_snapshots, 2u);

  std::vector<uint8_t> table;
  uint64_t need = 0;
  while ((need = snapshot_table_bytes(table, h.nb_snapshots)) > table.size()) {
    table = read("s.qcow2", h.snapshots_offset, need);
    ASSERT_EQ(table.size(), need);
  }
  Result<std::vector<Snapshot>> snaps = decode_snapshot_table(table, h.nb_snapshots, h.version);
  ASSERT_TRUE(snaps) << snaps.error().message();
  ASSERT_EQ(snaps->size(), 2u);
  const Snapshot& a = (*snaps)[0];
  const Snapshot& b = (*snaps)[1];
  EXPECT_EQ(a.id, "1");
  EXPECT_EQ(a.name, "first");
  EXPECT_EQ(b.id, "2");
  EXPECT_EQ(b.name, "second snapshot");
  EXPECT_EQ(a.l1_size, h.l1_size);
  EXPECT_NE(a.l1_table_offset, h.l1_table_offset);
  EXPECT_EQ(a.l1_table_offset % h.cluster_size(), 0u);
  EXPECT_EQ(a.disk_size, 1u << 20);
  EXPECT_EQ(a.vm_state_size, 0u);
  EXPECT_EQ(a.extra_data.size(), 24u);
  EXPECT_GT(a.date_sec, 1600000000u);
  EXPECT_FALSE(snapshot_entry_incomplete(a, h.version));
  EXPECT_EQ(encode_snapshot_table(*snaps), table);
}

// Guest data the compressed-cluster test writes: per cluster, compressible text, random bytes
// (stored uncompressed), zeroes (left unallocated) and text again.
std::vector<uint8_t> guest_data(uint64_t cluster_size) {
  std::vector<uint8_t> data(4 * cluster_size, 0);
  std::mt19937 rng(7);
  const std::string words = "strata qcow2 compressed cluster interop ";
  for (uint64_t i = 0; i < cluster_size; ++i) {
    data[i] = uint8_t(words[(i * 7 / 5) % words.size()]);
    data[cluster_size + i] = uint8_t(rng());
    data[3 * cluster_size + i] = uint8_t('0' + (i / 13) % 10);
  }
  return data;
}

struct CompressedCase {
  const char* type_option;
  CompressionType type;
  uint64_t cluster_size;
};

TEST_F(QemuImageTest, CompressedClustersDecompress) {
  const CompressedCase cases[] = {
      {"zlib", CompressionType::kZlib, 65536},
      {"zstd", CompressionType::kZstd, 65536},
      {"zlib", CompressionType::kZlib, 4096},
      {"zstd", CompressionType::kZstd, 2097152},
  };
  for (const CompressedCase& c : cases) {
    SCOPED_TRACE(std::string(c.type_option) + " " + std::to_string(c.cluster_size));
    const std::vector<uint8_t> data = guest_data(c.cluster_size);
    {
      std::ofstream out(path("src.raw"), std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    }
    run(std::string("qemu-img convert -c -f raw -O qcow2 -o compression_type=") + c.type_option +
        ",cluster_size=" + std::to_string(c.cluster_size) + " src.raw c.qcow2");
    Header h = decode("c.qcow2");
    ASSERT_EQ(h.compression_type, c.type);
    const uint64_t cs = h.cluster_size();
    const uint64_t l2_entries = cs / 8;

    std::vector<uint8_t> l1 = read("c.qcow2", h.l1_table_offset, 8);
    ASSERT_EQ(l1.size(), 8u);
    uint64_t l2_offset = entry_offset(load_be64(l1.data()));
    ASSERT_NE(l2_offset, 0u);
    std::vector<uint8_t> l2 = read("c.qcow2", l2_offset, 4 * 8);
    ASSERT_EQ(l2.size(), 32u);
    ASSERT_LE(4u, l2_entries);

    std::vector<ClusterType> types;
    for (uint64_t i = 0; i < 4; ++i) {
      uint64_t entry = load_be64(&l2[i * 8]);
      types.push_back(cluster_type(entry, false));
      std::vector<uint8_t> got(cs);
      if (types.back() == ClusterType::kCompressed) {
        CompressedExtent extent = decode_compressed(entry, h.cluster_bits);
        std::vector<uint8_t> stream = read("c.qcow2", extent.host_offset, extent.size);
        Result<void> r = decompress_cluster(h.compression_type, stream, got);
        ASSERT_TRUE(r) << "cluster " << i << ": " << r.error().message();
      } else if (types.back() == ClusterType::kNormal) {
        got = read("c.qcow2", entry_offset(entry), cs);
      } else {
        std::fill(got.begin(), got.end(), 0);
      }
      EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + std::ptrdiff_t(i * cs)))
          << "cluster " << i;
    }
    EXPECT_EQ(types,
              (std::vector<ClusterType>{ClusterType::kCompressed, ClusterType::kNormal,
                                        ClusterType::kUnallocated, ClusterType::kCompressed}));
    fs::remove(path("c.qcow2"));
  }
}

// The other direction: clusters Strata compresses, placed with encode_compressed into an image
// QEMU created, read back by qemu-io.
TEST_F(QemuImageTest, QemuReadsClustersStrataCompressed) {
  for (const CompressedCase& c : {CompressedCase{"zlib", CompressionType::kZlib, 65536},
                                  CompressedCase{"zstd", CompressionType::kZstd, 65536}}) {
    SCOPED_TRACE(c.type_option);
    // One data cluster written by QEMU first, so that L2 table and refcounts exist for it.
    run(std::string("qemu-img create -q -f qcow2 -o compression_type=") + c.type_option +
        " w.qcow2 1M");
    run("qemu-io -c 'write -c -P 0x11 0 64k' w.qcow2");
    Header h = decode("w.qcow2");
    const uint64_t cs = h.cluster_size();
    uint64_t l2_offset = entry_offset(load_be64(read("w.qcow2", h.l1_table_offset, 8).data()));
    uint64_t entry = load_be64(read("w.qcow2", l2_offset, 8).data());
    ASSERT_EQ(cluster_type(entry, false), ClusterType::kCompressed);

    // Our stream goes past the end of the file, at an unaligned offset as QEMU packs them (the
    // refcounts do not cover it; reading does not care).
    const uint64_t host_offset = (file_size("w.qcow2") + cs - 1) / cs * cs + 0x1f3;
    std::vector<uint8_t> data = guest_data(cs);
    data.resize(cs);
    std::vector<uint8_t> packed(cs);
    Result<size_t> n = compress_cluster(c.type, data, packed);
    ASSERT_TRUE(n && *n > 0);
    packed.resize(*n);
    ASSERT_LE(packed.size(), cs);
    Result<uint64_t> new_entry = encode_compressed(host_offset, packed.size(), h.cluster_bits);
    ASSERT_TRUE(new_entry);
    std::vector<uint8_t> entry_bytes(8);
    store_be64(entry_bytes.data(), *new_entry);
    {
      std::fstream f(path("w.qcow2"), std::ios::binary | std::ios::in | std::ios::out);
      f.seekp(std::streamoff(host_offset));
      f.write(reinterpret_cast<const char*>(packed.data()), std::streamsize(packed.size()));
      f.seekp(std::streamoff(l2_offset));
      f.write(reinterpret_cast<const char*>(entry_bytes.data()), 8);
    }
    {
      std::ofstream out(path("want.raw"), std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    }
    // Converting to raw reads the cluster through QEMU's decompressor.
    run("qemu-img convert -f qcow2 -O raw w.qcow2 got.raw && truncate -s 64k got.raw && "
        "cmp got.raw want.raw");
    fs::remove(path("w.qcow2"));
  }
}

}  // namespace
}  // namespace strata::qcow2
