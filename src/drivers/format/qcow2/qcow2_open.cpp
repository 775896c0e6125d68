// Opening a qcow2 node: runtime options, the header and what can be checked against the file,
// the data file and backing children, the L1 and refcount tables.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <vector>

#include "qcow2.h"
#include "strata/child.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::qcow2 {
namespace {

// Reads `bytes` bytes at `offset` of the image file (zeroes past its end).
Task<Result<std::vector<uint8_t>>> read_bytes(Child& file, uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> buf(bytes);
  auto read = file.read(offset, bytes, IoVec(buf.data(), buf.size()));
  auto r = co_await read;
  if (!r) co_return r.error();
  co_return buf;
}

std::vector<uint64_t> decode_table(const std::vector<uint8_t>& bytes, uint64_t entries) {
  std::vector<uint64_t> out(entries);
  for (uint64_t i = 0; i < entries; ++i) out[i] = load_be64(&bytes[i * 8]);
  return out;
}

// Checks that [offset, offset + entries * entry_size) is a sane table in the image (QEMU's
// qcow2_validate_table), with `what` naming it.
Result<void> validate_table(uint64_t offset, uint64_t entries, uint64_t entry_size,
                            uint64_t max_bytes, uint64_t cluster_size, const char* what) {
  if (entries > max_bytes / entry_size) return fail(EFBIG, "{} too large", what);
  if ((offset & (cluster_size - 1)) != 0 || offset > (uint64_t{1} << 62) - entries * entry_size) {
    return fail(EINVAL, "Invalid {} offset", what);
  }
  return {};
}

// A backing or data file name from the header, made absolute against the image's directory.
Result<std::string> resolve_name(const std::string& name, const std::string& image_path) {
  if (name.starts_with("/")) return name;
  if (image_path.empty()) {
    return fail(EINVAL, "Cannot use relative backing file names for '{}'", image_path);
  }
  std::filesystem::path dir = std::filesystem::path(image_path).parent_path();
  return (dir / name).string();
}

// The format of a local backing file named without a format: qcow2 if it starts with the magic,
// else raw.
std::string probe_format(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "raw";
  uint8_t magic[4] = {};
  ssize_t n = ::pread(fd, magic, sizeof magic, 0);
  ::close(fd);
  if (n == 4 && load_be32(magic) == kMagic) return "qcow2";
  return "raw";
}

}  // namespace

Result<RuntimeOptions> parse_runtime_options(OptionReader& r) {
  RuntimeOptions o;
  auto lazy = r.get_bool("lazy-refcounts");
  if (!lazy) return lazy.error();
  o.lazy_refcounts = *lazy;
  const std::pair<const char*, bool*> bools[] = {
      {"pass-discard-request", &o.pass_discard_request},
      {"pass-discard-snapshot", &o.pass_discard_snapshot},
      {"pass-discard-other", &o.pass_discard_other},
  };
  for (auto [name, out] : bools) {
    auto v = r.get_bool(name);
    if (!v) return v.error();
    if (*v) *out = **v;
  }
  auto snapshot = r.get_string("x-snapshot");
  if (!snapshot) return snapshot.error();
  o.snapshot = *snapshot;
  auto cache = r.get_size("cache-size");
  if (!cache) return cache.error();
  o.cache_size = *cache;
  auto l2 = r.get_size("l2-cache-size");
  if (!l2) return l2.error();
  o.l2_cache_size = *l2;
  auto rc = r.get_size("refcount-cache-size");
  if (!rc) return rc.error();
  o.refcount_cache_size = *rc;
  auto interval = r.get_uint("cache-clean-interval");
  if (!interval) return interval.error();
  if (*interval) o.cache_clean_interval = **interval;
  return o;
}

// The L2 cache QEMU gives by default: enough to map the whole disk, at most 32 MiB.
size_t default_l2_tables(const Header& h, const RuntimeOptions& o) {
  const uint64_t cs = h.cluster_size();
  const uint64_t entry = h.extended_l2() ? 16 : 8;
  const uint64_t per_table = cs / entry;
  const uint64_t needed = (h.size + cs * per_table - 1) / (cs * per_table);
  uint64_t bytes = needed * cs;
  if (o.l2_cache_size)
    bytes = *o.l2_cache_size;
  else if (o.cache_size)
    bytes = *o.cache_size * 4 / 5;
  bytes = std::min<uint64_t>(bytes, 32ull << 20);
  return std::max<size_t>(static_cast<size_t>(bytes / cs), 2);
}

size_t default_refcount_blocks(const Header& h, const RuntimeOptions& o) {
  const uint64_t cs = h.cluster_size();
  uint64_t bytes = std::max<uint64_t>(4 * cs, 256 << 10);
  if (o.refcount_cache_size) bytes = *o.refcount_cache_size;
  return std::max<size_t>(static_cast<size_t>(bytes / cs), 2);
}

