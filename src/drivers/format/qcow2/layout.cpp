// The qcow2 header: decoding with QEMU's validation, and encoding as QEMU writes it.
//
// Field offsets are the spec's (docs/interop/qcow2.rst); the order of the checks and their texts
// follow qcow2_do_open and qcow2_read_extensions, so that a user sees the same error for the
// same broken image whichever program opens it.
#include "layout.h"

#include <cerrno>
#include <climits>
#include <cstring>

#include "strata/align.h"

namespace strata::qcow2 {
namespace {

// Byte offsets of the header fields.
namespace off {
constexpr size_t kVersion = 4;
constexpr size_t kBackingFileOffset = 8;
constexpr size_t kBackingFileSize = 16;
constexpr size_t kClusterBits = 20;
constexpr size_t kSize = 24;
constexpr size_t kCryptMethod = 32;
constexpr size_t kL1Size = 36;
constexpr size_t kL1TableOffset = 40;
constexpr size_t kRefcountTableOffset = 48;
constexpr size_t kRefcountTableClusters = 56;
constexpr size_t kNbSnapshots = 60;
constexpr size_t kSnapshotsOffset = 64;
constexpr size_t kIncompatibleFeatures = 72;
constexpr size_t kCompatibleFeatures = 80;
constexpr size_t kAutoclearFeatures = 88;
constexpr size_t kRefcountOrder = 96;
constexpr size_t kHeaderLength = 100;
constexpr size_t kCompressionType = 104;
}  // namespace off

constexpr uint32_t kCryptLuks = 2;
constexpr size_t kFeatureEntrySize = 48;
constexpr size_t kFeatureNameSize = 46;
constexpr size_t kCryptoExtensionSize = 16;
constexpr size_t kBitmapsExtensionSize = 24;
constexpr size_t kBackingFormatBufferSize = 16;  // QEMU's bs->backing_format
constexpr uint64_t kSnapshotHeaderSize = 40;     // fixed part of a snapshot table entry
constexpr uint64_t kMaxSnapshots = 65536;
constexpr uint32_t kMaxL1Index = INT_MAX;

// A read-only view of the first cluster in which bytes past the end read as zeroes.
class Bytes {
 public:
  explicit Bytes(std::span<const uint8_t> data) : data_(data) {}

  uint8_t at(uint64_t i) const { return i < data_.size() ? data_[i] : 0; }
  uint32_t be32(uint64_t i) const {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v = (v << 8) | at(i + k);
    return v;
  }
  uint64_t be64(uint64_t i) const { return (uint64_t{be32(i)} << 32) | be32(i + 4); }
  std::vector<uint8_t> slice(uint64_t start, uint64_t len) const {
    std::vector<uint8_t> out(len);
    for (uint64_t k = 0; k < len; ++k) out[k] = at(start + k);
    return out;
  }
  // A C string as QEMU sees it after reading `len` bytes into a NUL-terminated buffer.
  std::string c_string(uint64_t start, uint64_t len) const {
    std::string s;
    for (uint64_t k = 0; k < len && at(start + k) != 0; ++k) s.push_back(char(at(start + k)));
    return s;
  }

