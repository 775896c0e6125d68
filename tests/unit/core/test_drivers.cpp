#include "test_drivers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::testing {

std::vector<std::string>& event_log() {
  static std::vector<std::string> log;
  return log;
}

std::vector<std::string> events(std::string_view kind) {
  std::vector<std::string> out;
  std::string prefix = std::string(kind) + ":";
  for (const std::string& e : event_log()) {
    if (e.rfind(prefix, 0) == 0) out.push_back(e.substr(prefix.size()));
  }
  return out;
}

// ---- RecordingDriver ----

Result<void> RecordingDriver::check_perm(Perm perm, Perm shared) {
  ++check_count;
  event_log().push_back("check:" + node_.name());
  if (check_pending) protocol_errors.push_back("check_perm while a check is pending");
  checked.push_back({perm, shared});
  if (fail_check_perm != 0)
    return fail(fail_check_perm, "check_perm of '{}' refused", node_.name());
  check_pending = true;
  return {};
}

void RecordingDriver::set_perm(Perm perm, Perm shared) {
  if (!check_pending) protocol_errors.push_back("set_perm without check_perm");
  check_pending = false;
  last_set_perm = perm;
  last_set_shared = shared;
  event_log().push_back("set:" + node_.name());
}

void RecordingDriver::abort_perm_update() {
  check_pending = false;
  event_log().push_back("abort:" + node_.name());
}

Result<void> RecordingDriver::reopen_prepare(OptionReader&, const NodeOptions&) {
  event_log().push_back("reopen-prepare:" + node_.name());
  if (reopen_pending) protocol_errors.push_back("reopen_prepare while one is pending");
  if (fail_reopen != 0) return fail(fail_reopen, "reopen of '{}' refused", node_.name());
  reopen_pending = true;
  return {};
}

void RecordingDriver::reopen_commit() {
  if (!reopen_pending) protocol_errors.push_back("reopen_commit without reopen_prepare");
  reopen_pending = false;
  event_log().push_back("reopen-commit:" + node_.name());
}

void RecordingDriver::reopen_abort() {
  if (!reopen_pending) protocol_errors.push_back("reopen_abort without reopen_prepare");
  reopen_pending = false;
  event_log().push_back("reopen-abort:" + node_.name());
}

Task<void> RecordingDriver::close() {
  event_log().push_back("close:" + node_.name());
  co_return;
}

// ---- TestDisk ----

namespace {

// The file driver's rule (file_access.h): read-write storage unless read-only, and with
// auto-read-only only while a parent may change the data or the size.
bool wants_storage_rw(const NodeOptions& o, Perm perm) {
  if (o.read_only) return false;
  return !o.auto_read_only || has_any(perm, kWritePerms);
}

constexpr std::string_view kDiskMutable[] = {"tag"};

}  // namespace

TestDisk::TestDisk(Node& node, EventLoop& loop, uint64_t size, std::string tag)
    : RecordingDriver(node),
      data(size, 0),
      tag(std::move(tag)),
      loop_(loop),
      storage_rw_(wants_storage_rw(node.options(), Perm::kNone)) {}

Result<void> TestDisk::check_perm(Perm perm, Perm shared) {
  auto r = RecordingDriver::check_perm(perm, shared);
  if (!r) return r;
  // node_.options() holds a pending reopen's options here (driver.h).
  bool rw = wants_storage_rw(node_.options(), perm);
  if (rw && !storage_rw_ && refuse_write_access != 0) {
    check_pending = false;
    return fail(refuse_write_access,
                "Block node '{}' is read-only because of auto-read-only=on and its storage "
                "refuses write access: {}",
                node_.name(), std::strerror(refuse_write_access));
  }
  pending_storage_rw_ = rw;
  return {};
}

void TestDisk::set_perm(Perm perm, Perm shared) {
  RecordingDriver::set_perm(perm, shared);
  if (pending_storage_rw_) storage_rw_ = *std::exchange(pending_storage_rw_, std::nullopt);
}

void TestDisk::abort_perm_update() {
  RecordingDriver::abort_perm_update();
  pending_storage_rw_.reset();
}

std::span<const std::string_view> TestDisk::mutable_options() const { return kDiskMutable; }

