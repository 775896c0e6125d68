// Compressed cluster streams: round trips, QEMU's framing (raw deflate, zstd frame), the
// "does not fit" answer, trailing bytes, corrupt input.
#include "format/qcow2/compress.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <vector>

namespace strata::qcow2 {
namespace {

constexpr size_t kCluster = 65536;
constexpr CompressionType kTypes[] = {CompressionType::kZlib, CompressionType::kZstd};

std::vector<uint8_t> compressible_cluster() {
  std::vector<uint8_t> data(kCluster);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t((i / 100) % 7 + 'a');
  return data;
}

std::vector<uint8_t> random_cluster() {
  std::mt19937 rng(42);
  std::vector<uint8_t> data(kCluster);
  for (uint8_t& b : data) b = uint8_t(rng());
  return data;
}

std::vector<uint8_t> compress(CompressionType type, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(data.size());
  Result<size_t> n = compress_cluster(type, data, out);
  EXPECT_TRUE(n) << n.error().message();
  out.resize(n ? *n : 0);
  return out;
}

TEST(Qcow2Compress, RoundTripBothTypes) {
  const std::vector<uint8_t> data = compressible_cluster();
  for (CompressionType type : kTypes) {
    std::vector<uint8_t> packed = compress(type, data);
    ASSERT_GT(packed.size(), 0u);
    EXPECT_LT(packed.size(), data.size() / 10);
    std::vector<uint8_t> back(kCluster);
    ASSERT_TRUE(decompress_cluster(type, packed, back));
    EXPECT_EQ(back, data);
  }
}

TEST(Qcow2Compress, ZlibIsRawDeflateWithQemusWindow) {
  std::vector<uint8_t> packed = compress(CompressionType::kZlib, compressible_cluster());
  // A raw stream: no zlib header (0x78 ..), inflates with window bits -12.
  z_stream strm{};
  ASSERT_EQ(inflateInit2(&strm, -12), Z_OK);
  std::vector<uint8_t> out(kCluster);
  strm.next_in = packed.data();
  strm.avail_in = uInt(packed.size());
  strm.next_out = out.data();
  strm.avail_out = uInt(out.size());
  EXPECT_EQ(inflate(&strm, Z_FINISH), Z_STREAM_END);
  inflateEnd(&strm);
  EXPECT_EQ(out, compressible_cluster());
}

TEST(Qcow2Compress, ZstdIsOneFrame) {
  std::vector<uint8_t> packed = compress(CompressionType::kZstd, compressible_cluster());
  ASSERT_GE(packed.size(), 4u);
  EXPECT_EQ(load_be32(packed.data()), 0x28b52ffdu);  // zstd frame magic, little-endian on disk
}

TEST(Qcow2Compress, IncompressibleDataDoesNotFit) {
  const std::vector<uint8_t> data = random_cluster();
  for (CompressionType type : kTypes) {
    std::vector<uint8_t> out(kCluster);
    Result<size_t> n = compress_cluster(type, data, out);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 0u);
  }
}

TEST(Qcow2Compress, DecompressionToleratesTrailingBytes) {
  const std::vector<uint8_t> data = compressible_cluster();
  for (CompressionType type : kTypes) {
    std::vector<uint8_t> packed = compress(type, data);
    // The descriptor counts whole sectors: what follows the stream is another cluster's data.
    packed.resize(packed.size() + 700, 0xa5);
    std::vector<uint8_t> back(kCluster);
    ASSERT_TRUE(decompress_cluster(type, packed, back));
    EXPECT_EQ(back, data);
  }
}

TEST(Qcow2Compress, CorruptOrShortStreamsFail) {
  const std::vector<uint8_t> data = compressible_cluster();
  for (CompressionType type : kTypes) {
    std::vector<uint8_t> packed = compress(type, data);
    std::vector<uint8_t> back(kCluster);

    std::vector<uint8_t> truncated(packed.begin(), packed.begin() + packed.size() / 2);
    Result<void> r = decompress_cluster(type, truncated, back);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err(), EIO);

    std::vector<uint8_t> garbage(packed.size(), 0xff);
    EXPECT_EQ(decompress_cluster(type, garbage, back).error().err(), EIO);

    EXPECT_FALSE(decompress_cluster(type, {}, back));

    // A stream of half a cluster does not fill the cluster.
    std::vector<uint8_t> half(data.begin(), data.begin() + kCluster / 2);
    std::vector<uint8_t> half_packed(kCluster);
    Result<size_t> n = compress_cluster(type, half, half_packed);
    ASSERT_TRUE(n && *n > 0);
    half_packed.resize(*n);
    EXPECT_EQ(decompress_cluster(type, half_packed, back).error().err(), EIO);
  }
}

TEST(Qcow2Compress, ZstdFrameLongerThanTheClusterFails) {
  std::vector<uint8_t> two_clusters = compressible_cluster();
  two_clusters.resize(2 * kCluster, 'z');
  std::vector<uint8_t> packed(2 * kCluster);
  Result<size_t> n = compress_cluster(CompressionType::kZstd, two_clusters, packed);
  ASSERT_TRUE(n && *n > 0);
  packed.resize(*n);
  std::vector<uint8_t> back(kCluster);
  EXPECT_EQ(decompress_cluster(CompressionType::kZstd, packed, back).error().err(), EIO);
}

}  // namespace
}  // namespace strata::qcow2
