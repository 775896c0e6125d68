// Active block-commit on the mirror machinery: QEMU's commit_active_start, mirror_start_job,
// mirror_run and mirror_exit_common, in that order and with their texts. See mirror.h.
#include "mirror.h"

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "block_copy.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/dirty_bitmap.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"

namespace strata {
namespace {

// The largest range one copy request moves, and how many run at once (QEMU's mirror moves at
// most 16 MiB per iteration in up to 16 requests).
constexpr uint64_t kMaxChunk = uint64_t{1} << 20;
constexpr uint32_t kMaxInFlight = 16;
// How long a ready job with nothing to do sleeps before it looks again (QEMU's
// BLOCK_JOB_SLICE_TIME); a write to top wakes it at once.
constexpr uint64_t kIdleSliceNs = 100'000'000;

// ---- mirror_top: the filter above top while the job runs ----

// It passes everything through to its `backing` child. For a commit it takes no
// CONSISTENT_READ on top (the job's "intermediate node" edges refuse it below top, and top
// reads its backing chain for its parents) and shares WRITE, which the job needs on base: a
// backing chain shares WRITE on a backing node only if the overlay's parents share it.
//
// Writes can be held at a gate while the job makes its last pass before the pivot; when the
// gate opens they go on to top, or to the node the job redirected them to (base, after the
// pivot moved the devices there).
class MirrorTopDriver final : public FilterDriver {
 public:
  explicit MirrorTopDriver(Child& backing) : FilterDriver(backing) {}

  ChildPerms child_perms(const Child& child, ChildRole role, Perm perm,
                         Perm shared) const override {
    ChildPerms p = Driver::child_perms(child, role, perm, shared);
    p.perm = p.perm & ~Perm::kConsistentRead;
    p.shared = p.shared | Perm::kWrite;
    return p;
  }

  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    if (closed_) co_await GateAwaiter{this};
    if (redirect_ != nullptr) {
      auto write = redirect_->write(offset, bytes, std::move(iov), flags);
      co_return co_await write;
    }
    auto write = FilterDriver::pwritev(offset, bytes, std::move(iov), flags);
    co_return co_await write;
  }
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    if (closed_) co_await GateAwaiter{this};
    if (redirect_ != nullptr) {
      auto zero = redirect_->pwrite_zeroes(offset, bytes, flags);
      co_return co_await zero;
    }
    auto zero = FilterDriver::pwrite_zeroes(offset, bytes, flags);
    co_return co_await zero;
  }
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override {
    if (closed_) co_await GateAwaiter{this};
    if (redirect_ != nullptr) {
      auto discard = redirect_->discard(offset, bytes);
      co_return co_await discard;
    }
    auto discard = FilterDriver::pdiscard(offset, bytes);
    co_return co_await discard;
  }

  // New writes wait until open_gate().
  void close_gate() { closed_ = true; }
  // Lets the held writes go on, to `redirect` when given (they then bypass this node's child:
  // the devices that issued them hold their permissions on `redirect` by now). Each held
  // write is resumed here, inline, so it has reached the node below before this returns.
  void open_gate(Node* redirect = nullptr) {
    closed_ = false;
    redirect_ = redirect;
    for (std::coroutine_handle<> h : std::exchange(held_, {})) h.resume();
  }
  bool gate_closed() const { return closed_; }

 private:
  struct GateAwaiter {
    MirrorTopDriver* driver;
    bool await_ready() const noexcept { return !driver->closed_; }
    void await_suspend(std::coroutine_handle<> h) { driver->held_.push_back(h); }
    void await_resume() const noexcept {}
  };

  bool closed_ = false;
  Node* redirect_ = nullptr;
  std::vector<std::coroutine_handle<>> held_;
};

Task<Result<std::unique_ptr<Driver>>> open_mirror_top(OpenContext& ctx) {
  auto task = ctx.open_child("backing", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await task;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<MirrorTopDriver>(**child));
}

const DriverClass kMirrorTop{"mirror_top", DriverKind::kFilter, &open_mirror_top};

