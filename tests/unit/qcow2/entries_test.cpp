// L2 entry interpretation: cluster and subcluster types, runs, masks, compressed descriptors.
#include "format/qcow2/entries.h"

#include <gtest/gtest.h>

#include "format/qcow2/layout.h"

namespace strata::qcow2 {
namespace {

constexpr uint64_t kHost = 0x50000;  // a cluster-aligned host offset

struct ClusterCase {
  uint64_t entry;
  bool extended;
  bool data_file;
  ClusterType want;
};

TEST(Qcow2Entries, ClusterTypeTable) {
  const ClusterCase cases[] = {
      {0, false, false, ClusterType::kUnallocated},
      {kOflagZero, false, false, ClusterType::kZeroPlain},
      {kHost | kOflagZero, false, false, ClusterType::kZeroAlloc},
      {kHost | kOflagZero | kOflagCopied, false, false, ClusterType::kZeroAlloc},
      {kHost, false, false, ClusterType::kNormal},
      {kHost | kOflagCopied, false, false, ClusterType::kNormal},
      {kOflagCompressed | 0x1234, false, false, ClusterType::kCompressed},
      // Extended L2: bit 0 is reserved, zeroes live in the bitmap.
      {kOflagZero, true, false, ClusterType::kUnallocated},
      {kHost | kOflagZero, true, false, ClusterType::kNormal},
      {kOflagCompressed | kOflagZero, true, false, ClusterType::kCompressed},
      // External data file: offset 0 with COPIED is the data file's first cluster.
      {kOflagCopied, false, true, ClusterType::kNormal},
      {kOflagCopied, false, false, ClusterType::kUnallocated},
      {0, false, true, ClusterType::kUnallocated},
      {kOflagCopied | kOflagZero, false, true, ClusterType::kZeroPlain},
  };
  for (const ClusterCase& c : cases) {
    EXPECT_EQ(cluster_type(c.entry, c.extended, c.data_file), c.want)
        << std::hex << c.entry << " extended=" << c.extended << " data_file=" << c.data_file;
  }
}

struct SubclusterCase {
  uint64_t entry;
  uint64_t bitmap;
  unsigned index;
  bool extended;
  SubclusterType want;
  unsigned run;
};

// Bitmap helpers for readability: allocation bits and zero bits of subclusters [a, b).
uint64_t alloc(unsigned a, unsigned b) { return subcluster_mask(a, b - a); }
uint64_t zero(unsigned a, unsigned b) { return subcluster_mask(a, b - a) << 32; }

TEST(Qcow2Entries, SubclusterTypeAndRunTable) {
  const SubclusterCase cases[] = {
      // Without extended L2 every subcluster has the cluster's type and the run is the rest.
      {0, 0xffff, 0, false, SubclusterType::kUnallocatedPlain, 32},
      {kOflagZero, 0, 5, false, SubclusterType::kZeroPlain, 27},
      {kHost | kOflagZero, 0, 0, false, SubclusterType::kZeroAlloc, 32},
      {kHost, 0, 31, false, SubclusterType::kNormal, 1},
      {kOflagCompressed, 0, 0, false, SubclusterType::kCompressed, 32},
      // Extended, allocated cluster.
      {kHost, alloc(0, 4), 0, true, SubclusterType::kNormal, 4},
      {kHost, alloc(0, 4), 2, true, SubclusterType::kNormal, 2},
      {kHost, alloc(0, 32), 0, true, SubclusterType::kNormal, 32},
      {kHost, alloc(0, 4), 4, true, SubclusterType::kUnallocatedAlloc, 28},
      {kHost, alloc(0, 4) | zero(8, 10), 4, true, SubclusterType::kUnallocatedAlloc, 4},
      {kHost, alloc(0, 4) | zero(8, 10), 8, true, SubclusterType::kZeroAlloc, 2},
      {kHost, alloc(0, 4) | zero(4, 10), 4, true, SubclusterType::kZeroAlloc, 6},
      {kHost, alloc(3, 4) | zero(3, 4), 0, true, SubclusterType::kInvalid, 32},
      {kHost, 0, 0, true, SubclusterType::kUnallocatedAlloc, 32},
      // Extended, unallocated cluster.
      {0, 0, 7, true, SubclusterType::kUnallocatedPlain, 25},
      {0, zero(0, 16), 3, true, SubclusterType::kZeroPlain, 13},
      {0, zero(16, 32), 3, true, SubclusterType::kUnallocatedPlain, 13},
      {0, zero(16, 32), 16, true, SubclusterType::kZeroPlain, 16},
      {0, alloc(31, 32), 0, true, SubclusterType::kInvalid, 32},
      {kOflagZero, 0, 0, true, SubclusterType::kUnallocatedPlain, 32},
      // Extended, compressed: no subclusters, no bitmap allowed.
      {kOflagCompressed | kHost, 0, 3, true, SubclusterType::kCompressed, 29},
      {kOflagCompressed | kHost, alloc(0, 1), 0, true, SubclusterType::kInvalid, 32},
  };
  for (const SubclusterCase& c : cases) {
    EXPECT_EQ(subcluster_type(c.entry, c.bitmap, c.index, c.extended), c.want)
        << std::hex << c.entry << " bitmap " << c.bitmap << std::dec << " index " << c.index;
    EXPECT_EQ(subcluster_run(c.entry, c.bitmap, c.index, c.extended), c.run)
        << std::hex << c.entry << " bitmap " << c.bitmap << std::dec << " index " << c.index;
  }
}

TEST(Qcow2Entries, SubclusterTypeWithDataFileAtOffsetZero) {
  EXPECT_EQ(subcluster_type(kOflagCopied, alloc(0, 2), 1, true, true), SubclusterType::kNormal);
  EXPECT_EQ(subcluster_type(kOflagCopied, alloc(0, 2), 1, true, false), SubclusterType::kInvalid);
}

TEST(Qcow2Entries, SubclusterMask) {
  EXPECT_EQ(subcluster_mask(0, 0), 0u);
  EXPECT_EQ(subcluster_mask(0, 1), 1u);
  EXPECT_EQ(subcluster_mask(3, 2), 0x18u);
  EXPECT_EQ(subcluster_mask(0, 32), kBitmapAllocMask);
  EXPECT_EQ(subcluster_mask(31, 1), 0x80000000u);
  EXPECT_EQ(subcluster_mask(0, 32) << 32, kBitmapZeroMask);
}

struct CompressedCase {
  uint32_t cluster_bits;
  uint64_t host_offset;
  uint64_t bytes;
  uint64_t want_entry;
  uint64_t want_size;  // what decode says to read
};

TEST(Qcow2Entries, CompressedDescriptorTable) {
  const CompressedCase cases[] = {
      // 64 KiB clusters: x = 54 offset bits, sector count from bit 54.
      {16, 0x50000, 1, kOflagCompressed | 0x50000, 512},
      {16, 0x50000, 512, kOflagCompressed | 0x50000, 512},
      {16, 0x50000, 513, kOflagCompressed | (1ull << 54) | 0x50000, 1024},
      {16, 0x501ff, 2, kOflagCompressed | (1ull << 54) | 0x501ff, 513},
      {16, 0x50100, 0x10000, kOflagCompressed | (128ull << 54) | 0x50100, 0x10000 + 256},
      // 512-byte clusters: x = 61, one sector-count bit.
      {9, 0x1234, 300, kOflagCompressed | 0x1234, 512 - 0x34},
      {9, 0x13ff, 512, kOflagCompressed | (1ull << 61) | 0x13ff, 513},
      // 2 MiB clusters: x = 49.
      {21, 0x200000, 0x200000, kOflagCompressed | (4095ull << 49) | 0x200000, 0x200000},
  };
  for (const CompressedCase& c : cases) {
    Result<uint64_t> entry = encode_compressed(c.host_offset, c.bytes, c.cluster_bits);
    ASSERT_TRUE(entry) << entry.error().message();
    EXPECT_EQ(*entry, c.want_entry) << std::hex << c.host_offset << " " << c.bytes;
    EXPECT_EQ(cluster_type(*entry, false), ClusterType::kCompressed);
    CompressedExtent extent = decode_compressed(*entry, c.cluster_bits);
    EXPECT_EQ(extent, (CompressedExtent{c.host_offset, c.want_size}));
    EXPECT_GE(extent.size, c.bytes);
  }
}

TEST(Qcow2Entries, CompressedDecodeIgnoresCopiedAndCompressedFlags) {
  // x = 54 for 64 KiB: the top sector-count bit is bit 61.
  uint64_t entry = kOflagCompressed | kOflagCopied | (255ull << 54) | 0x1000;
  EXPECT_EQ(decode_compressed(entry, 16), (CompressedExtent{0x1000, 256 * 512}));
}

TEST(Qcow2Entries, EncodeCompressedRejectsWhatItCannotDescribe) {
  Result<uint64_t> too_far = encode_compressed(1ull << 54, 100, 16);
  ASSERT_FALSE(too_far);
  EXPECT_EQ(too_far.error().err(), EINVAL);
  EXPECT_TRUE(encode_compressed((1ull << 54) - 512, 100, 16));

  Result<uint64_t> too_long = encode_compressed(0x50000, 0x10001, 16);
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().err(), EINVAL);

  EXPECT_FALSE(encode_compressed(0x50000, 0, 16));
}

}  // namespace
}  // namespace strata::qcow2