Result<void> TestDisk::reopen_prepare(OptionReader& options, const NodeOptions& new_generic) {
  auto r = RecordingDriver::reopen_prepare(options, new_generic);
  if (!r) return r;
  auto new_tag = options.get_string("tag");
  if (!new_tag) {
    reopen_pending = false;  // a failed prepare is not aborted
    return new_tag.error();
  }
  pending_tag_ = new_tag->value_or("");
  return {};
}

void TestDisk::reopen_commit() {
  RecordingDriver::reopen_commit();
  tag = *std::exchange(pending_tag_, std::nullopt);
}

void TestDisk::reopen_abort() {
  RecordingDriver::reopen_abort();
  pending_tag_.reset();
}

void TestDisk::check_request(const char* op, uint64_t offset, uint64_t bytes, const IoVec* iov,
                             bool grows) {
  uint64_t align = std::max<uint32_t>(lim.request_alignment, 1);
  if (offset % align != 0 || bytes % align != 0) {
    violations.push_back(fmt::format("{} {}+{} not aligned to {}", op, offset, bytes, align));
  }
  if (offset + bytes > data.size() && !(grows && lim.can_grow)) {
    violations.push_back(fmt::format("{} {}+{} past the end {}", op, offset, bytes, data.size()));
  }
  if (lim.max_transfer != 0 && iov != nullptr && bytes > lim.max_transfer) {
    violations.push_back(fmt::format("{} {} bytes over max_transfer", op, bytes));
  }
  if (iov != nullptr && iov->size() != bytes) {
    violations.push_back(fmt::format("{} iov of {} for {} bytes", op, iov->size(), bytes));
  }
  if (iov != nullptr && lim.memory_alignment > 1) {
    for (const iovec& v : iov->iovecs()) {
      if (reinterpret_cast<uintptr_t>(v.iov_base) % lim.memory_alignment != 0 ||
          v.iov_len % lim.memory_alignment != 0) {
        violations.push_back(fmt::format("{} buffer not memory-aligned", op));
      }
    }
  }
}

Task<void> TestDisk::maybe_yield() {
  if (yield_io) co_await loop_.yield();
}

namespace {

struct Gate {
  std::vector<std::coroutine_handle<>>* waiters;
  bool closed;
  bool await_ready() const noexcept { return !closed; }
  void await_suspend(std::coroutine_handle<> h) { waiters->push_back(h); }
  void await_resume() const noexcept {}
};

}  // namespace

void TestDisk::open_gate() {
  gate_closed = false;
  for (std::coroutine_handle<> h : std::exchange(gated_, {})) loop_.post([h] { h.resume(); });
}

std::vector<Call> TestDisk::calls_of(std::string_view op) const {
  std::vector<Call> out;
  for (const Call& c : calls) {
    if (c.op == op) out.push_back(c);
  }
  return out;
}

Task<Result<void>> TestDisk::preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  calls.push_back({"read", offset, bytes, flags});
  check_request("read", offset, bytes, &iov, false);
  Gate gate{&gated_, gate_closed};
  co_await gate;
  auto y = maybe_yield();
  co_await y;
  uint64_t inside = offset >= data.size() ? 0 : std::min(bytes, data.size() - offset);
  if (inside > 0) iov.copy_from(0, data.data() + offset, inside);
  if (inside < bytes) iov.fill(inside, 0, bytes - inside);
  co_return Result<void>{};
}

Task<Result<void>> TestDisk::pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  calls.push_back({"write", offset, bytes, flags});
  check_request("write", offset, bytes, &iov, true);
  ++writes_in_flight_;
  max_in_flight_writes = std::max(max_in_flight_writes, writes_in_flight_);
  auto y = maybe_yield();
  co_await y;
  --writes_in_flight_;
  if (offset + bytes > data.size()) data.resize(offset + bytes, 0);
  iov.copy_to(0, data.data() + offset, bytes);
  co_return Result<void>{};
}

Task<Result<void>> TestDisk::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  calls.push_back({"zeroes", offset, bytes, flags});
  check_request("zeroes", offset, bytes, nullptr, true);
  if (lim.max_pwrite_zeroes != 0 && bytes > lim.max_pwrite_zeroes) {
    violations.push_back(fmt::format("zeroes {} bytes over max_pwrite_zeroes", bytes));
  }
  if (zeroes_errno != 0) co_return fail(zeroes_errno, "test-disk: no write-zeroes");
  if (offset + bytes > data.size()) data.resize(offset + bytes, 0);
  std::memset(data.data() + offset, 0, bytes);
  co_return Result<void>{};
}

