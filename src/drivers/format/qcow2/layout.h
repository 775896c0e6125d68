// The qcow2 on-disk format: constants, the header with its extensions, and their encoding.
//
// Pure functions over bytes; no I/O. The driver reads the first cluster of the image and hands
// it to decode_header; it writes the first cluster back with encode_header. The format is
// QEMU's docs/interop/qcow2.rst: everything big-endian, versions 2 (compat 0.10) and 3
// (compat 1.1).
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;   // "QFI\xfb"
inline constexpr uint32_t kMinClusterBits = 9;   // 512 B
inline constexpr uint32_t kMaxClusterBits = 21;  // 2 MiB (QEMU's limit)
inline constexpr uint32_t kMinExtendedL2ClusterBits = 14;
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3HeaderLength = 104;  // minimum v3 length, without compression type
// What QEMU (and Strata) write for v3: the 104 bytes, the compression type byte and 7 bytes of
// padding (plus any unknown header fields kept from the image).
inline constexpr uint32_t kV3FullHeaderLength = 112;
inline constexpr uint32_t kMaxBackingFileNameSize = 1023;
inline constexpr uint32_t kMaxRefcountOrder = 6;
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;  // QEMU's limit
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;            // QEMU's limit
inline constexpr uint32_t kSubclustersPerCluster = 32;
// QEMU omits the feature name table for clusters of this size and smaller (it would leave too
// little room for a backing file name in a 512-byte cluster).
inline constexpr uint64_t kMaxClusterSizeWithoutFeatureTable = 4096;
// Bitmaps extension limits (QEMU's QCOW2_MAX_BITMAPS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE).
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapDirectorySize = 1024ull * kMaxBitmaps;

// Feature bits (header fields incompatible_features, compatible_features,
// autoclear_features).
namespace incompat {
inline constexpr uint64_t kDirty = 1ull << 0;
inline constexpr uint64_t kCorrupt = 1ull << 1;
inline constexpr uint64_t kDataFile = 1ull << 2;
inline constexpr uint64_t kCompressionType = 1ull << 3;
inline constexpr uint64_t kExtendedL2 = 1ull << 4;
inline constexpr uint64_t kKnown = kDirty | kCorrupt | kDataFile | kCompressionType | kExtendedL2;
}  // namespace incompat
namespace compat {
inline constexpr uint64_t kLazyRefcounts = 1ull << 0;
}  // namespace compat
namespace autoclear {
inline constexpr uint64_t kBitmaps = 1ull << 0;
inline constexpr uint64_t kDataFileRaw = 1ull << 1;
inline constexpr uint64_t kKnown = kBitmaps | kDataFileRaw;
}  // namespace autoclear

// Header extension types.
namespace ext {
inline constexpr uint32_t kEnd = 0;
inline constexpr uint32_t kBackingFormat = 0xe2792aca;
inline constexpr uint32_t kFeatureTable = 0x6803f857;
inline constexpr uint32_t kCryptoHeader = 0x0537be77;
inline constexpr uint32_t kBitmaps = 0x23852875;
inline constexpr uint32_t kDataFile = 0x44415441;
}  // namespace ext

enum class CompressionType : uint8_t { kZlib = 0, kZstd = 1 };
enum class FeatureType : uint8_t { kIncompatible = 0, kCompatible = 1, kAutoclear = 2 };

// One entry of the feature name table (48 bytes on disk: type, bit, 46-byte name).
struct FeatureName {
  FeatureType type;
  uint8_t bit;
  std::string name;  // without trailing NULs
  bool operator==(const FeatureName&) const = default;
};

// An extension kept as bytes: unknown ones (preserved on rewrite, as the spec asks of writers
// that do not understand them... QEMU keeps them too), and known ones Strata does not interpret
// yet (bitmaps, crypto header pointer).
struct RawExtension {
  uint32_t type;
  std::vector<uint8_t> data;  // `length` bytes, without the padding to 8
  bool operator==(const RawExtension&) const = default;
};

struct Header {
  uint32_t version = 3;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;  // virtual size in bytes
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;  // entries
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  // Version 3 fields; decode fills the v2 defaults (0, 0, 0, order 4, length 72).
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderLength;  // as read; encode computes its own
  CompressionType compression_type = CompressionType::kZlib;
  // v3 header bytes past the 112 Strata knows (header_length > 112): kept and written back, as
  // QEMU does.
  std::vector<uint8_t> unknown_header_fields;