MirrorTopDriver& gate_of(Node& filter) { return static_cast<MirrorTopDriver&>(filter.driver()); }

// QEMU's bdrv_get_default_bitmap_granularity: the target's cluster size within [4 KiB, 64 KiB].
uint64_t bitmap_granularity(Node& target) {
  uint64_t cluster = target.driver().image_facts().cluster_size;
  if (cluster == 0) return uint64_t{64} << 10;
  return std::clamp<uint64_t>(cluster, uint64_t{4} << 10, uint64_t{64} << 10);
}

struct Range {
  uint64_t offset = 0;
  uint64_t end = 0;
};

struct BufferFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], BufferFree>;

class ActiveCommitJob final : public Job {
 public:
  ActiveCommitJob(Engine& engine, JobOptions options, ActiveCommitArgs args, Node& filter,
                  bool base_read_only)
      : Job(engine, JobType::kCommit, std::move(options)),
        args_(std::move(args)),
        filter_(&filter),
        base_read_only_(base_read_only) {}
  ~ActiveCommitJob() override { detach_bitmap(); }

  // The rest of QEMU's mirror_start_job once the job exists: handles, job edges, the frozen
  // chain and the dirty bitmap. On error the caller undoes it (undo_setup) and fails the job.
  Result<void> attach();
  // Undoes attach() but for the job edges (early_fail's) and the handle on mirror_top, which
  // it hands back: the caller moves mirror_top's parents back to top and then closes it.
  std::unique_ptr<BlockBackend> undo_setup();

 protected:
  Task<Result<void>> run() override;
  Task<Result<void>> prepare() override;
  Task<void> clean() override;
  Result<void> complete() override;
  // A soft cancel of a ready job ends it without a pivot (QEMU's mirror_cancel).
  bool on_cancel(bool force) override { return force || !is_ready(); }

 private:
  class OpWaiter;

  // The edges graph changes leave in place: the job's own, and its handle on mirror_top (which
  // closes mirror_top when it goes).
  bool is_own_edge(const Child& edge) const {
    return &edge.parent() == this || (source_ != nullptr && &edge == &source_->root());
  }
  Result<void> freeze_chain();
  void unfreeze_chain();
  void detach_bitmap();
  Task<Result<void>> populate(uint64_t len);
  std::optional<Range> next_chunk();
  void issue(Range range);
  Task<void> copy_op(Range range);
  // Copies [offset, end) as the chain above base shows it; the failed side on error.
  Task<Result<void>> copy_range(Range range, bool* is_read);
  Task<void> wait_for_op();
  Task<Result<void>> flush_target();
  Task<Result<void>> catch_up();
  Result<void> pivot();
  Buffer take_buffer();

  ActiveCommitArgs args_;
  Node* filter_;
  bool base_read_only_;  // base was read-only and is writable while the job runs
  bool chain_frozen_ = false;
  std::unique_ptr<BlockBackend> source_;  // on mirror_top: what the devices see
  std::unique_ptr<BlockBackend> target_;  // on base
  std::unique_ptr<DirtyBitmap> bitmap_;
  bool should_complete_ = false;  // job-complete: pivot at the end
  bool pivoted_ = false;

  std::vector<Range> ops_;  // copy requests in flight
  uint64_t in_flight_bytes_ = 0;
  uint64_t cursor_ = 0;  // where the search for dirty ranges goes on
  std::coroutine_handle<> op_waiter_;
  std::optional<Error> error_;  // reported by on-error: no new requests
  std::vector<Buffer> free_buffers_;
};

class ActiveCommitJob::OpWaiter {
 public:
  explicit OpWaiter(ActiveCommitJob& job) : job_(&job) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { job_->op_waiter_ = h; }
  void await_resume() const noexcept {}

 private:
  ActiveCommitJob* job_;
};

