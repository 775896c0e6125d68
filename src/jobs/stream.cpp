// block-stream: QEMU's stream_start / stream_run / stream_prepare / stream_clean, in that order
// and with their texts. See stream.h.
#include "stream.h"

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdio>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "block_copy.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {
namespace {

// QEMU's STREAM_CHUNK: large enough to fill several clusters per request.
constexpr uint64_t kStreamChunk = 512 * 1024;
// Chunks read (and copied up) at once. Measured with bench/stream_bench.sh's chain (512 MiB
// scattered over a 1 GiB qcow2 base, page cache dropped, loaded 2-core machine): one in flight
// 0.70-0.83 s, 4-16 in flight 0.61-0.84 s, noisy; 8 sits on that plateau with 4 MiB of
// buffers. The disk alone reads the base in 0.52-0.68 s, so more cannot gain much.
constexpr uint32_t kStreamMaxInFlight = 8;

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
  // After a failed attach: the job's handle on the filter, if it got one. The caller moves the
  // filter's other parents back to the device first and then closes it with this handle (the
  // filter may have no other parent, and would close under the caller's feet).
  std::unique_ptr<BlockBackend> take_handle() { return std::move(blk_); }

 protected:
  Task<Result<void>> run() override;
  Task<Result<void>> prepare() override;
  Task<void> clean() override;

 private:
  Result<void> hold_nodes(Node& filter);
  Task<Result<bool>> needs_copy(uint64_t offset, uint64_t* bytes);
  Task<void> drop_filter();
  Task<Result<void>> set_backing();

  // A chunk whose read failed, for run() to apply the error policy to.
  struct Failure {
    uint64_t offset = 0;
    uint64_t bytes = 0;
    Error error;
  };
  class SlotAwaiter;
  Task<void> drained();
  Task<void> copy_chunk(uint64_t offset, uint64_t bytes);
  Task<bool> settle_failures(std::optional<Error>* ignored);
  std::vector<uint8_t> take_buffer();
  void chunk_done();

  StreamArgs args_;
  Node* base_overlay_;             // the last image whose data is copied
  Node* new_backing_;              // the device's backing at the end (nullptr: none)
  Node* filter_ = nullptr;         // the copy-on-read filter, until dropped
  bool device_read_only_ = false;  // reopened read-write for the duration
  std::unique_ptr<BlockBackend> blk_;

  uint32_t in_flight_ = 0;
  std::coroutine_handle<> waiter_;  // run(), waiting for in_flight_ < waiter_limit_
  uint32_t waiter_limit_ = 0;
  std::vector<Failure> failures_;
  std::vector<std::vector<uint8_t>> free_buffers_;  // at most kStreamMaxInFlight + 1
};

// Suspends the run loop until fewer than `limit` chunks are in flight.
class StreamJob::SlotAwaiter {
 public:
  SlotAwaiter(StreamJob& job, uint32_t limit) : job_(job), limit_(limit) {}
  bool await_ready() const noexcept { return job_.in_flight_ < limit_; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    job_.waiter_ = h;
    job_.waiter_limit_ = limit_;
  }
  void await_resume() const noexcept {}

 private:
  StreamJob& job_;
  uint32_t limit_;
};

