// qcow2 table entries: L1, L2 (standard and extended), refcount table, compressed descriptors.
//
// Pure functions over 64-bit entries (already converted from big-endian). The driver's tables
// hold raw big-endian bytes; these functions interpret one entry at a time.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

#include "strata/result.h"

namespace strata::qcow2 {

inline constexpr uint64_t kOflagCopied = 1ull << 63;            // L1/L2: refcount is exactly 1
inline constexpr uint64_t kOflagCompressed = 1ull << 62;        // L2: compressed cluster
inline constexpr uint64_t kOflagZero = 1ull << 0;               // L2 (v3, not extended): reads zero
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1/L2 host offset bits 9-55
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
inline constexpr uint64_t kL2StandardReservedMask = 0x3f000000000001feull;
inline constexpr uint64_t kRefcountTableOffsetMask = 0xfffffffffffffe00ull;
inline constexpr uint64_t kRefcountTableReservedMask = 0x1ffull;

// What one cluster's L2 entry says (QEMU's QCow2ClusterType).
enum class ClusterType {
  kUnallocated,  // offset 0, no zero flag: from backing (or zeroes)
  kZeroPlain,    // zero flag, no offset
  kZeroAlloc,    // zero flag with a preallocated host cluster
  kNormal,       // data at the host offset
  kCompressed,
};

// What one subcluster says (QEMU's QCow2SubclusterType). Without extended L2 every subcluster
// of a cluster has the cluster's type.
enum class SubclusterType {
  kNormal,
  kZeroPlain,
  kZeroAlloc,
  kUnallocatedPlain,  // no host cluster
  kUnallocatedAlloc,  // host cluster allocated, this subcluster not
  kCompressed,
  kInvalid,  // both the allocated and the zero bit set, or a bitmap on a compressed cluster
};

// Type of a cluster from its L2 entry (bitmap ignored). `extended` = extended L2 entries
// (where the zero flag bit 0 is reserved and zeroes are in the bitmap instead). `data_file` =
// the image has an external data file: there host offset 0 is valid, and an entry with offset 0
// and COPIED set is a normal cluster (QEMU's qcow2_get_cluster_type).
ClusterType cluster_type(uint64_t l2_entry, bool extended, bool data_file = false);
// Type of subcluster `index` (0..31) of a cluster; `bitmap` is the extended L2 bitmap (ignored
// without extended L2). kInvalid for a normal cluster with a subcluster both allocated and zero,
// an unallocated cluster with an allocation bit, or a compressed cluster with a non-zero bitmap.
SubclusterType subcluster_type(uint64_t l2_entry, uint64_t l2_bitmap, unsigned index, bool extended,
                               bool data_file = false);
// Number of consecutive subclusters from `index` (0..31) with the same type as `index`, up to the
// end of the cluster (QEMU's qcow2_get_subcluster_range_type). Without extended L2, and for
// compressed clusters, that is the rest of the cluster: 32 - index. For kInvalid (which the
// caller must check first) also 32 - index, so that a loop over the cluster always advances.
unsigned subcluster_run(uint64_t l2_entry, uint64_t l2_bitmap, unsigned index, bool extended,
                        bool data_file = false);

// Host cluster offset of a normal or zero-alloc entry (L1 or L2).
inline uint64_t entry_offset(uint64_t entry) { return entry & kOffsetMask; }

// Bitmap helpers (extended L2): bits 0-31 allocated, 32-63 reads-as-zero.
inline constexpr uint64_t kBitmapAllocMask = 0x00000000ffffffffull;
inline constexpr uint64_t kBitmapZeroMask = 0xffffffff00000000ull;
// Mask of subclusters [first, first + count) in the allocation half; shift left 32 for zero.
// REQUIRES: first + count <= 32.
uint64_t subcluster_mask(unsigned first, unsigned count);

// A compressed cluster's place in the image file: `host_offset` is a byte offset (not aligned),
// `size` the number of bytes to read from there (which covers the compressed stream; it is
// rounded up to the 512-byte sectors the descriptor counts, minus the offset inside the first
// sector, as QEMU reads it).
//
// The descriptor (bits 0-61) holds, with x = 62 - (cluster_bits - 8): the host byte offset in
// bits 0..x-1, and in bits x..61 the number of 512-byte sectors the stream touches minus one.
struct CompressedExtent {
  uint64_t host_offset;
  uint64_t size;
  bool operator==(const CompressedExtent&) const = default;
};
// REQUIRES: cluster_bits in [kMinClusterBits, kMaxClusterBits].
CompressedExtent decode_compressed(uint64_t l2_entry, uint32_t cluster_bits);
// The L2 entry for `compressed_bytes` bytes at byte offset `host_offset` (compressed flag set,
// COPIED clear). Fails with EINVAL if they cannot be described (offset too large for the x
// offset bits; the stream empty or longer than a cluster).
Result<uint64_t> encode_compressed(uint64_t host_offset, uint64_t compressed_bytes,
                                   uint32_t cluster_bits);

}  // namespace strata::qcow2