Result<void> ActiveCommitJob::attach() {
  Node& top = *args_.top;
  Node& base = *args_.base;
  auto source = attach_backend(*filter_, Perm::kConsistentRead,
                               Perm::kConsistentRead | Perm::kWriteUnchanged | Perm::kWrite);
  if (!source) return source.error();
  source_ = std::move(*source);
  // Base is read by everything above it while the job writes it, hence the shared perms.
  Perm target_perm = Perm::kWrite;
  if (base.size() < top.size()) target_perm = target_perm | Perm::kResize;
  auto target = attach_backend(base, target_perm,
                               Perm::kWriteUnchanged | Perm::kConsistentRead | Perm::kWrite);
  if (!target) return target.error();
  target_ = std::move(*target);
  auto held = add_node(base, "target", Perm::kNone, Perm::kAll);
  if (!held) return held.error();
  for (Node* iter = next_in_chain(top); iter != nullptr && iter != &base;
       iter = next_in_chain(*iter)) {
    auto mid =
        add_node(*iter, "intermediate node", Perm::kNone, Perm::kWrite | Perm::kWriteUnchanged);
    if (!mid) return mid.error();
  }
  auto frozen = freeze_chain();
  if (!frozen) return frozen;
  bitmap_ = std::make_unique<DirtyBitmap>(top.size(), bitmap_granularity(base));
  bitmap_->set_on_dirty([this] { wake(); });
  top.add_dirty_bitmap(*bitmap_);
  return {};
}

std::unique_ptr<BlockBackend> ActiveCommitJob::undo_setup() {
  unfreeze_chain();
  detach_bitmap();
  target_.reset();
  return std::move(source_);
}

Result<void> ActiveCommitJob::freeze_chain() {
  auto frozen = strata::freeze_chain(*filter_, args_.base);
  chain_frozen_ = frozen.has_value();
  return frozen;
}

void ActiveCommitJob::unfreeze_chain() {
  if (!chain_frozen_) return;
  strata::unfreeze_chain(*filter_, args_.base);
  chain_frozen_ = false;
}

void ActiveCommitJob::detach_bitmap() {
  if (bitmap_ == nullptr) return;
  args_.top->remove_dirty_bitmap(*bitmap_);
  bitmap_.reset();
}

Result<void> ActiveCommitJob::complete() {
  should_complete_ = true;
  wake();
  return {};
}

// QEMU's mirror_dirty_init for a commit: everything allocated above base is to be copied.
Task<Result<void>> ActiveCommitJob::populate(uint64_t len) {
  uint64_t offset = 0;
  while (offset < len) {
    bool go_on = co_await pause_point();
    if (!go_on) co_return fail(ECANCELED, "Operation canceled");
    auto query = chain_status(*args_.top, args_.base, offset, len - offset);
    auto st = co_await query;
    if (!st) co_return st.error();
    if (st->allocated) bitmap_->set(offset, st->bytes);
    offset += st->bytes;
  }
  co_return Result<void>{};
}

// The next dirty range from the cursor on (wrapping once), at most kMaxChunk long and not
// overlapping a request in flight: a range copied twice must reach base in order.
std::optional<Range> ActiveCommitJob::next_chunk() {
  for (int pass = 0; pass < 2; ++pass) {
    uint64_t from = pass == 0 ? cursor_ : 0;
    for (;;) {
      std::optional<uint64_t> start = bitmap_->next_dirty(from);
      if (!start) break;
      uint64_t end = *start + bitmap_->dirty_run(*start, kMaxChunk);
      bool blocked = false;
      for (const Range& op : ops_) {
        if (op.offset < end && *start < op.end) {
          if (op.offset <= *start) {
            from = op.end;
            blocked = true;
            break;
          }
          end = op.offset;
        }
      }
      if (blocked) continue;
      cursor_ = end;
      return Range{*start, end};
    }
  }
  return std::nullopt;
}

void ActiveCommitJob::issue(Range range) {
  // Cleared before the copy reads: a write that lands meanwhile makes the range dirty again.
  bitmap_->reset(range.offset, range.end - range.offset);
  ops_.push_back(range);
  in_flight_bytes_ += range.end - range.offset;
  spawn(copy_op(range));
}

