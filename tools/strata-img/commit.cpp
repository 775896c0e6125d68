// strata-img commit: copies what an image holds above its backing file (or above -b base) into
// that backing file, then empties the image unless -d or -b, as qemu-img 7.2's img_commit does,
// with its texts and exit codes (0 committed, 1 anything else).
//
// qemu-img runs an active-commit block job and waits for it; a one-shot tool needs no job
// (nothing can pause, cancel or query it), so this drives a BlockCopy directly, with a small
// host that rate-limits (-r) and reports progress (-p, --progress=json, SIGUSR1). The steps are
// the job's:
//   1. the image opens read-write; its backing chain opens read-only, as always;
//   2. base is reopened read-write for the duration (its storage lock becomes a write lock
//      here: "Failed to get "write" lock" when someone else reads it without sharing writes),
//      and grown first when it is smaller than the image;
//   3. every range allocated above base (kAllocatedAbove) is copied into base, zero ranges as
//      write-zeroes; base is flushed and goes back to read-only;
//   4. without -d/-b the image is emptied (Driver::make_empty: it then reads as its backing
//      file); formats that cannot do that are left as they are, as qemu-img does.
// With -b the chain on disk stays as it was (qemu-img drops the intermediate images from its
// graph, not from the files): the images above base keep their data.
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block_copy.h"
#include "cli.h"
#include "image.h"
#include "image_chain.h"
#include "image_session.h"
#include "progress.h"
#include "strata/block_backend.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/job.h"
#include "strata/node.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

struct CommitOptions {
  ImageSpec spec;
  std::string base;   // -b: the backing file to commit into; empty: the image's backing file
  bool drop = false;  // -d (and -b): leave the image as it is after the commit
  bool quiet = false;
  ProgressReporter::Mode progress = ProgressReporter::Mode::kSignalOnly;
  uint64_t rate = 0;  // -r, bytes per second; 0: unlimited
};

enum LongOnly { kProgress = kFirstOwnOption };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},
    {"object", true, kObject},
    {"image-opts", false, kImageOpts},
    {"progress", true, kProgress},
};

void apply_commit_option(std::string_view prog, const ParsedOption& opt, CommitOptions& o,
                         bool& frames) {
  // commit has no -U: its parser never returns it.
  if (apply_image_option(prog, opt, o.spec)) return;
  const std::string& arg = opt.arg;
  switch (opt.id) {
    case 't': {
      auto mode = parse_cache_mode(arg);
      if (!mode) fail_exit(prog, fmt::format("Invalid cache option: {}", arg));
      o.spec.cache = *mode;
      break;
    }
    case 'b':
      o.base = arg;
      o.drop = true;  // as in qemu-img: -b implies -d
      break;
    case 'd':
      o.drop = true;
      break;
    case 'p':
      frames = true;
      break;
    case 'q':
      o.quiet = true;
      break;
    case 'r':
      o.rate = size_option(prog, "rate limit", arg, INT64_MAX);
      break;
    case kProgress:
      if (arg != "json") usage_error(prog, fmt::format("Invalid progress format: '{}'", arg));
      o.progress = ProgressReporter::Mode::kJson;
      break;
  }
}

CommitOptions parse_commit_options(std::string_view prog, std::span<const std::string> args) {
  CommitOptions o;
  bool frames = false;
  OptionParser parser(args, ":f:ht:b:dpqr:", kLongOptions);
  while (auto opt = next_option(prog, parser)) apply_commit_option(prog, *opt, o, frames);
  // -p prints frames unless -q; --progress=json wins over both (it goes to stderr).
  if (frames && !o.quiet && o.progress != ProgressReporter::Mode::kJson) {
    o.progress = ProgressReporter::Mode::kFrames;
  }
  o.spec.filename = image_filename_operand(prog, parser);
  o.spec.discard = "unmap";  // qemu-img opens with BDRV_O_UNMAP
  return o;
}

// The job side of the copy: rate limit and progress; nothing pauses or cancels it, and any
// error stops it (qemu-img's on-error=report).
class CommitHost final : public BlockCopyHost {
 public:
  CommitHost(EventLoop& loop, ProgressReporter& progress, uint64_t rate)
      : loop_(&loop), progress_(&progress) {
    limiter_.set_speed(rate);
  }

  Task<bool> pause_point() override { co_return true; }

