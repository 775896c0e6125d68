// qcow2 L2 entry interpretation: cluster and subcluster types, compressed descriptors.
#include "entries.h"

#include <bit>
#include <cerrno>

#include "layout.h"

namespace strata::qcow2 {
namespace {

constexpr uint64_t kCompressedSectorSize = 512;

// Bit positions of a compressed descriptor for a cluster size (QEMU's csize_shift, csize_mask
// and cluster_offset_mask).
struct CompressedFields {
  uint32_t shift;        // first bit of the sector count (x)
  uint64_t sector_mask;  // the sector count field, shifted down
  uint64_t offset_mask;  // the host byte offset bits
};

CompressedFields compressed_fields(uint32_t cluster_bits) {
  uint32_t shift = 62 - (cluster_bits - 8);
  return {shift, (uint64_t{1} << (cluster_bits - 8)) - 1, (uint64_t{1} << shift) - 1};
}

// Length of the run of set bits in `bits` starting at bit `from` (bits below `from` ignored).
unsigned ones_from(uint32_t bits, unsigned from) {
  uint32_t below = from == 0 ? 0 : uint32_t((uint64_t{1} << from) - 1);
  return unsigned(std::countr_one(bits | below)) - from;
}

SubclusterType extended_subcluster_type(ClusterType type, uint64_t bitmap, unsigned index) {
  const uint32_t alloc = uint32_t(bitmap);
  const uint32_t zero = uint32_t(bitmap >> 32);
  const uint32_t bit = uint32_t{1} << index;
  switch (type) {
    case ClusterType::kCompressed:
      return bitmap == 0 ? SubclusterType::kCompressed : SubclusterType::kInvalid;
    case ClusterType::kNormal:
      if (alloc & zero) return SubclusterType::kInvalid;
      if (zero & bit) return SubclusterType::kZeroAlloc;
      if (alloc & bit) return SubclusterType::kNormal;
      return SubclusterType::kUnallocatedAlloc;
    case ClusterType::kUnallocated:
      if (alloc) return SubclusterType::kInvalid;
      if (zero & bit) return SubclusterType::kZeroPlain;
      return SubclusterType::kUnallocatedPlain;
    case ClusterType::kZeroPlain:  // cluster_type never says zero with extended L2
    case ClusterType::kZeroAlloc:
      break;
  }
  return SubclusterType::kInvalid;
}

}  // namespace

ClusterType cluster_type(uint64_t l2_entry, bool extended, bool data_file) {
  if (l2_entry & kOflagCompressed) return ClusterType::kCompressed;
  if ((l2_entry & kOflagZero) && !extended) {
    return entry_offset(l2_entry) ? ClusterType::kZeroAlloc : ClusterType::kZeroPlain;
  }
  if (entry_offset(l2_entry) == 0) {
    // With a data file, offset 0 is a real place; its clusters always have refcount 1, so
    // COPIED tells a mapped cluster at 0 from an unallocated one.
    return data_file && (l2_entry & kOflagCopied) ? ClusterType::kNormal
                                                  : ClusterType::kUnallocated;
  }
  return ClusterType::kNormal;
}

SubclusterType subcluster_type(uint64_t l2_entry, uint64_t l2_bitmap, unsigned index, bool extended,
                               bool data_file) {
  ClusterType type = cluster_type(l2_entry, extended, data_file);
  if (extended) return extended_subcluster_type(type, l2_bitmap, index);
  switch (type) {
    case ClusterType::kCompressed:
      return SubclusterType::kCompressed;
    case ClusterType::kZeroPlain:
      return SubclusterType::kZeroPlain;
    case ClusterType::kZeroAlloc:
      return SubclusterType::kZeroAlloc;
    case ClusterType::kNormal:
      return SubclusterType::kNormal;
    case ClusterType::kUnallocated:
      return SubclusterType::kUnallocatedPlain;
  }
  return SubclusterType::kInvalid;
}

unsigned subcluster_run(uint64_t l2_entry, uint64_t l2_bitmap, unsigned index, bool extended,
                        bool data_file) {
  const unsigned rest = kSubclustersPerCluster - index;
  if (!extended) return rest;
  const uint32_t alloc = uint32_t(l2_bitmap);
  const uint32_t zero = uint32_t(l2_bitmap >> 32);
  switch (subcluster_type(l2_entry, l2_bitmap, index, extended, data_file)) {
    case SubclusterType::kNormal:
      return ones_from(alloc, index);
    case SubclusterType::kZeroPlain:
    case SubclusterType::kZeroAlloc:
      return ones_from(zero, index);
    case SubclusterType::kUnallocatedPlain:
    case SubclusterType::kUnallocatedAlloc: {
      // Up to the next subcluster with either bit set.
      uint64_t set = uint64_t(alloc | zero) & ~((uint64_t{1} << index) - 1);
      return set == 0 ? rest : unsigned(std::countr_zero(set)) - index;
    }
    case SubclusterType::kCompressed:
    case SubclusterType::kInvalid:
      break;
  }
  return rest;
}

uint64_t subcluster_mask(unsigned first, unsigned count) {
  return ((uint64_t{1} << count) - 1) << first;
}

CompressedExtent decode_compressed(uint64_t l2_entry, uint32_t cluster_bits) {
  const CompressedFields f = compressed_fields(cluster_bits);
  uint64_t host_offset = l2_entry & f.offset_mask;
  uint64_t sectors = ((l2_entry >> f.shift) & f.sector_mask) + 1;
  return {host_offset,
          sectors * kCompressedSectorSize - (host_offset & (kCompressedSectorSize - 1))};
}

Result<uint64_t> encode_compressed(uint64_t host_offset, uint64_t compressed_bytes,
                                   uint32_t cluster_bits) {
  const CompressedFields f = compressed_fields(cluster_bits);
  if (compressed_bytes == 0 || compressed_bytes > (uint64_t{1} << cluster_bits)) {
    return fail(EINVAL, "Compressed cluster of {} bytes does not fit a {}-byte cluster",
                compressed_bytes, uint64_t{1} << cluster_bits);
  }
  if (host_offset & ~f.offset_mask) {
    return fail(EINVAL, "Compressed cluster offset {:#x} is too large", host_offset);
  }
  // Additional sectors touched after the first one.
  uint64_t extra_sectors = (host_offset + compressed_bytes - 1) / kCompressedSectorSize -
                           host_offset / kCompressedSectorSize;
  return kOflagCompressed | (extra_sectors << f.shift) | host_offset;
}

}  // namespace strata::qcow2