Buffer ActiveCommitJob::take_buffer() {
  if (!free_buffers_.empty()) {
    Buffer b = std::move(free_buffers_.back());
    free_buffers_.pop_back();
    return b;
  }
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(4096, kMaxChunk)));
}

Task<Result<void>> ActiveCommitJob::copy_range(Range range, bool* is_read) {
  uint64_t offset = range.offset;
  while (offset < range.end) {
    *is_read = true;
    auto query = chain_status(*args_.top, args_.base, offset, range.end - offset);
    auto st = co_await query;
    if (!st) co_return st.error();
    uint64_t n = std::min(st->bytes, range.end - offset);
    if (!st->allocated) {
      // Base shows through here already: nothing to copy.
    } else if (st->zero) {
      *is_read = false;
      auto zero = target_->pwrite_zeroes(offset, n, ReqFlags::kMayUnmap);
      auto zeroed = co_await zero;
      if (!zeroed) co_return zeroed.error();
    } else {
      Buffer buf = take_buffer();
      if (buf == nullptr) co_return fail(ENOMEM, "Cannot allocate memory");
      auto read = source_->read(offset, n, IoVec(buf.get(), n));
      auto got = co_await read;
      if (!got) co_return got.error();
      *is_read = false;
      auto write = target_->write(offset, n, IoVec(buf.get(), n));
      auto written = co_await write;
      free_buffers_.push_back(std::move(buf));
      if (!written) co_return written.error();
    }
    offset += n;
  }
  co_return Result<void>{};
}

// One copy request: QEMU's mirror_co_read / mirror_read_complete / mirror_write_complete.
Task<void> ActiveCommitJob::copy_op(Range range) {
  bool is_read = true;
  auto copy = copy_range(range, &is_read);
  auto copied = co_await copy;
  uint64_t bytes = range.end - range.offset;
  if (copied) {
    progress_add(bytes);
  } else {
    // Whatever happened, the range still has to be copied; on-error decides when.
    bitmap_->set(range.offset, bytes);
    auto decide = handle_error(is_read, copied.error());
    ErrorAction action = co_await decide;
    if (action == ErrorAction::kReport && !error_) error_ = copied.error();
  }
  std::erase_if(ops_, [&](const Range& op) { return op.offset == range.offset; });
  in_flight_bytes_ -= bytes;
  if (op_waiter_) {
    std::coroutine_handle<> h = std::exchange(op_waiter_, {});
    engine().loop().post([h] { h.resume(); });
  }
}

Task<void> ActiveCommitJob::wait_for_op() { co_await OpWaiter(*this); }

Task<Result<void>> ActiveCommitJob::flush_target() {
  auto flush = target_->flush();
  co_return co_await flush;
}

// QEMU's mirror_run.
Task<Result<void>> ActiveCommitJob::run() {
  uint64_t len = source_->size();
  progress_set_total(len);
  if (target_->size() < len) {
    auto grow = target_->truncate(len, false, PreallocMode::kOff);
    auto grown = co_await grow;
    if (!grown) co_return grown.error();
  }
  auto init = populate(len);
  auto populated = co_await init;
  if (!populated) co_return populated.error();

  for (;;) {
    if (is_cancelled() || error_) break;
    uint64_t dirty = bitmap_->count();
    progress_set_total(progress_current() + dirty + in_flight_bytes_);
    if (dirty > 0 && ops_.size() < kMaxInFlight) {
      std::optional<Range> chunk = next_chunk();
      if (chunk) {
        auto limit = rate_limit(chunk->end - chunk->offset);
        co_await limit;
        if (is_cancelled() || error_) break;
        // The range is still dirty and free: only this loop clears bits or issues requests.
        issue(*chunk);
        continue;
      }
    }
    if (!ops_.empty()) {
      auto wait = wait_for_op();
      co_await wait;
      continue;
    }
    if (dirty > 0) continue;
    // In sync. The first time, base is flushed and the job becomes ready.
    if (!is_ready()) {
      auto flush = flush_target();
      auto flushed = co_await flush;
      if (!flushed) {
        auto decide = handle_error(false, flushed.error());
        ErrorAction action = co_await decide;
        if (action == ErrorAction::kReport) error_ = flushed.error();
        continue;
      }
      set_ready();
    }
    if (should_complete_ || cancel_requested()) break;
    auto nap = sleep(kIdleSliceNs);
    co_await nap;
    auto point = pause_point();
    co_await point;
  }
  while (!ops_.empty()) {
    auto wait = wait_for_op();
    co_await wait;
  }
  if (error_) co_return *error_;
  if (is_cancelled()) co_return fail(ECANCELED, "Operation canceled");
  co_return Result<void>{};
}

