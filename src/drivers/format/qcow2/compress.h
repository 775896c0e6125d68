// Compressed clusters: zlib (raw deflate, as qcow2 stores it) and zstd.
//
// Thread safety: pure functions; safe to call from worker threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "layout.h"
#include "strata/result.h"

namespace strata::qcow2 {

// Compresses one cluster `in` into `out`. Returns the compressed length, or 0 when the result
// would not be smaller than `out.size()` (the caller then writes the cluster uncompressed).
// The stream is what QEMU writes: raw deflate (window bits -12) for zlib; a zstd frame for zstd.
Result<size_t> compress_cluster(CompressionType type, std::span<const uint8_t> in,
                                std::span<uint8_t> out);
// Decompresses into exactly `out.size()` bytes (one cluster). `in` may carry trailing bytes past
// the stream (the descriptor counts whole sectors). EIO "Could not decompress ..." style errors on
// a corrupt stream or one that yields fewer bytes.
Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in,
                                std::span<uint8_t> out);

}  // namespace strata::qcow2