Task<Result<void>> TestDisk::pdiscard(uint64_t offset, uint64_t bytes) {
  calls.push_back({"discard", offset, bytes, ReqFlags::kNone});
  check_request("discard", offset, bytes, nullptr, false);
  if (discard_errno != 0) co_return fail(discard_errno, "test-disk: no discard");
  std::memset(data.data() + offset, 0, bytes);
  co_return Result<void>{};
}

Task<Result<void>> TestDisk::flush() {
  calls.push_back({"flush", 0, 0, ReqFlags::kNone});
  event_log().push_back("flush:" + node_.name());
  co_return Result<void>{};
}

Task<Result<BlockStatus>> TestDisk::block_status(uint64_t offset, uint64_t bytes) {
  calls.push_back({"status", offset, bytes, ReqFlags::kNone});
  BlockStatus st;
  st.bytes = bytes;
  st.flags = BlockStatusFlags::kData;
  uint64_t start = 0;
  for (const auto& [end, flags] : extents) {
    if (offset < end && offset >= start) {
      st.bytes = std::min(bytes, end - offset);
      st.flags = flags;
      break;
    }
    start = end;
  }
  co_return st;
}

Task<Result<void>> TestDisk::truncate(uint64_t size, bool, PreallocMode) {
  calls.push_back({"truncate", size, 0, ReqFlags::kNone});
  data.resize(size, 0);
  co_return Result<void>{};
}

// ---- TestFormat ----

NodeLimits TestFormat::limits() const {
  NodeLimits l = file_.node().limits();
  l.can_grow = false;
  return l;
}

Task<Result<void>> TestFormat::preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  auto task = file_.read(offset, bytes, std::move(iov), flags);
  co_return co_await task;
}

Task<Result<void>> TestFormat::pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  auto task = file_.write(offset, bytes, std::move(iov), flags);
  co_return co_await task;
}

Task<Result<void>> TestFormat::flush() {
  event_log().push_back("flush:" + node_.name());
  co_return Result<void>{};
}

Task<Result<BlockStatus>> TestFormat::block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.bytes = bytes;
  if (report_unallocated) co_return st;
  st.flags = BlockStatusFlags::kRaw | BlockStatusFlags::kOffsetValid;
  st.map = offset;
  st.file = &file_.node();
  co_return st;
}