// The last pass before a pivot, with writes through mirror_top held at the gate: every dirty
// range is copied until top is clean with no write in flight, and base is flushed.
Task<Result<void>> ActiveCommitJob::catch_up() {
  Node& top = *args_.top;
  for (;;) {
    auto drain = top.drain_writes();
    co_await drain;
    while (std::optional<uint64_t> start = bitmap_->next_dirty(0)) {
      Range range{*start, *start + bitmap_->dirty_run(*start, kMaxChunk)};
      bitmap_->reset(range.offset, range.end - range.offset);
      bool is_read = true;
      auto copy = copy_range(range, &is_read);
      auto copied = co_await copy;
      if (!copied) {
        bitmap_->set(range.offset, range.end - range.offset);
        co_return copied.error();
      }
      progress_add(range.end - range.offset);
      progress_set_total(progress_current() + bitmap_->count());
    }
    auto flush = flush_target();
    auto flushed = co_await flush;
    if (!flushed) co_return flushed.error();
    // Writes that reach top without passing the gate (another parent of top) may still come.
    if (bitmap_->count() == 0 && top.writes_in_flight() == 0) co_return Result<void>{};
  }
}

// QEMU's mirror_exit_common for a completed commit: top's parents (mirror_top, and anyone
// else above top) move to base, the held writes go on into base, and mirror_top's parents
// (the devices) move to base. Synchronous from the last check of the bitmap on, so no write
// can reach top in between. On error nothing changed.
Result<void> ActiveCommitJob::pivot() {
  Node& top = *args_.top;
  Node& base = *args_.base;
  auto keep = [this](const Child& edge) { return is_own_edge(edge); };
  std::vector<Child*> above_top;
  for (Child* edge : top.parents()) {
    if (!keep(*edge)) above_top.push_back(edge);
  }
  unfreeze_chain();
  target_.reset();
  auto moved = engine().replace_node(top, base, keep);
  if (!moved) return moved;
  auto devices = engine().replace_node(*filter_, base, keep);
  if (!devices) {
    for (Child* edge : above_top) (void)engine().replace_child(*edge, top);
    return devices;
  }
  pivoted_ = true;
  gate_of(*filter_).open_gate(&base);
  return {};
}

Task<Result<void>> ActiveCommitJob::prepare() {
  if (!should_complete_) co_return Result<void>{};  // a soft cancel: no pivot
  MirrorTopDriver& gate = gate_of(*filter_);
  gate.close_gate();
  auto last = catch_up();
  auto caught = co_await last;
  if (!caught) {
    gate.open_gate();
    co_return caught;
  }
  auto done = pivot();
  if (!done) {
    gate.open_gate();
    co_return done;
  }
  co_return Result<void>{};
}

