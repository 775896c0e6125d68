// block-stream: QEMU's stream_start / stream_run / stream_prepare / stream_clean, in that order
// and with their texts. See stream.h.
#include "stream.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "block_copy.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"

namespace strata {
namespace {

// QEMU's STREAM_CHUNK: large enough to fill several clusters per request.
constexpr uint64_t kStreamChunk = 512 * 1024;

bool is_filter(const Node& node) { return node.driver_class().kind == DriverKind::kFilter; }

// `node`'s backing node with the filters below it skipped, or nullptr.
Node* backing_skipping_filters(const Node& node) {
  Child* backing = node.child("backing");
  Node* iter = backing != nullptr ? &backing->node() : nullptr;
  while (iter != nullptr && is_filter(*iter)) iter = next_in_chain(*iter);
  return iter;
}

// QEMU's bdrv_find_overlay: the image in `top`'s chain whose backing (past filters) is `base`;
// with base nullptr, the last image of the chain. nullptr when base is not in the chain.
Node* find_overlay(Node& top, Node* base) {
  for (Node* iter = &top; iter != nullptr; iter = next_in_chain(*iter)) {
    if (is_filter(*iter)) continue;
    if (backing_skipping_filters(*iter) == base) return iter;
  }
  return nullptr;
}

class StreamJob final : public Job {
 public:
  StreamJob(Engine& engine, JobOptions options, StreamArgs args, Node* base_overlay)
      : Job(engine, JobType::kStream, std::move(options)),
        args_(std::move(args)),
        base_overlay_(base_overlay),
        // QEMU's bdrv_filter_or_cow_bs(above_base): base itself, or what lies below bottom.
        new_backing_(args_.bottom != nullptr ? next_in_chain(*args_.bottom) : args_.base) {}

  // The parts of QEMU's stream_start that come after block_job_create; on error the caller
  // fails the job early and undoes the rest.
  Result<void> attach(Node& filter, bool read_only);

 protected:
  Task<Result<void>> run() override;
  Task<Result<void>> prepare() override;
  Task<void> clean() override;

 private:
  Result<void> hold_nodes(Node& filter);
  Task<Result<bool>> needs_copy(uint64_t offset, uint64_t* bytes);
  Task<void> drop_filter();
  Task<Result<void>> set_backing();

