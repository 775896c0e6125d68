// block-commit of an intermediate image: QEMU's commit_start / commit_run / commit_prepare /
// commit_abort / commit_clean, in that order and with their texts. See commit.h.
#include "commit.h"

#include <cerrno>
#include <cstdio>
#include <memory>
#include <vector>

#include "block_copy.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"

namespace strata {
namespace {

// ---- commit_top: the filter above top while the job runs ----

// It passes everything through to its `backing` child but holds no permission on it and shares
// everything, so the "intermediate node" job edges below may refuse consistent reads to everyone
// else while the overlay still reads its chain through this filter.
class CommitTopDriver final : public FilterDriver {
 public:
  explicit CommitTopDriver(Child& backing) : FilterDriver(backing) {}
  ChildPerms child_perms(const Child&, ChildRole, Perm, Perm) const override {
    return {Perm::kNone, Perm::kAll};
  }
};

Task<Result<std::unique_ptr<Driver>>> open_commit_top(OpenContext& ctx) {
  auto task = ctx.open_child("backing", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await task;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<CommitTopDriver>(**child));
}

const DriverClass kCommitTop{"commit_top", DriverKind::kFilter, &open_commit_top};

class CommitJob final : public Job, public BlockCopyHost {
 public:
  CommitJob(Engine& engine, JobOptions options, CommitArgs args)
      : Job(engine, JobType::kCommit, std::move(options)), args_(std::move(args)) {}

  // QEMU's commit_start after block_job_create; on error the caller fails the job early and
  // then calls undo_setup().
  Task<Result<void>> setup();
  Task<void> undo_setup();
  Node* commit_top() const { return commit_top_; }

  // BlockCopyHost.
  Task<bool> pause_point() override { return Job::pause_point(); }
  Task<void> rate_limit(uint64_t bytes) override { return Job::rate_limit(bytes); }
  void progress_add(uint64_t bytes) override { Job::progress_add(bytes); }
  void progress_set_total(uint64_t bytes) override { Job::progress_set_total(bytes); }
  Task<BlockCopyErrorAction> handle_error(bool is_read, const Error& e) override;

 protected:
  Task<Result<void>> run() override;
  Task<Result<void>> prepare() override;
  Task<void> abort() override;
  Task<void> clean() override;

 private:
  Result<void> freeze_chain();
  void unfreeze_chain();
  Task<Result<void>> drop_intermediate();
  Task<Result<void>> update_backing_file(Node& overlay);
  Result<void> put_top_back();