// Friend of Qcow2Driver: the steps of open that need its private state.
class Qcow2Opener {
 public:
  static Task<Result<std::unique_ptr<Driver>>> open(OpenContext& ctx);

 private:
  static Task<Result<Child*>> open_data_file(OpenContext& ctx, const Header& h);
  static Task<Result<void>> open_backing(OpenContext& ctx, const Header& h);
};

Task<Result<Child*>> Qcow2Opener::open_data_file(OpenContext& ctx, const Header& h) {
  if (!h.has_data_file()) {
    if (ctx.options().has("data-file")) {
      co_return fail(EINVAL, "'data-file' can only be set for images with an external data file");
    }
    co_return nullptr;
  }
  if (ctx.options().has("data-file")) {
    auto open = ctx.open_child("data-file", ChildRole::kData, true);
    co_return co_await open;
  }
  if (!h.data_file) co_return fail(EINVAL, "'data-file' is required for this image");
  auto path = resolve_name(*h.data_file, ctx.node().child("file")->node().filename());
  if (!path) co_return path.error();
  nlohmann::json options = {{"driver", "file"}, {"filename", *path}};
  auto open = ctx.open_implicit_child("data-file", ChildRole::kData, std::move(options));
  co_return co_await open;
}

Task<Result<void>> Qcow2Opener::open_backing(OpenContext& ctx, const Header& h) {
  if (ctx.options().has("backing")) {
    auto open = ctx.open_child_or_null("backing", ChildRole::kCow, false);
    auto child = co_await open;
    if (!child) co_return child.error();
    co_return Result<void>{};
  }
  if (h.backing_file.empty()) co_return Result<void>{};
  auto path = resolve_name(h.backing_file, ctx.node().child("file")->node().filename());
  if (!path) co_return path.error().prefixed("Could not open backing file");
  std::string format = h.backing_format ? *h.backing_format : probe_format(*path);
  nlohmann::json options = {{"driver", format},
                            {"file", {{"driver", "file"}, {"filename", *path}}}};
  auto open = ctx.open_implicit_child("backing", ChildRole::kCow, std::move(options));
  auto child = co_await open;
  if (!child) co_return child.error().prefixed("Could not open backing file");
  co_return Result<void>{};
}

Task<Result<std::unique_ptr<Driver>>> Qcow2Opener::open(OpenContext& ctx) {
  auto options = parse_runtime_options(ctx.options());
  if (!options) co_return options.error();
  auto open_file = ctx.open_child("file", ChildRole::kImage, true);
  auto file = co_await open_file;
  if (!file) co_return file.error();
  Child& f = **file;

  auto read_start = read_bytes(f, 0, 512);
  auto start = co_await read_start;
  if (!start) co_return start.error().prefixed("Could not read the qcow2 header");
  if (f.size() < 48) co_return fail(EINVAL, "Image is not in qcow2 format");
  auto bits = peek_cluster_bits(*start);
  if (!bits) co_return bits.error();
  auto read_cluster = read_bytes(f, 0, uint64_t{1} << *bits);
  auto cluster0 = co_await read_cluster;
  if (!cluster0) co_return cluster0.error().prefixed("Could not read the qcow2 header");
  auto decoded = decode_header(*cluster0);
  if (!decoded) co_return decoded.error();
  Header h = std::move(*decoded);

  const NodeOptions& g = ctx.generic();
  const bool writable = !g.read_only;
  if (h.crypt_method != 0) {
    co_return fail(ENOTSUP, "Encrypted qcow2 images are not supported (crypt method {})",
                   h.crypt_method);
  }
  if ((h.incompatible_features & incompat::kCorrupt) != 0 && writable) {
    co_return fail(EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
  }
  const uint64_t cs = h.cluster_size();
  auto rt_valid =
      validate_table(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} * cs / 8, 8,
                     kMaxRefcountTableBytes, cs, "reference count table");
  if (!rt_valid) {
    if (rt_valid.error().err() == EFBIG) co_return fail(EINVAL, "Reference count table too large");
    co_return rt_valid.error();
  }
  auto l1_valid = validate_table(h.l1_table_offset, h.l1_size, 8, kMaxL1Bytes, cs, "L1 table");
  if (!l1_valid) {
    if (l1_valid.error().err() == EFBIG) co_return fail(EFBIG, "Active L1 table too large");
    co_return l1_valid.error();
  }
  const uint64_t l2_entries = cs / (h.extended_l2() ? 16 : 8);
  const uint64_t l1_needed = (h.size + cs * l2_entries - 1) / (cs * l2_entries);
  if (h.l1_size < l1_needed) co_return fail(EINVAL, "L1 table is too small");
  if (h.nb_snapshots > 65536) co_return fail(EFBIG, "Too many snapshots");

  auto data_file = open_data_file(ctx, h);
  auto data = co_await data_file;
  if (!data) co_return data.error();
  auto backing = open_backing(ctx, h);
  auto b = co_await backing;
  if (!b) co_return b.error();

  auto read_l1 = read_bytes(f, h.l1_table_offset, uint64_t{h.l1_size} * 8);
  auto l1 = co_await read_l1;
  if (!l1) co_return l1.error().prefixed("Could not read L1 table");
  const uint64_t rt_entries = uint64_t{h.refcount_table_clusters} * cs / 8;
  auto read_rt = read_bytes(f, h.refcount_table_offset, rt_entries * 8);
  auto rt = co_await read_rt;
  if (!rt) co_return rt.error().prefixed("Could not read the refcount table");

  auto d = std::make_unique<Qcow2Driver>(ctx.node(), f, h, *options);
  d->data_file_ = *data;
  d->l1_ = decode_table(*l1, h.l1_size);
  d->reftable_ = decode_table(*rt, rt_entries);
  d->lazy_refcounts_ =
      options->lazy_refcounts.value_or((h.compatible_features & compat::kLazyRefcounts) != 0);
  if (d->lazy_refcounts_ && h.version < 3) {
    co_return fail(EINVAL,
                   "Lazy refcounts require a qcow2 image with at least qemu 1.1 "
                   "compatibility level");
  }
  d->l2_cache_.set_capacity(default_l2_tables(h, *options));
  d->refblock_cache_.set_capacity(default_refcount_blocks(h, *options));
  if ((h.incompatible_features & incompat::kDirty) != 0 && writable && g.auto_read_only) {
    d->needs_repair_ = true;
  } else if ((h.incompatible_features & incompat::kDirty) != 0 && writable) {
    auto repair = d->repair_dirty();
    auto repaired = co_await repair;
    if (!repaired) co_return repaired.error().prefixed("Could not repair dirty image");
  }
  if (options->snapshot) {
    if (writable) {
      co_return fail(EINVAL, "x-snapshot can only be used with read-only images (read-only=on)");
    }
    auto load = d->load_snapshot(*options->snapshot);
    auto loaded = co_await load;
    if (!loaded) co_return loaded.error();
  }
  d->arm_cache_cleaner();
  co_return std::unique_ptr<Driver>(std::move(d));
}