  std::string backing_file;                   // empty: none
  std::optional<std::string> backing_format;  // backing file format extension
  std::optional<std::string> data_file;       // external data file name extension
  std::vector<FeatureName> feature_names;     // as read (encode writes Strata's own table)
  // Bitmaps, crypto header pointer and unknown extensions, in file order. A bitmaps extension
  // without the "bitmaps" autoclear bit is dropped on decode (QEMU drops it on its next header
  // write: some program without bitmap support modified the image).
  std::vector<RawExtension> other_extensions;

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  bool extended_l2() const { return (incompatible_features & incompat::kExtendedL2) != 0; }
  bool has_data_file() const { return (incompatible_features & incompat::kDataFile) != 0; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  bool operator==(const Header&) const = default;
};

// Reads cluster_bits from the first bytes of an image (at least 24), so the caller knows how
// much to read for decode_header. Errors as decode_header for magic/version/cluster size.
Result<uint32_t> peek_cluster_bits(std::span<const uint8_t> start);

// Decodes and validates the header, its extensions and the backing file name from `cluster0`,
// the image's first cluster (shorter if the file is shorter: missing bytes read as zeroes, as
// QEMU's reads past the end of a file do). Checks, in QEMU's order and with its texts and errnos,
// everything qcow2_do_open checks without reading other metadata:
//   EINVAL "Image is not in qcow2 format"; ENOTSUP "Unsupported qcow2 version <n>";
//   EINVAL "Unsupported cluster size: 2^<n>"; "qcow2 header too short";
//   "qcow2 header exceeds cluster size"; "Invalid backing file offset";
//   ENOTSUP "qcow2: unknown compression type: <n>"; EINVAL "qcow2: Compression type
//   incompatible feature bit must (not) be set"; ENOTSUP "Unsupported qcow2 feature(s): <names
//   from the image's feature table, then 'Unknown incompatible feature: <hex>'>";
//   EINVAL "Unsupported subcluster size: <n>"; "Reference count entry width too large; may not
//   exceed 64 bits"; "Image does not contain a reference count table" (not in check mode);
//   EFBIG/EINVAL "<Reference count table|Snapshot table|Active L1 table> too large|offset
//   invalid" (the snapshot table not in check mode); EFBIG "Image is too big"; EINVAL "L1 table
//   is too small"; extension errors (EINVAL "Header extension too large", backing format name
//   too long, bad crypto/bitmaps extensions); "data-file-raw requires a data file";
//   "Backing file name too long".
// Not checked here (they depend on open flags or other state): the corrupt bit against
// read-write, encryption support, whether a data file is given.
// `check_mode` is QEMU's BDRV_O_CHECK (qemu-img check): the refcount table may be missing and
// the snapshot table pointer is not validated, so that check can repair them.
// Unknown autoclear bits are kept as read; the driver clears them when it first writes.
Result<Header> decode_header(std::span<const uint8_t> cluster0, bool check_mode = false);

// The feature name table Strata writes: one entry per feature it knows (QEMU's names:
// "dirty bit", "corrupt bit", "external data file", "compression type",
// "extended L2 entries", "lazy refcounts", "bitmaps", "raw external data").
std::vector<FeatureName> known_feature_names();

// Encodes the header for writing at offset 0, byte for byte as QEMU's qcow2_update_header:
// the fixed fields (v2: 72 bytes; v3: 112 = 104 + compression type + padding, then
// unknown_header_fields, with header_length set to match), the extensions in QEMU's order
// (backing format, data file (only with the data-file bit), crypto header pointer, feature
// table (v3 with clusters over 4 KiB only: known_feature_names()), bitmaps, then unknown ones in
// their order), the end marker, and the backing file name right after it with
// backing_file_offset/size filled in. Fails with EINVAL "Backing file name too long" (over 1023
// bytes) and ENOSPC "Header and extensions do not fit in the first cluster" when the result
// exceeds cluster_size(). The result is exactly as long as needed (the caller pads the cluster
// with zeroes).
Result<std::vector<uint8_t>> encode_header(const Header& header);

// Big-endian helpers shared by the qcow2 code.
inline uint64_t load_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void store_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

}  // namespace strata::qcow2