  StreamArgs args_;
  Node* base_overlay_;             // the last image whose data is copied
  Node* new_backing_;              // the device's backing at the end (nullptr: none)
  Node* filter_ = nullptr;         // the copy-on-read filter, until dropped
  bool device_read_only_ = false;  // reopened read-write for the duration
  std::unique_ptr<BlockBackend> blk_;
};

Result<void> StreamJob::attach(Node& filter, bool read_only) {
  auto held = hold_nodes(filter);
  if (!held) {
    blk_.reset();  // before the caller moves the filter's parents back to the device
    return held;
  }
  filter_ = &filter;
  device_read_only_ = read_only;
  return {};
}

Result<void> StreamJob::hold_nodes(Node& filter) {
  const Perm basic = Perm::kConsistentRead | Perm::kWriteUnchanged;
  auto blk = attach_backend(filter, Perm::kConsistentRead, basic | Perm::kWrite);
  if (!blk) return blk.error();
  blk_ = std::move(*blk);
  // No resize while the job runs: the length is read once, at the start.
  auto active = add_node(*args_.device, "active node", Perm::kNone, basic | Perm::kWrite);
  if (!active) return active.error();
  // The intermediate images leave the chain at the end, and every block is read once: nobody
  // else may write them meanwhile.
  for (Node* iter = next_in_chain(*args_.device); iter != nullptr && iter != new_backing_;
       iter = next_in_chain(*iter)) {
    auto held = add_node(*iter, "intermediate node", Perm::kNone, basic);
    if (!held) return held.error();
  }
  return {};
}

// Whether [offset, offset + *bytes) needs copying: not in the device itself, but somewhere in
// its chain down to base_overlay. Shrinks *bytes to the prefix the answer holds for.
Task<Result<bool>> StreamJob::needs_copy(uint64_t offset, uint64_t* bytes) {
  Node& device = *args_.device;
  auto own_query = chain_status(device, next_in_chain(device), offset, *bytes);
  auto own = co_await own_query;
  if (!own) co_return own.error();
  *bytes = own->bytes;
  if (own->allocated) co_return false;
  Node* below = next_in_chain(device);
  if (below == nullptr) co_return false;
  auto chain_query = chain_status(*below, new_backing_, offset, *bytes);
  auto chain = co_await chain_query;
  if (!chain) co_return chain.error();
  *bytes = chain->bytes;
  co_return chain->allocated;
}

// QEMU's stream_run: every range the device lacks but the chain above base holds is read
// through the copy-on-read filter, which writes it into the device. An error the policy
// ignores still fails the job at the end, so the backing file is not removed.
Task<Result<void>> StreamJob::run() {
  if (args_.device == base_overlay_) co_return Result<void>{};  // nothing to stream
  const uint64_t len = blk_->size();
  progress_set_total(len);
  std::vector<uint8_t> buf(kStreamChunk);
  std::optional<Error> ignored;
  uint64_t copied = 0;  // bytes the previous round read, for the rate limit
  for (uint64_t offset = 0; offset < len;) {
    auto limit = rate_limit(copied);
    co_await limit;
    copied = 0;
    if (is_cancelled()) break;
    uint64_t n = std::min(kStreamChunk, len - offset);
    auto query = needs_copy(offset, &n);
    auto copy = co_await query;
    Result<void> result = copy ? Result<void>{} : Result<void>(copy.error());
    if (copy && *copy) {
      auto populate = blk_->read(offset, n, IoVec(buf.data(), n));
      result = co_await populate;
    }
    if (!result) {
      auto decide = handle_error(true, result.error());
      ErrorAction action = co_await decide;
      if (action == ErrorAction::kRetry) continue;
      if (!ignored) ignored = result.error();
      if (action == ErrorAction::kReport) break;
    }
    progress_add(n);
    if (copy && *copy) copied = n;
    offset += n;
  }
  if (ignored) co_return *ignored;
  co_return Result<void>{};
}

// QEMU's bdrv_cor_filter_drop: the filter's parents (but the job's own handle, which goes
// first) move back to the device, and the filter closes, which unfreezes the chain it held.
Task<void> StreamJob::drop_filter() {
  if (filter_ == nullptr) co_return;
  Child* own = blk_ != nullptr && blk_->has_root() ? &blk_->root() : nullptr;
  auto keep_own = [own](const Child& edge) { return &edge == own; };
  auto moved = engine().replace_node(*filter_, *args_.device, keep_own);
  if (!moved) {
    std::fprintf(stderr, "strata: stream job '%s' could not remove its filter '%s': %s\n",
                 id().c_str(), filter_->name().c_str(), moved.error().message().c_str());
    co_return;
  }
  filter_ = nullptr;
  // Only the job's handle holds the filter now: letting go of it closes the filter (awaited, so
  // the chain it froze is free again before prepare changes it).
  auto close = engine().close_backend(std::move(blk_));
  co_await close;
}

// QEMU's stream_prepare: the filter goes first (it holds the chain frozen), then the device's
// backing link moves to base and the image records it.
Task<Result<void>> StreamJob::prepare() {
  auto drop = drop_filter();
  co_await drop;
  auto changed = set_backing();
  co_return co_await changed;
}

Task<Result<void>> StreamJob::set_backing() {
  Node& device = *args_.device;
  Child* backing = device.child("backing");
  if (backing == nullptr) co_return Result<void>{};
  Node* base = new_backing_;
  while (base != nullptr && is_filter(*base)) base = next_in_chain(*base);
  std::string filename;
  std::string format;
  if (base != nullptr) {
    filename = args_.backing_file.empty() ? base->filename() : args_.backing_file;
    format = std::string(base->driver_class().name);
    if (base->driver_class().kind == DriverKind::kProtocol && args_.backing_mask_protocol) {
      format = "raw";
    }
    auto replaced = engine().replace_child(*backing, *new_backing_);
    if (!replaced) co_return fail(EPERM, "{}", replaced.error().message());
  } else {
    auto detach = engine().detach_child(backing);
    co_await detach;
  }
  auto change = device.driver().change_backing_file(filename, format);
  co_return co_await change;
}

// QEMU's stream_clean: the filter goes (if prepare did not get to it), and a device that was
// read-only is read-only again, on success, failure and cancel alike.
Task<void> StreamJob::clean() {
  auto drop = drop_filter();
  co_await drop;
  if (device_read_only_) {
    auto reopen = engine().set_read_only(*args_.device, true);
    auto reopened = co_await reopen;
    if (!reopened) {
      std::fprintf(stderr, "strata: could not make '%s' read-only again: %s\n",
                   args_.device->name().c_str(), reopened.error().message().c_str());
    }
    device_read_only_ = false;
  }
}

// QEMU's stream_start up to block_job_create: the device is made writable (with the chain held
// frozen meanwhile) and the copy-on-read filter put above it. Returns the filter.
Task<Result<Node*>> insert_filter(Engine& engine, const StreamArgs& args, Node& base_overlay,
                                  bool read_only) {
  Node& device = *args.device;
  if (read_only) {
    std::vector<Child*> held;
    for (Node* iter = &device; iter != &base_overlay; iter = next_in_chain(*iter)) {
      Child* link = chain_link(*iter);
      if (link == nullptr || link->frozen()) break;
      link->set_frozen(true);
      held.push_back(link);
    }
    auto reopen = engine.set_read_only(device, false);
    auto reopened = co_await reopen;
    for (Child* link : held) link->set_frozen(false);
    if (!reopened) co_return reopened.error();
  }
  nlohmann::json options = {
      {"driver", "copy-on-read"}, {"file", device.name()}, {"bottom", base_overlay.name()}};
  if (!args.filter_node_name.empty()) options["node-name"] = args.filter_node_name;
  const DriverClass* cls = engine.find_driver("copy-on-read");
  Result<Node*> filter = fail(ENOTSUP, "Unknown driver 'copy-on-read'");
  if (cls != nullptr) {
    auto open = engine.add_internal_node(*cls, std::move(options));
    filter = co_await open;
  }
  if (filter) {
    auto inserted = engine.replace_node(device, **filter);
    if (inserted) co_return *filter;
    auto release = engine.release_node(*filter);
    co_await release;
    filter = inserted.error();
  }
  if (read_only) {
    auto back = engine.set_read_only(device, true);
    (void)co_await back;  // QEMU ignores this failure too: the node merely stays writable
  }
  co_return filter.error();
}

}  // namespace

Task<Result<Job*>> start_stream_job(JobManager& manager, Engine& engine, JobOptions options,
                                    StreamArgs args) {
  Node& device = *args.device;
  Node* base_overlay = args.bottom;
  if (base_overlay == nullptr) {
    base_overlay = find_overlay(device, args.base);
    if (base_overlay == nullptr) {
      co_return fail(EINVAL, "'{}' is not in the backing chain of '{}'",
                     args.base != nullptr ? args.base->name() : std::string(), device.name());
    }
  }
  const bool read_only = device.is_read_only();
  auto insert = insert_filter(engine, args, *base_overlay, read_only);
  auto filter = co_await insert;
  if (!filter) co_return filter.error();

  auto added =
      manager.add(std::make_unique<StreamJob>(engine, std::move(options), args, base_overlay));
  Result<void> ready = added ? Result<void>{} : Result<void>(added.error());
  StreamJob* job = added ? static_cast<StreamJob*>(*added) : nullptr;
  if (job != nullptr) ready = job->attach(**filter, read_only);
  if (!ready) {
    // QEMU's stream_start failure path: the job fails early (its edges go), then the filter
    // goes and the device is read-only again.
    if (job != nullptr) {
      auto early = manager.early_fail(*job);
      co_await early;
    }
    (void)engine.replace_node(**filter, device);
    auto release = engine.release_node(*filter);
    co_await release;
    if (read_only) {
      auto back = engine.set_read_only(device, true);
      (void)co_await back;
    }
    co_return ready.error();
  }
  manager.start(*job);
  co_return static_cast<Job*>(job);
}

}  // namespace strata