  CommitArgs args_;
  bool base_read_only_ = false;  // base was read-only and is reopened read-write meanwhile
  Node* commit_top_ = nullptr;
  bool chain_frozen_ = false;
  std::unique_ptr<BlockBackend> base_blk_;
  std::unique_ptr<BlockBackend> top_blk_;
};

Task<Result<void>> CommitJob::setup() {
  Engine& eng = engine();
  Node& top = *args_.top;
  Node& base = *args_.base;
  base_read_only_ = base.is_read_only();
  if (base_read_only_) {
    auto reopen = eng.set_read_only(base, false);
    auto reopened = co_await reopen;
    if (!reopened) {
      base_read_only_ = false;
      co_return reopened.error();
    }
  }
  nlohmann::json options = {{"driver", kCommitTop.name}, {"backing", top.name()}};
  if (!args_.filter_node_name.empty()) options["node-name"] = args_.filter_node_name;
  auto open = eng.add_internal_node(kCommitTop, std::move(options));
  auto filter = co_await open;
  if (!filter) co_return filter.error();
  commit_top_ = *filter;
  auto appended = eng.replace_node(top, *commit_top_);
  if (!appended) co_return appended.error();

  // Everything from top down to base drops out of the chain at the end.
  for (Node* iter = &top; iter != nullptr && iter != &base; iter = next_in_chain(*iter)) {
    auto held =
        add_node(*iter, "intermediate node", Perm::kNone, Perm::kWrite | Perm::kWriteUnchanged);
    if (!held) co_return held.error();
  }
  auto frozen = freeze_chain();
  if (!frozen) co_return frozen.error();
  auto held_base = add_node(base, "base", Perm::kNone, Perm::kAll);
  if (!held_base) co_return held_base.error();

  Perm base_perm = Perm::kConsistentRead | Perm::kWrite;
  if (base.size() < top.size()) base_perm = base_perm | Perm::kResize;
  auto base_blk = attach_backend(base, base_perm, Perm::kConsistentRead | Perm::kWriteUnchanged);
  if (!base_blk) co_return base_blk.error();
  base_blk_ = std::move(*base_blk);
  auto top_blk = attach_backend(top, Perm::kNone, Perm::kAll);
  if (!top_blk) co_return top_blk.error();
  top_blk_ = std::move(*top_blk);
  co_return Result<void>{};
}

// What setup did, but the filter: that can only go once the job's edges are gone (they refuse
// the overlay the consistent read it needs on top).
Task<void> CommitJob::undo_setup() {
  unfreeze_chain();
  base_blk_.reset();
  top_blk_.reset();
  if (base_read_only_) {
    auto reopen = engine().set_read_only(*args_.base, true);
    auto reopened = co_await reopen;
    (void)reopened;  // QEMU ignores this failure too: base merely stays writable
    base_read_only_ = false;
  }
}

Result<void> CommitJob::freeze_chain() {
  auto frozen = strata::freeze_chain(*commit_top_, args_.base);
  chain_frozen_ = frozen.has_value();
  return frozen;
}

void CommitJob::unfreeze_chain() {
  if (!chain_frozen_) return;
  strata::unfreeze_chain(*commit_top_, args_.base);
  chain_frozen_ = false;
}

Task<BlockCopyErrorAction> CommitJob::handle_error(bool is_read, const Error& e) {
  auto decide = Job::handle_error(is_read, e);
  ErrorAction action = co_await decide;
  switch (action) {
    case ErrorAction::kIgnore:
      co_return BlockCopyErrorAction::kIgnore;
    case ErrorAction::kRetry:
      co_return BlockCopyErrorAction::kRetry;
    case ErrorAction::kReport:
      break;
  }
  co_return BlockCopyErrorAction::kReport;
}

// QEMU's commit_run: base grows to top's size first, then everything allocated between top and
// base (base excluded) is copied down.
Task<Result<void>> CommitJob::run() {
  uint64_t len = top_blk_->size();
  progress_set_total(len);
  if (base_blk_->size() < len) {
    auto grow = base_blk_->truncate(len, false, PreallocMode::kOff);
    auto grown = co_await grow;
    if (!grown) co_return grown.error();
  }
  BlockCopyOptions copy_options;
  copy_options.bytes = len;
  copy_options.mode = BlockCopyMode::kAllocatedAbove;
  copy_options.base = args_.base;
  BlockCopy copy(*top_blk_, *base_blk_, *this, copy_options);
  auto copying = copy.run();
  auto copied = co_await copying;
  if (!copied) co_return copied.error();
  auto flush = base_blk_->flush();
  auto flushed = co_await flush;
  if (!flushed) co_return flushed.error();
  co_return Result<void>{};
}

// QEMU's commit_prepare: unfreeze, let go of the base handle (its WRITE would stand in the way of
// the graph change), and drop the intermediate nodes.
Task<Result<void>> CommitJob::prepare() {
  unfreeze_chain();
  base_blk_.reset();
  auto drop = drop_intermediate();
  co_return co_await drop;
}

// QEMU's bdrv_drop_intermediate: commit_top's parents move to base, and each overlay records
// base as its backing file. If an overlay's header cannot be written, its edge goes back, so the
// graph and the images agree (top still holds the same data, so the chain reads the same).
Task<Result<void>> CommitJob::drop_intermediate() {
  std::vector<Child*> moving;
  for (Child* edge : commit_top_->parents()) {
    if (&edge->parent() != this) moving.push_back(edge);
  }
  auto keep_job = [this](const Child& edge) { return &edge.parent() == this; };
  auto moved = engine().replace_node(*commit_top_, *args_.base, keep_job);
  if (!moved) co_return moved.error();
  for (Child* edge : moving) {
    Node* overlay = edge->parent().as_node();
    if (overlay == nullptr || edge->name() != "backing") continue;
    auto update = update_backing_file(*overlay);
    auto updated = co_await update;
    if (!updated) {
      for (Child* back : moving) (void)engine().replace_child(*back, *commit_top_);
      co_return updated.error();
    }
  }
  co_return Result<void>{};
}

Task<Result<void>> CommitJob::update_backing_file(Node& overlay) {
  Node& base = *args_.base;
  std::string filename = args_.backing_file.empty() ? base.filename() : args_.backing_file;
  std::string format(base.driver_class().name);
  if (base.driver_class().kind == DriverKind::kProtocol && args_.backing_mask_protocol) {
    format = "raw";
  }
  bool was_read_only = overlay.is_read_only();
  if (was_read_only) {
    auto reopen = engine().set_read_only(overlay, false);
    auto reopened = co_await reopen;
    if (!reopened) co_return reopened.error();
  }
  auto change = overlay.driver().change_backing_file(filename, format);
  auto changed = co_await change;
  if (was_read_only) {
    auto reopen = engine().set_read_only(overlay, true);
    auto reopened = co_await reopen;
    if (!reopened) {
      std::fprintf(stderr, "strata: could not make '%s' read-only again: %s\n",
                   overlay.name().c_str(), reopened.error().message().c_str());
    }
  }
  co_return changed;
}

Result<void> CommitJob::put_top_back() {
  if (commit_top_ == nullptr) return {};
  auto keep_job = [this](const Child& edge) { return &edge.parent() == this; };
  return engine().replace_node(*commit_top_, *args_.top, keep_job);
}

// QEMU's commit_abort: the job lets go of its nodes first, so that the overlay can get its
// consistent read of top back, and reads through top again.
Task<void> CommitJob::abort() {
  unfreeze_chain();
  base_blk_.reset();
  auto release = release_nodes();
  co_await release;
  auto back = put_top_back();
  if (!back) {
    std::fprintf(stderr, "strata: commit job '%s' could not put '%s' back: %s\n", id().c_str(),
                 args_.top->name().c_str(), back.error().message().c_str());
  }
}

// QEMU's commit_clean: base goes back to read-only whatever happened, and commit_top goes away.
Task<void> CommitJob::clean() {
  base_blk_.reset();
  top_blk_.reset();
  if (base_read_only_) {
    auto reopen = engine().set_read_only(*args_.base, true);
    auto reopened = co_await reopen;
    if (!reopened) {
      std::fprintf(stderr, "strata: could not make '%s' read-only again: %s\n",
                   args_.base->name().c_str(), reopened.error().message().c_str());
    }
    base_read_only_ = false;
  }
  if (commit_top_ != nullptr && commit_top_->parents().empty()) {
    auto release = engine().release_node(commit_top_);
    co_await release;
    commit_top_ = nullptr;
  }
}

}  // namespace

Task<Result<Job*>> start_commit_job(JobManager& manager, Engine& engine, JobOptions options,
                                    CommitArgs args) {
  auto added = manager.add(std::make_unique<CommitJob>(engine, std::move(options), args));
  if (!added) co_return added.error();
  auto* job = static_cast<CommitJob*>(*added);
  auto setup = job->setup();
  auto ready = co_await setup;
  if (!ready) {
    // QEMU's commit_start failure path: undo, fail the job early (which releases its edges),
    // and only then take the filter out.
    Node* filter = job->commit_top();
    auto undo = job->undo_setup();
    co_await undo;
    auto early = manager.early_fail(*job);
    co_await early;
    if (filter != nullptr) {
      (void)engine.replace_node(*filter, *args.top);
      auto release = engine.release_node(filter);
      co_await release;
    }
    co_return ready.error();
  }
  manager.start(*job);
  co_return static_cast<Job*>(job);
}

}  // namespace strata