// Like QEMU's bdrv_snapshot_load_tmp (qemu-img convert -l): the snapshot's L1 table replaces the
// active one in memory, and the node shows the disk as it was.
Task<Result<void>> Qcow2Driver::load_snapshot(std::string id_or_name) {
  auto read = read_snapshot_table();
  auto table = co_await read;
  if (!table) co_return table.error();
  const Snapshot* found = nullptr;
  for (const Snapshot& s : *table) {
    if (s.id == id_or_name) found = &s;
  }
  for (const Snapshot& s : *table) {
    if (found == nullptr && s.name == id_or_name) found = &s;
  }
  if (found == nullptr) co_return fail(ENOENT, "Can't find snapshot '{}'", id_or_name);
  auto valid = validate_table(found->l1_table_offset, found->l1_size, 8, kMaxL1Bytes,
                              cluster_size(), "L1 table");
  if (!valid) co_return valid.error().prefixed("Snapshot L1 table");
  auto read_l1 = read_bytes(*file_, found->l1_table_offset, uint64_t{found->l1_size} * 8);
  auto l1 = co_await read_l1;
  if (!l1) co_return l1.error().prefixed("Could not read the snapshot's L1 table");
  l1_ = decode_table(*l1, found->l1_size);
  if (found->disk_size) header_.size = *found->disk_size;
  co_return Result<void>{};
}

Task<Result<std::unique_ptr<Driver>>> Qcow2Driver::open(OpenContext& ctx) {
  return Qcow2Opener::open(ctx);
}

// What parse_runtime_options and Qcow2Opener::open read.
constexpr DriverOption kQcow2Options[] = {
    {"file", OptionType::kBlockdevRef, true},    {"backing", OptionType::kBlockdevRefOrNull},
    {"data-file", OptionType::kBlockdevRef},     {"lazy-refcounts", OptionType::kBool},
    {"pass-discard-request", OptionType::kBool}, {"pass-discard-snapshot", OptionType::kBool},
    {"pass-discard-other", OptionType::kBool},   {"x-snapshot", OptionType::kString},
    {"cache-size", OptionType::kSize},           {"l2-cache-size", OptionType::kSize},
    {"refcount-cache-size", OptionType::kSize},  {"cache-clean-interval", OptionType::kUint},
};

const DriverClass kQcow2Class = {"qcow2", DriverKind::kFormat, &Qcow2Driver::open, true,
                                 kQcow2Options};

}  // namespace strata::qcow2