 private:
  std::span<const uint8_t> data_;
};

// QEMU's qcow2_validate_table: an entry count bounded by a byte limit, and an aligned offset that
// keeps the table below INT64_MAX.
Result<void> validate_table(uint64_t offset, uint64_t entries, uint64_t entry_len,
                            uint64_t max_bytes, uint64_t cluster_size, const char* name) {
  if (entries > max_bytes / entry_len) return fail(EFBIG, "{} too large", name);
  if (uint64_t{INT64_MAX} - entries * entry_len < offset || !is_aligned(offset, cluster_size)) {
    return fail(EINVAL, "{} offset invalid", name);
  }
  return {};
}

Result<void> validate_compression_type(const Header& h, uint8_t raw_type) {
  if (raw_type > uint8_t(CompressionType::kZstd)) {
    return fail(ENOTSUP, "qcow2: unknown compression type: {}", raw_type);
  }
  bool flagged = (h.incompatible_features & incompat::kCompressionType) != 0;
  if (raw_type == uint8_t(CompressionType::kZlib) && flagged) {
    return fail(EINVAL, "qcow2: Compression type incompatible feature bit must not be set");
  }
  if (raw_type != uint8_t(CompressionType::kZlib) && !flagged) {
    return fail(EINVAL, "qcow2: Compression type incompatible feature bit must be set");
  }
  return {};
}

// QEMU's report_unsupported_feature: names from the image's table (incompatible entries, in
// table order, up to the first empty name), then the bits left without a name in hex.
Error unsupported_features(const std::vector<FeatureName>& table, uint64_t mask) {
  std::string names;
  for (const FeatureName& f : table) {
    if (f.name.empty()) break;
    if (f.type != FeatureType::kIncompatible || f.bit >= 64) continue;
    uint64_t bit = uint64_t{1} << f.bit;
    if (!(mask & bit)) continue;
    if (!names.empty()) names += ", ";
    names += f.name;
    mask &= ~bit;
  }
  if (mask) {
    if (!names.empty()) names += ", ";
    names += fmt::format("Unknown incompatible feature: {:x}", mask);
  }
  return fail(ENOTSUP, "Unsupported qcow2 feature(s): {}", names);
}

std::vector<FeatureName> parse_feature_table(const Bytes& b, uint64_t start, uint64_t len) {
  // QEMU reads the table into a zeroed buffer, so a partial last entry reads as zero-padded.
  std::vector<FeatureName> table;
  for (uint64_t pos = 0; pos < len; pos += kFeatureEntrySize) {
    auto byte = [&](uint64_t i) { return pos + i < len ? b.at(start + pos + i) : uint8_t{0}; };
    FeatureName f{FeatureType(byte(0)), byte(1), {}};
    for (uint64_t i = 2; i < 2 + kFeatureNameSize && byte(i) != 0; ++i)
      f.name.push_back(char(byte(i)));
    table.push_back(std::move(f));
  }
  return table;
}

Result<void> check_crypto_extension(const Header& h, const Bytes& b, uint64_t start, uint32_t len) {
  if (h.crypt_method != kCryptLuks) {
    return fail(EINVAL, "CRYPTO header extension only expected with LUKS encryption method");
  }
  if (len != kCryptoExtensionSize) {
    return fail(EINVAL, "CRYPTO header extension size {}, but expected size {}", len,
                kCryptoExtensionSize);
  }
  uint64_t offset = b.be64(start);
  if (!is_aligned(offset, h.cluster_size())) {
    return fail(EINVAL, "Encryption header offset '{}' is not a multiple of cluster size '{}'",
                offset, h.cluster_size());
  }
  return {};
}

Result<void> check_bitmaps_extension(const Bytes& b, uint64_t start, uint64_t cluster_size) {
  if (b.be32(start + 4) != 0) return fail(EINVAL, "bitmaps_ext: Reserved field is not zero");
  uint32_t nb_bitmaps = b.be32(start);
  if (nb_bitmaps > kMaxBitmaps) {
    return fail(EINVAL,
                "bitmaps_ext: Image has {} bitmaps, exceeding the QEMU supported maximum of {}",
                nb_bitmaps, kMaxBitmaps);
  }
  if (nb_bitmaps == 0) return fail(EINVAL, "found bitmaps extension with zero bitmaps");
  if (!is_aligned(b.be64(start + 16), cluster_size)) {
    return fail(EINVAL, "bitmaps_ext: invalid bitmap directory offset");
  }
  uint64_t dir_size = b.be64(start + 8);
  if (dir_size > kMaxBitmapDirectorySize) {
    return fail(EINVAL,
                "bitmaps_ext: bitmap directory size ({}) exceeds the maximum supported size ({})",
                dir_size, kMaxBitmapDirectorySize);
  }
  return {};
}

// One extension of `len` bytes at `start`, stored into `h`.
Result<void> parse_extension(Header& h, const Bytes& b, uint32_t type, uint64_t start,
                             uint32_t len) {
  switch (type) {
    case ext::kBackingFormat:
      if (len >= kBackingFormatBufferSize) {
        return fail(EINVAL, "ERROR: ext_backing_format: len={} too large (>={})", len,
                    kBackingFormatBufferSize);
      }
      h.backing_format = b.c_string(start, len);
      return {};
    case ext::kFeatureTable:
      h.feature_names = parse_feature_table(b, start, len);
      return {};
    case ext::kDataFile:
      h.data_file = b.c_string(start, len);
      return {};
    case ext::kCryptoHeader:
      if (auto r = check_crypto_extension(h, b, start, len); !r) return r;
      break;
    case ext::kBitmaps:
      if (len != kBitmapsExtensionSize) {
        return fail(EINVAL, "bitmaps_ext: Invalid extension length");
      }
      // Without the autoclear bit a program unaware of bitmaps wrote the image: the bitmaps
      // are inconsistent and QEMU ignores the extension (and drops it on its next write).
      if (!(h.autoclear_features & autoclear::kBitmaps)) return {};
      if (auto r = check_bitmaps_extension(b, start, h.cluster_size()); !r) return r;
      break;
    default:
      break;
  }
  h.other_extensions.push_back(RawExtension{type, b.slice(start, len)});
  return {};
}

// QEMU's qcow2_read_extensions: (type, length, data padded to 8) from `start` until the end
// marker or `end` (the backing file name, or the end of the cluster).
Result<void> parse_extensions(Header& h, const Bytes& b, uint64_t start, uint64_t end) {
  uint64_t offset = start;
  while (offset < end) {
    uint32_t type = b.be32(offset);
    uint32_t len = b.be32(offset + 4);
    offset += 8;
    if (offset > end || len > end - offset) return fail(EINVAL, "Header extension too large");
    if (type == ext::kEnd) return {};
    if (auto r = parse_extension(h, b, type, offset, len); !r) return r;
    offset += align_up(len, 8);
  }
  return {};
}

// Magic, version, cluster size and the plain fields; v2 gets the v3 defaults.
Result<Header> decode_fixed_fields(const Bytes& b) {
  if (b.be32(0) != kMagic) return fail(EINVAL, "Image is not in qcow2 format");
  Header h;
  h.version = b.be32(off::kVersion);
  if (h.version < 2 || h.version > 3) {
    return fail(ENOTSUP, "Unsupported qcow2 version {}", h.version);
  }
  h.cluster_bits = b.be32(off::kClusterBits);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return fail(EINVAL, "Unsupported cluster size: 2^{}", h.cluster_bits);
  }
  h.size = b.be64(off::kSize);
  h.crypt_method = b.be32(off::kCryptMethod);
  h.l1_size = b.be32(off::kL1Size);
  h.l1_table_offset = b.be64(off::kL1TableOffset);
  h.refcount_table_offset = b.be64(off::kRefcountTableOffset);
  h.refcount_table_clusters = b.be32(off::kRefcountTableClusters);
  h.nb_snapshots = b.be32(off::kNbSnapshots);
  h.snapshots_offset = b.be64(off::kSnapshotsOffset);
  if (h.version == 2) {
    h.refcount_order = 4;
    h.header_length = kV2HeaderLength;
    return h;
  }
  h.incompatible_features = b.be64(off::kIncompatibleFeatures);
  h.compatible_features = b.be64(off::kCompatibleFeatures);
  h.autoclear_features = b.be64(off::kAutoclearFeatures);
  h.refcount_order = b.be32(off::kRefcountOrder);
  h.header_length = b.be32(off::kHeaderLength);
  if (h.header_length < kV3HeaderLength) return fail(EINVAL, "qcow2 header too short");
  return h;
}

// Feature bits, subclusters, refcount width (QEMU's order).
Result<void> check_features(Header& h, const Bytes& b, uint64_t ext_end) {
  uint8_t raw_type = h.header_length > off::kCompressionType ? b.at(off::kCompressionType) : 0;
  if (auto r = validate_compression_type(h, raw_type); !r) return r;
  h.compression_type = CompressionType(raw_type);

  if (uint64_t unknown = h.incompatible_features & ~incompat::kKnown) {
    // Read the extensions only for the feature names; their errors do not matter here.
    Header scratch = h;
    (void)parse_extensions(scratch, b, h.header_length, ext_end);
    return unsupported_features(scratch.feature_names, unknown);
  }
  uint64_t subcluster_size = h.cluster_size() / (h.extended_l2() ? kSubclustersPerCluster : 1);
  if (subcluster_size < (uint64_t{1} << kMinClusterBits)) {
    return fail(EINVAL, "Unsupported subcluster size: {}", subcluster_size);
  }
  if (h.refcount_order > kMaxRefcountOrder) {
    return fail(EINVAL, "Reference count entry width too large; may not exceed 64 bits");
  }
  return {};
}

// Number of L1 entries needed to map `size` bytes (QEMU's size_to_l1), without overflow.
uint64_t l1_entries_for(const Header& h) {
  uint32_t l2_bits = h.cluster_bits - (h.extended_l2() ? 4 : 3);
  uint32_t shift = h.cluster_bits + l2_bits;
  return (h.size >> shift) + ((h.size & ((uint64_t{1} << shift) - 1)) != 0);
}

Result<void> check_tables(const Header& h, bool check_mode) {
  const uint64_t cs = h.cluster_size();
  if (h.refcount_table_clusters == 0 && !check_mode) {
    return fail(EINVAL, "Image does not contain a reference count table");
  }
  if (auto r = validate_table(h.refcount_table_offset, h.refcount_table_clusters, cs,
                              kMaxRefcountTableBytes, cs, "Reference count table");
      !r) {
    return r;
  }
  if (!check_mode) {
    if (auto r = validate_table(h.snapshots_offset, h.nb_snapshots, kSnapshotHeaderSize,
                                kSnapshotHeaderSize * kMaxSnapshots, cs, "Snapshot table");
        !r) {
      return r;
    }
  }
  if (auto r = validate_table(h.l1_table_offset, h.l1_size, 8, kMaxL1Bytes, cs, "Active L1 table");
      !r) {
    return r;
  }
  uint64_t needed = l1_entries_for(h);
  if (needed > kMaxL1Index) return fail(EFBIG, "Image is too big");
  if (h.l1_size < needed) return fail(EINVAL, "L1 table is too small");
  return {};
}

Result<void> read_backing_name(Header& h, const Bytes& b, uint64_t offset, uint32_t len) {
  if (offset == 0) return {};
  uint64_t room = std::min<uint64_t>(kMaxBackingFileNameSize, h.cluster_size() - offset);
  if (len > room) return fail(EINVAL, "Backing file name too long");
  h.backing_file = b.c_string(offset, len);
  return {};
}

void put_extension(std::vector<uint8_t>& out, uint32_t type, std::span<const uint8_t> data) {
  size_t at = out.size();
  out.resize(at + 8 + align_up(data.size(), 8), 0);
  store_be32(&out[at], type);
  store_be32(&out[at + 4], static_cast<uint32_t>(data.size()));
  if (!data.empty()) std::memcpy(&out[at + 8], data.data(), data.size());
}

void put_string_extension(std::vector<uint8_t>& out, uint32_t type, const std::string& s) {
  put_extension(out, type,
                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

void put_feature_table(std::vector<uint8_t>& out) {
  std::vector<uint8_t> table;
  for (const FeatureName& f : known_feature_names()) {
    size_t at = table.size();
    table.resize(at + kFeatureEntrySize, 0);
    table[at] = uint8_t(f.type);
    table[at + 1] = f.bit;
    std::memcpy(&table[at + 2], f.name.data(), std::min(f.name.size(), kFeatureNameSize));
  }
  put_extension(out, ext::kFeatureTable, table);
}

std::vector<uint8_t> encode_fixed_fields(const Header& h) {
  std::vector<uint8_t> out(h.version >= 3 ? kV3FullHeaderLength : kV2HeaderLength, 0);
  store_be32(&out[0], kMagic);
  store_be32(&out[off::kVersion], h.version);
  store_be32(&out[off::kClusterBits], h.cluster_bits);
  store_be64(&out[off::kSize], h.size);
  store_be32(&out[off::kCryptMethod], h.crypt_method);
  store_be32(&out[off::kL1Size], h.l1_size);
  store_be64(&out[off::kL1TableOffset], h.l1_table_offset);
  store_be64(&out[off::kRefcountTableOffset], h.refcount_table_offset);
  store_be32(&out[off::kRefcountTableClusters], h.refcount_table_clusters);
  store_be32(&out[off::kNbSnapshots], h.nb_snapshots);
  store_be64(&out[off::kSnapshotsOffset], h.snapshots_offset);
  if (h.version < 3) return out;
  store_be64(&out[off::kIncompatibleFeatures], h.incompatible_features);
  store_be64(&out[off::kCompatibleFeatures], h.compatible_features);
  store_be64(&out[off::kAutoclearFeatures], h.autoclear_features);
  store_be32(&out[off::kRefcountOrder], h.refcount_order);
  store_be32(&out[off::kHeaderLength],
             static_cast<uint32_t>(kV3FullHeaderLength + h.unknown_header_fields.size()));
  out[off::kCompressionType] = uint8_t(h.compression_type);
  out.insert(out.end(), h.unknown_header_fields.begin(), h.unknown_header_fields.end());
  return out;
}

}  // namespace

Result<uint32_t> peek_cluster_bits(std::span<const uint8_t> start) {
  Bytes b(start);
  if (b.be32(0) != kMagic) return fail(EINVAL, "Image is not in qcow2 format");
  uint32_t version = b.be32(off::kVersion);
  if (version < 2 || version > 3) return fail(ENOTSUP, "Unsupported qcow2 version {}", version);
  uint32_t bits = b.be32(off::kClusterBits);
  if (bits < kMinClusterBits || bits > kMaxClusterBits) {
    return fail(EINVAL, "Unsupported cluster size: 2^{}", bits);
  }
  return bits;
}

Result<Header> decode_header(std::span<const uint8_t> cluster0, bool check_mode) {
  const Bytes b(cluster0);
  Result<Header> decoded = decode_fixed_fields(b);
  if (!decoded) return decoded;
  Header h = std::move(*decoded);
  const uint64_t cs = h.cluster_size();
  if (h.header_length > cs) return fail(EINVAL, "qcow2 header exceeds cluster size");
  if (h.header_length > kV3FullHeaderLength) {
    h.unknown_header_fields = b.slice(kV3FullHeaderLength, h.header_length - kV3FullHeaderLength);
  }
  uint64_t backing_offset = b.be64(off::kBackingFileOffset);
  uint32_t backing_size = b.be32(off::kBackingFileSize);
  if (backing_offset > cs) return fail(EINVAL, "Invalid backing file offset");
  uint64_t ext_end = backing_offset != 0 ? backing_offset : cs;

  if (auto r = check_features(h, b, ext_end); !r) return r.error();
  if (auto r = check_tables(h, check_mode); !r) return r.error();
  if (auto r = parse_extensions(h, b, h.header_length, ext_end); !r) return r.error();
  if ((h.autoclear_features & autoclear::kDataFileRaw) && !h.has_data_file()) {
    return fail(EINVAL, "data-file-raw requires a data file");
  }
  if (auto r = read_backing_name(h, b, backing_offset, backing_size); !r) return r.error();
  return h;
}

std::vector<FeatureName> known_feature_names() {
  return {
      {FeatureType::kIncompatible, 0, "dirty bit"},
      {FeatureType::kIncompatible, 1, "corrupt bit"},
      {FeatureType::kIncompatible, 2, "external data file"},
      {FeatureType::kIncompatible, 3, "compression type"},
      {FeatureType::kIncompatible, 4, "extended L2 entries"},
      {FeatureType::kCompatible, 0, "lazy refcounts"},
      {FeatureType::kAutoclear, 0, "bitmaps"},
      {FeatureType::kAutoclear, 1, "raw external data"},
  };
}

Result<std::vector<uint8_t>> encode_header(const Header& header) {
  if (header.backing_file.size() > kMaxBackingFileNameSize) {
    return fail(EINVAL, "Backing file name too long");
  }
  std::vector<uint8_t> out = encode_fixed_fields(header);
  if (header.backing_format) put_string_extension(out, ext::kBackingFormat, *header.backing_format);
  if (header.data_file && header.has_data_file()) {
    put_string_extension(out, ext::kDataFile, *header.data_file);
  }
  // QEMU's order: crypto pointer, feature table, bitmaps, then the extensions it does not know.
  for (const RawExtension& e : header.other_extensions) {
    if (e.type == ext::kCryptoHeader) put_extension(out, e.type, e.data);
  }
  if (header.version >= 3 && header.cluster_size() > kMaxClusterSizeWithoutFeatureTable) {
    put_feature_table(out);
  }
  for (const RawExtension& e : header.other_extensions) {
    if (e.type == ext::kBitmaps) put_extension(out, e.type, e.data);
  }
  for (const RawExtension& e : header.other_extensions) {
    if (e.type != ext::kCryptoHeader && e.type != ext::kBitmaps) {
      put_extension(out, e.type, e.data);
    }
  }
  put_extension(out, ext::kEnd, {});
  if (!header.backing_file.empty()) {
    store_be64(&out[off::kBackingFileOffset], out.size());
    store_be32(&out[off::kBackingFileSize], static_cast<uint32_t>(header.backing_file.size()));
    out.insert(out.end(), header.backing_file.begin(), header.backing_file.end());
  }
  if (out.size() > header.cluster_size()) {
    return fail(ENOSPC, "Header and extensions do not fit in the first cluster");
  }
  return out;
}

}  // namespace strata::qcow2