namespace {

// test-filter: a pure pass-through over `file`.
class TestFilter final : public RecordingDriver {
 public:
  TestFilter(Node& node, Child& file) : RecordingDriver(node), file_(file) {}
  uint64_t length() const override { return file_.size(); }
  NodeLimits limits() const override { return file_.node().limits(); }
  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    auto task = file_.read(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    auto task = file_.write(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st;
    st.bytes = bytes;
    st.flags = BlockStatusFlags::kRaw | BlockStatusFlags::kOffsetValid;
    st.map = offset;
    st.file = &file_.node();
    co_return st;
  }

 private:
  Child& file_;
};

Task<Result<std::unique_ptr<Driver>>> open_disk(OpenContext& ctx) {
  auto size = ctx.options().get_size("size");
  if (!size) co_return size.error();
  auto tag = ctx.options().get_string("tag");
  if (!tag) co_return tag.error();
  co_return std::unique_ptr<Driver>(std::make_unique<TestDisk>(
      ctx.node(), ctx.loop(), size->value_or(64 * 1024), tag->value_or("")));
}

Task<Result<std::unique_ptr<Driver>>> open_format(OpenContext& ctx) {
  auto file_task = ctx.open_child("file", ChildRole::kImage, true);
  auto file = co_await file_task;
  if (!file) co_return file.error();
  auto backing_task = ctx.open_child_or_null("backing", ChildRole::kCow, false);
  auto backing = co_await backing_task;
  if (!backing) co_return backing.error();
  co_return std::unique_ptr<Driver>(std::make_unique<TestFormat>(ctx.node(), **file));
}

Task<Result<std::unique_ptr<Driver>>> open_filter(OpenContext& ctx) {
  auto file_task = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto file = co_await file_task;
  if (!file) co_return file.error();
  co_return std::unique_ptr<Driver>(std::make_unique<TestFilter>(ctx.node(), **file));
}

Task<Result<std::unique_ptr<Driver>>> open_failing(OpenContext& ctx) {
  auto file_task = ctx.open_child("file", ChildRole::kImage, true);
  auto file = co_await file_task;
  if (!file) co_return file.error();
  co_return fail(EIO, "test-fail: cannot open");
}

const DriverClass kDisk{"test-disk", DriverKind::kProtocol, &open_disk};
const DriverClass kFormat{"test-fmt", DriverKind::kFormat, &open_format, true};
const DriverClass kFilter{"test-filter", DriverKind::kFilter, &open_filter};
const DriverClass kFailing{"test-fail", DriverKind::kFormat, &open_failing};
const DriverClass* const kDrivers[] = {&kDisk, &kFormat, &kFilter, &kFailing};

}  // namespace

std::span<const DriverClass* const> test_drivers() { return kDrivers; }

// ---- CoreTest ----

CoreTest::CoreTest() : engine(std::make_unique<Engine>(loop, test_drivers())) {
  event_log().clear();
}

CoreTest::~CoreTest() = default;

Node* CoreTest::add(nlohmann::json options, OptionSyntax syntax) {
  auto r = run_sync(loop, engine->add_node(std::move(options), syntax));
  EXPECT_TRUE(r.has_value()) << r.error().message();
  return r ? *r : nullptr;
}

std::string CoreTest::add_error(nlohmann::json options, OptionSyntax syntax) {
  auto r = run_sync(loop, engine->add_node(std::move(options), syntax));
  EXPECT_FALSE(r.has_value());
  return r ? std::string("(succeeded)") : r.error().message();
}

std::unique_ptr<BlockBackend> CoreTest::attach(Node* node, Perm perm, Perm shared,
                                               std::string name) {
  auto r = engine->attach_backend(*node, std::move(name), perm, shared);
  EXPECT_TRUE(r.has_value()) << r.error().message();
  return r ? std::move(*r) : nullptr;
}

std::string CoreTest::graph_snapshot() const {
  std::string out;
  for (Node* n : engine->nodes()) {
    const NodeOptions& o = n->options();
    const ExplicitOptions& e = n->explicit_options();
    out += fmt::format(
        "{} [{}] ro={}{} aro={}{} direct={}{} noflush={}{} fs={}{} discard={}{} dz={}{} "
        "from={} opts={}\n",
        n->name(), o.driver, o.read_only, e.read_only ? "!" : "", o.auto_read_only,
        e.auto_read_only ? "!" : "", o.cache_direct, e.cache_direct ? "!" : "", o.cache_no_flush,
        e.cache_no_flush ? "!" : "", o.force_share, e.force_share ? "!" : "",
        static_cast<int>(o.discard), e.discard ? "!" : "", static_cast<int>(o.detect_zeroes),
        e.detect_zeroes ? "!" : "", n->inherits_from() ? n->inherits_from()->name() : "-",
        n->driver_options().dump());
    for (Child* c : n->children()) {
      out += fmt::format("  child {} -> {} {:#x}/{:#x}{}\n", c->name(), c->node().name(),
                         bits(c->perm()), bits(c->shared()), c->frozen() ? " frozen" : "");
    }
    for (Child* c : n->parents()) {
      out += fmt::format("  parent {} via {} {:#x}/{:#x}\n", c->parent().parent_description(),
                         c->name(), bits(c->perm()), bits(c->shared()));
    }
    auto& d = static_cast<RecordingDriver&>(n->driver());
    auto* disk = dynamic_cast<TestDisk*>(&d);
    out += fmt::format("  driver set {:#x}/{:#x} storage_rw={} tag={}\n", bits(d.last_set_perm),
                       bits(d.last_set_shared), n->access().storage_read_write,
                       disk != nullptr ? disk->tag : "-");
  }
  return out;
}

std::vector<std::string> CoreTest::edge_snapshot() const {
  std::vector<std::string> out;
  for (Node* n : engine->nodes()) {
    for (Child* e : n->parents()) {
      out.push_back(fmt::format("{} -{}-> {}: {:#x}/{:#x}", e->parent().parent_description(),
                                e->name(), n->name(), bits(e->perm()), bits(e->shared())));
    }
  }
  return out;
}

}  // namespace strata::testing
