// Compressed cluster streams as QEMU writes and reads them (block/qcow2-threads.c): a raw
// deflate stream with a 4 KiB window, or one zstd frame.
#include "compress.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <cerrno>
#include <memory>

namespace strata::qcow2 {
namespace {

// QEMU's window: 2^12 bytes, negative for a raw stream without zlib header and checksum.
constexpr int kDeflateWindowBits = -12;
constexpr int kDeflateMemLevel = 9;

struct ZstdCCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

Result<size_t> zlib_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream strm{};
  if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kDeflateWindowBits, kDeflateMemLevel,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    return fail(ENOMEM, "Could not initialize zlib compression");
  }
  strm.next_in = const_cast<Bytef*>(in.data());
  strm.avail_in = static_cast<uInt>(in.size());
  strm.next_out = out.data();
  strm.avail_out = static_cast<uInt>(out.size());
  int ret = deflate(&strm, Z_FINISH);
  size_t produced = out.size() - strm.avail_out;
  deflateEnd(&strm);
  if (ret == Z_STREAM_END) return produced;
  if (ret == Z_OK || ret == Z_BUF_ERROR) return size_t{0};  // did not fit
  return fail(EIO, "Could not compress cluster (zlib error {})", ret);
}

Result<size_t> zstd_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxFree> cctx(ZSTD_createCCtx());
  if (!cctx) return fail(ENOMEM, "Could not initialize zstd compression");
  size_t ret = ZSTD_compress2(cctx.get(), out.data(), out.size(), in.data(), in.size());
  if (!ZSTD_isError(ret)) return ret;
  if (ZSTD_getErrorCode(ret) == ZSTD_error_dstSize_tooSmall) return size_t{0};
  return fail(EIO, "Could not compress cluster: {}", ZSTD_getErrorName(ret));
}

Result<void> zlib_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream strm{};
  if (inflateInit2(&strm, kDeflateWindowBits) != Z_OK) {
    return fail(ENOMEM, "Could not initialize zlib decompression");
  }
  strm.next_in = const_cast<Bytef*>(in.data());
  strm.avail_in = static_cast<uInt>(in.size());
  strm.next_out = out.data();
  strm.avail_out = static_cast<uInt>(out.size());
  int ret = inflate(&strm, Z_FINISH);
  bool full = strm.avail_out == 0;
  inflateEnd(&strm);
  // Z_BUF_ERROR with a full output: the cluster is complete and the stream simply goes on (or
  // its end marker lies in the trailing bytes); QEMU accepts that too.
  if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && full) return {};
  return fail(EIO, "Could not decompress cluster: corrupt or short zlib stream");
}

Result<void> zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_DCtx, ZstdDCtxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return fail(ENOMEM, "Could not initialize zstd decompression");
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  size_t ret = 0;
  // Streaming, because the descriptor only bounds the frame's length: the frame ends inside
  // `in` and what follows it is ignored.
  while (output.pos < output.size) {
    size_t last_in = input.pos;
    size_t last_out = output.pos;
    ret = ZSTD_decompressStream(dctx.get(), &output, &input);
    if (ZSTD_isError(ret)) {
      return fail(EIO, "Could not decompress cluster: {}", ZSTD_getErrorName(ret));
    }
    if (input.pos <= last_in && output.pos <= last_out) {
      return fail(EIO, "Could not decompress cluster: short zstd stream");
    }
  }
  // A frame not finished once the cluster is full decodes to more than a cluster: damaged.
  if (ret != 0) return fail(EIO, "Could not decompress cluster: zstd frame longer than a cluster");
  return {};
}

}  // namespace

Result<size_t> compress_cluster(CompressionType type, std::span<const uint8_t> in,
                                std::span<uint8_t> out) {
  if (out.empty()) return size_t{0};
  // One byte less than `out`: a result as long as the cluster saves nothing (QEMU passes
  // cluster_size - 1 too).
  std::span<uint8_t> room = out.first(out.size() - 1);
  return type == CompressionType::kZstd ? zstd_compress(in, room) : zlib_compress(in, room);
}

Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in,
                                std::span<uint8_t> out) {
  return type == CompressionType::kZstd ? zstd_decompress(in, out) : zlib_decompress(in, out);
}

}  // namespace strata::qcow2