Result<void> StreamJob::attach(Node& filter, bool read_only) {
  auto held = hold_nodes(filter);
  if (!held) return held;
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
// through the copy-on-read filter, which writes it into the device. Unlike QEMU, up to
// kStreamMaxInFlight chunks are read at once: one request at a time leaves a cold disk idle
// between requests (see the constant). The decisions stay in this loop, in offset order: which
// range needs a copy, the rate limit, pause and cancel; failed chunks come back here too, and
// the policy is applied to them one at a time once nothing is in flight. A pause or cancel
// stops new chunks; those in flight finish meanwhile (as QEMU's mirror and backup copies do). An
// error the policy ignores still fails the job at the end, so the backing file is not removed.
Task<Result<void>> StreamJob::run() {
  if (args_.device == base_overlay_) co_return Result<void>{};  // nothing to stream
  const uint64_t len = blk_->size();
  progress_set_total(len);
  std::optional<Error> ignored;
  uint64_t copied = 0;  // bytes the previous round issued, for the rate limit
  for (uint64_t offset = 0; offset < len;) {
    auto limit = rate_limit(copied);
    co_await limit;
    copied = 0;
    if (is_cancelled()) break;
    if (!failures_.empty()) {
      auto settle = settle_failures(&ignored);
      if (!co_await settle) break;
      continue;  // the pause (stop) or cancel it may have brought is seen first
    }
    uint64_t n = std::min(kStreamChunk, len - offset);
    auto query = needs_copy(offset, &n);
    auto copy = co_await query;
    if (!copy) {
      auto drain = drained();
      co_await drain;
      auto decide = handle_error(true, copy.error());
      ErrorAction action = co_await decide;
      if (action == ErrorAction::kRetry) continue;
      if (!ignored) ignored = copy.error();
      if (action == ErrorAction::kReport) break;
    } else if (*copy) {
      SlotAwaiter slot(*this, kStreamMaxInFlight);
      co_await slot;
      ++in_flight_;
      copied = n;
      spawn(copy_chunk(offset, n));
      offset += n;
      continue;
    }
    progress_add(n);
    offset += n;
  }
  // Nothing may stay in flight once run() returns; the failures of the last chunks still go
  // through the policy (unless the job was cancelled).
  auto settle = settle_failures(&ignored);
  co_await settle;
  if (ignored) co_return *ignored;
  co_return Result<void>{};
}

// Waits until nothing the run loop issued is in flight.
Task<void> StreamJob::drained() {
  SlotAwaiter none(*this, 1);
  co_await none;
}

// One chunk, issued by run(): read through the filter, which copies it into the device. A
// failure is left for run() to decide about.
Task<void> StreamJob::copy_chunk(uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> buffer = take_buffer();
  auto populate = blk_->read(offset, bytes, IoVec(buffer.data(), bytes));
  auto result = co_await populate;
  free_buffers_.push_back(std::move(buffer));
  if (result) {
    progress_add(bytes);
  } else {
    failures_.push_back(Failure{offset, bytes, result.error()});
  }
  chunk_done();
}

std::vector<uint8_t> StreamJob::take_buffer() {
  if (free_buffers_.empty()) return std::vector<uint8_t>(kStreamChunk);
  std::vector<uint8_t> buffer = std::move(free_buffers_.back());
  free_buffers_.pop_back();
  return buffer;
}

// The run loop is resumed from the event loop, not from here: it may finish and let the job
// go while this chunk's coroutine is still unwinding.
void StreamJob::chunk_done() {
  --in_flight_;
  if (waiter_ && in_flight_ < waiter_limit_) {
    std::coroutine_handle<> waiter = std::exchange(waiter_, {});
    engine().loop().post([waiter] { waiter.resume(); });
  }
}

// Once nothing is in flight, applies on-error to each failed chunk in offset order (QEMU
// meets them in that order): retry reads the chunk again (unless the job was cancelled
// meanwhile), ignore counts it as done and remembers the first error. False: stop streaming
// (report, or cancelled).
Task<bool> StreamJob::settle_failures(std::optional<Error>* ignored) {
  auto drain = drained();
  co_await drain;
  std::vector<Failure> failures = std::exchange(failures_, {});
  // A cancelled job reports no more errors (QEMU's loop stops before the next request).
  if (is_cancelled()) co_return false;
  std::sort(failures.begin(), failures.end(),
            [](const Failure& a, const Failure& b) { return a.offset < b.offset; });
  for (Failure& failure : failures) {
    while (true) {
      auto decide = handle_error(true, failure.error);
      ErrorAction action = co_await decide;
      if (action == ErrorAction::kRetry) {
        if (is_cancelled()) co_return false;
        std::vector<uint8_t> buffer = take_buffer();
        auto again = blk_->read(failure.offset, failure.bytes, IoVec(buffer.data(), failure.bytes));
        auto result = co_await again;
        free_buffers_.push_back(std::move(buffer));
        if (!result) {
          failure.error = result.error();
          continue;
        }
        progress_add(failure.bytes);
        break;
      }
      if (!*ignored) *ignored = failure.error;
      if (action == ErrorAction::kReport) co_return false;
      progress_add(failure.bytes);
      break;
    }
  }
  co_return true;
}

// QEMU's bdrv_cor_filter_drop: the filter's parents (but the job's own handle, which goes
// first) move back to the device, and the filter closes, which unfreezes the chain it held.
Task<void> StreamJob::drop_filter() {
  if (filter_ == nullptr) co_return;
  // A guest read copying up through the filter must land before the filter's parents move:
  // afterwards their writes no longer wait for it, and it would overwrite one with older data.
  // (After a successful run nothing is left to copy up, but on cancel or failure there is.)
  auto drain = filter_->drain();
  co_await drain;
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
    // A write already under way on the device did not pass the filter's lock: a copy that read
    // the backing data before it completed would land afterwards and undo it. Wait for them;
    // the insertion follows without a suspension, so no write starts in between.
    auto drain = device.drain_writes();
    co_await drain;
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
    std::unique_ptr<BlockBackend> handle;
    if (job != nullptr) {
      handle = job->take_handle();
      auto early = manager.early_fail(*job);
      co_await early;
    }
    const Child* own = handle != nullptr ? &handle->root() : nullptr;
    (void)engine.replace_node(**filter, device, [own](const Child& edge) { return &edge == own; });
    if (handle != nullptr) {
      auto close = engine.close_backend(std::move(handle));
      co_await close;
    } else {
      auto release = engine.release_node(*filter);
      co_await release;
    }
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