// QEMU's mirror_exit_common, the rest: without a pivot the devices go back to top; either way
// mirror_top goes away; base ends read-only unless it took the place of a writable top.
Task<void> ActiveCommitJob::clean() {
  Engine& eng = engine();
  Node& top = *args_.top;
  Node& base = *args_.base;
  if (gate_of(*filter_).gate_closed()) gate_of(*filter_).open_gate();
  unfreeze_chain();
  detach_bitmap();
  target_.reset();
  // The job's edges refuse consistent reads between top and base, which top's parents need
  // back.
  auto release = release_nodes();
  co_await release;
  if (!pivoted_) {
    auto keep = [this](const Child& edge) { return is_own_edge(edge); };
    auto back = eng.replace_node(*filter_, top, keep);
    if (!back) {
      std::fprintf(stderr, "strata: commit job '%s' could not put '%s' back: %s\n", id().c_str(),
                   top.name().c_str(), back.error().message().c_str());
    }
  }
  // mirror_top is left with the job's handle alone, and closes with it.
  auto close = eng.close_backend(std::move(source_));
  co_await close;
  filter_ = nullptr;
  bool read_only = pivoted_ ? top.is_read_only() : base_read_only_;
  if (read_only && !base.is_read_only()) {
    auto reopen = eng.set_read_only(base, true);
    auto reopened = co_await reopen;
    if (!reopened) {
      std::fprintf(stderr, "strata: could not make '%s' read-only again: %s\n", base.name().c_str(),
                   reopened.error().message().c_str());
    }
  }
}

// Undoes what start_active_commit_job did: mirror_top's parents go back to top and it closes
// (with `source`, the job's handle on it, if there is one), and base goes back to read-only.
Task<void> undo_start(Engine& engine, Node& top, Node& base, Node* filter, bool base_read_only,
                      std::unique_ptr<BlockBackend> source) {
  if (filter != nullptr) {
    const Child* own = source != nullptr ? &source->root() : nullptr;
    (void)engine.replace_node(*filter, top, [own](const Child& edge) { return &edge == own; });
    if (source != nullptr) {
      auto close = engine.close_backend(std::move(source));
      co_await close;
    } else {
      auto release = engine.release_node(filter);
      co_await release;
    }
  }
  if (base_read_only) {
    auto reopen = engine.set_read_only(base, true);
    auto reopened = co_await reopen;
    (void)reopened;  // QEMU ignores this failure too: base merely stays writable
  }
}

}  // namespace

Task<Result<Job*>> start_active_commit_job(JobManager& manager, Engine& engine, JobOptions options,
                                           ActiveCommitArgs args) {
  Node& top = *args.top;
  Node& base = *args.base;
  // QEMU's commit_active_start: base becomes writable before anything else happens.
  bool base_read_only = base.is_read_only();
  if (base_read_only) {
    auto reopen = engine.set_read_only(base, false);
    auto reopened = co_await reopen;
    if (!reopened) co_return reopened.error();
  }
  // mirror_start_job: mirror_top goes above top before the job exists.
  nlohmann::json filter_options = {{"driver", kMirrorTop.name}, {"backing", top.name()}};
  if (!args.filter_node_name.empty()) filter_options["node-name"] = args.filter_node_name;
  auto open = engine.add_internal_node(kMirrorTop, std::move(filter_options));
  auto opened = co_await open;
  if (!opened) {
    auto undo = undo_start(engine, top, base, nullptr, base_read_only, nullptr);
    co_await undo;
    co_return opened.error();
  }
  Node* filter = *opened;
  auto appended = engine.replace_node(top, *filter);
  if (!appended) {
    auto undo = undo_start(engine, top, base, filter, base_read_only, nullptr);
    co_await undo;
    co_return appended.error();
  }
  auto added = manager.add(
      std::make_unique<ActiveCommitJob>(engine, std::move(options), args, *filter, base_read_only));
  if (!added) {
    auto undo = undo_start(engine, top, base, filter, base_read_only, nullptr);
    co_await undo;
    co_return added.error();
  }
  auto* job = static_cast<ActiveCommitJob*>(*added);
  auto attached = job->attach();
  if (!attached) {
    std::unique_ptr<BlockBackend> source = job->undo_setup();
    auto early = manager.early_fail(*job);
    co_await early;
    auto undo = undo_start(engine, top, base, filter, base_read_only, std::move(source));
    co_await undo;
    co_return attached.error();
  }
  manager.start(*job);
  co_return static_cast<Job*>(job);
}

}  // namespace strata