  Task<void> rate_limit(uint64_t bytes) override {
    const uint64_t delay_ns = limiter_.calculate_delay(now_ns(), bytes);
    if (delay_ns == 0) co_return;
    co_await loop_->sleep_ms((delay_ns + 999'999) / 1'000'000);
    progress_->update(done_);  // a SIGUSR1 during a long wait is answered now
  }

  void progress_add(uint64_t bytes) override {
    done_ += bytes;
    progress_->update(done_);
  }

  void progress_set_total(uint64_t bytes) override { progress_->set_len(bytes); }

  Task<BlockCopyErrorAction> handle_error(bool /*is_read*/, const Error& /*e*/) override {
    co_return BlockCopyErrorAction::kReport;
  }

 private:
  static uint64_t now_ns() {
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
  }

  EventLoop* loop_;
  ProgressReporter* progress_;
  RateLimiter limiter_;
  uint64_t done_ = 0;
};

// QEMU's bdrv_find_backing_image: the layer below some layer whose recorded backing file name is
// `name`, or whose file is the file `name` names relative to that layer's directory.
Node* find_backing_image(const std::vector<ChainLayer>& chain, const std::string& name) {
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    const ChainLayer& layer = chain[i];
    const ChainLayer& below = chain[i + 1];
    if (name == layer.facts.backing_file) return below.node;
    const std::string wanted = full_backing_filename(layer.filename, name);
    char* wanted_real = ::realpath(wanted.c_str(), nullptr);
    char* below_real = ::realpath(below.filename.c_str(), nullptr);
    const bool same = wanted_real != nullptr && below_real != nullptr &&
                      std::strcmp(wanted_real, below_real) == 0;
    std::free(wanted_real);
    std::free(below_real);
    if (same) return below.node;
  }
  return nullptr;
}

struct CommitContext {
  EventLoop* loop;
  Engine* engine;
  OpenImage* image;
  Node* base;
  const CommitOptions* options;
  ProgressReporter* progress;
};

// Copies everything above base into base (steps 2 and 3 of the file comment), with base
// writable only meanwhile.
Task<Result<void>> copy_into_base(CommitContext c) {
  Node& base = *c.base;
  BlockBackend& top = *c.image->blk;
  const bool base_read_only = base.is_read_only();
  if (base_read_only) {
    auto reopen = c.engine->set_read_only(base, false);
    auto reopened = co_await reopen;
    if (!reopened) co_return reopened.error();
  }
  // The image's backing edge must let base be written and grown: as qemu-img's job does, the
  // image's user shares WRITE and RESIZE for the duration.
  const Perm top_shared = top.shared();
  Result<void> result = top.set_perm(top.perm(), top_shared | Perm::kWrite | Perm::kResize);
  if (result) {
    const uint64_t len = top.size();
    const bool grow = base.size() < len;
    Perm perm = Perm::kConsistentRead | Perm::kWrite;
    if (grow) perm |= Perm::kResize;
    auto attached = c.engine->attach_backend(
        base, "", perm, Perm::kConsistentRead | Perm::kWrite | Perm::kWriteUnchanged);
    if (!attached) {
      result = attached.error();
    } else {
      std::unique_ptr<BlockBackend> target = std::move(*attached);
      if (grow) {
        auto truncate = target->truncate(len, false, PreallocMode::kOff);
        result = co_await truncate;
      }
      if (result) {
        CommitHost host(*c.loop, *c.progress, c.options->rate);
        BlockCopyOptions copy_options;
        copy_options.bytes = len;
        copy_options.mode = BlockCopyMode::kAllocatedAbove;
        copy_options.base = &base;
        // Nothing else writes the image while the tool runs: read it in the order its data
        // lies in the file (block_copy.h).
        copy_options.order = BlockCopyOrder::kSourceLayout;
        BlockCopy copy(top, *target, host, copy_options);
        auto run = copy.run();
        result = co_await run;
      }
      if (result) {
        auto flush = target->flush();
        result = co_await flush;
      }
    }
    (void)top.set_perm(top.perm(), top_shared);
  }
  // With cache.no-flush (-t unsafe) the core skips the driver's flush, so base's metadata may
  // still sit in its caches, and a reopen to read-only would drop it (QEMU still writes its
  // metadata out to the OS there). Base then stays writable until it is closed, which writes
  // the metadata: nothing but this process could notice the difference.
  if (base_read_only && !c.options->spec.cache.no_flush) {
    // As QEMU's commit cleanup: back to read-only whatever happened; a failure here changes
    // nothing about the data already in base.
    auto reopen = c.engine->set_read_only(base, true);
    (void)co_await reopen;
  }
  co_return result;
}

// Step 4: the image reads as its backing file afterwards.
Task<Result<void>> empty_image(CommitContext c) {
  Node& node = *c.image->node;
  auto empty = node.driver().make_empty();
  auto emptied = co_await empty;
  if (!emptied) {
    if (emptied.error().err() == ENOTSUP) co_return Result<void>{};
    co_return fail(emptied.error().err(), "Failed to empty {}: {}", node.filename(),
                   std::strerror(emptied.error().err()));
  }
  auto flush = c.image->blk->flush();
  co_return co_await flush;
}

// img_commit after the open: the progress frame 0, the base, the copy, the emptying. The
// progress report ends (the frames' newline) whatever happens, as qemu-img's does.
Task<Result<void>> commit(CommitContext c) {
  c.progress->begin();
  const std::vector<ChainLayer> chain = image_chain(*c.image->node, c.options->spec.filename);
  Result<void> result;
  if (!c.options->base.empty()) {
    c.base = find_backing_image(chain, c.options->base);
    if (c.base == nullptr) {
      result = fail(EINVAL, "Did not find '{}' in the backing chain of '{}'", c.options->base,
                    c.options->spec.filename);
    }
  } else if (chain.size() < 2) {
    result = fail(EINVAL, "Image does not have a backing file");
  } else {
    c.base = chain[1].node;
  }
  if (result) {
    auto copy = copy_into_base(c);
    result = co_await copy;
  }
  if (result && !c.options->drop) {
    auto empty = empty_image(c);
    result = co_await empty;
  }
  c.progress->end(result.has_value());
  co_return result;
}

}  // namespace

int run_commit(std::string_view prog, std::span<const std::string> args) {
  const CommitOptions o = parse_commit_options(prog, args);
  ImageSession session;
  // qemu-img's blk_new_open for a read-write image: it shares only reads and unchanged writes.
  if (!session.open(prog, o.spec, Perm::kConsistentRead | Perm::kWrite,
                    Perm::kConsistentRead | Perm::kWriteUnchanged)) {
    return 1;
  }
  ProgressReporter progress(o.progress);
  CommitContext context{&session.loop(), &session.engine(), &session.image(), nullptr, &o,
                        &progress};
  const Result<void> result = run_sync(session.loop(), commit(context));
  session.close();
  if (!result) {
    report_error(prog, result.error().message(), result.error().hint());
    return 1;
  }
  if (!o.quiet) fmt::print("Image committed.\n");
  return 0;
}

}  // namespace strata::tools::img
