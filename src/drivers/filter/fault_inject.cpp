// The `fault-inject` filter (Strata's own; QEMU's blkdebug does this and much more): it passes
// every request to its `file` child unchanged, except that it fails chosen requests with a
// chosen errno, so tests can drive error paths (job on-error policies, retries, reporting)
// without real failing hardware.
//
// Options (all but `file` optional):
//   file   the filtered child (BlockdevRef), opened with role FILTERED|PRIMARY.
//   kind   read | write | flush | write-zeroes | discard | any (default any): which requests
//          are counted. `any` counts every request of the five kinds. Block status and
//          truncate are never counted and never fail.
//   nth    fail the Nth counted request, 1-based (default 1).
//   errno  EIO, ENOSPC, EPERM, EROFS, EACCES, ENOMEM, EINVAL, or a number from 1 to 4095
//          (default EIO). The failure's message is the errno's text ("Input/output error"),
//          as a real device error would read once the layers above add their context.
//   count  how many consecutive counted requests fail from the Nth on (default 1); 0 means
//          every counted request from the Nth on.
// Every option is checked, and unknown ones refused, before the child is opened.
//
// A request is what reaches this node's driver: the core has already split requests longer
// than max_transfer and padded unaligned ones, so each piece counts. A failed request does
// not reach the child. Flush is counted when the core flushes this node (the child is flushed
// by the core after it, unless this node's flush failed).
//
// Reopen: kind, nth, errno and count may change, or be left out (back to their defaults); a
// reopen that commits re-arms the filter (the count of requests seen starts again from 0),
// so a test can fail one request, check the outcome, and arm the next failure.
//
// Threading: event loop thread only, like every Driver.
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "drivers.h"
#include "strata/child.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

enum class FaultKind { kRead, kWrite, kFlush, kWriteZeroes, kDiscard, kAny };

constexpr std::array<std::pair<std::string_view, FaultKind>, 6> kKindNames{{
    {"read", FaultKind::kRead},
    {"write", FaultKind::kWrite},
    {"flush", FaultKind::kFlush},
    {"write-zeroes", FaultKind::kWriteZeroes},
    {"discard", FaultKind::kDiscard},
    {"any", FaultKind::kAny},
}};

constexpr std::array<std::pair<std::string_view, int>, 7> kErrnoNames{{
    {"EIO", EIO},
    {"ENOSPC", ENOSPC},
    {"EPERM", EPERM},
    {"EROFS", EROFS},
    {"EACCES", EACCES},
    {"ENOMEM", ENOMEM},
    {"EINVAL", EINVAL},
}};

// Linux errno values stay below 4096 (the kernel's MAX_ERRNO); larger numbers are typos.
constexpr int64_t kMaxErrno = 4095;

struct FaultOptions {
  FaultKind kind = FaultKind::kAny;
  uint64_t nth = 1;
  int err = EIO;
  uint64_t count = 1;  // 0: every request from the nth on
};

Error invalid_errno(const OptionReader& reader) {
  return fail(EINVAL,
              "Invalid parameter '{}': expected EIO, ENOSPC, EPERM, EROFS, EACCES, ENOMEM, EINVAL "
              "or a number from 1 to {}",
              reader.full_name("errno"), kMaxErrno);
}

// `errno` is a name or a number; keyval text carries numbers as strings, so digits in a string
// are accepted in both syntaxes.
Result<int> parse_errno(OptionReader& reader) {
  const nlohmann::json* v = reader.take("errno");
  if (v == nullptr) return EIO;
  int64_t number = 0;
  if (v->is_number_integer()) {
    number = v->get<int64_t>();
  } else if (v->is_string()) {
    const auto& text = v->get_ref<const std::string&>();
    for (const auto& [name, value] : kErrnoNames) {
      if (text == name) return value;
    }
    if (text.empty() || text.size() > 4) return invalid_errno(reader);
    for (char c : text) {
      if (c < '0' || c > '9') return invalid_errno(reader);
      number = number * 10 + (c - '0');
    }
  } else {
    return invalid_errno(reader);
  }
  if (number < 1 || number > kMaxErrno) return invalid_errno(reader);
  return static_cast<int>(number);
}

Result<FaultOptions> parse_options(OptionReader& reader) {
  FaultOptions o;
  auto kind = reader.get_enum<FaultKind>("kind", kKindNames);
  if (!kind) return kind.error();
  o.kind = kind->value_or(FaultKind::kAny);
  auto nth = reader.get_uint("nth");
  if (!nth) return nth.error();
  o.nth = nth->value_or(1);
  if (o.nth == 0) {
    return fail(EINVAL, "Invalid parameter '{}': requests are counted from 1",
                reader.full_name("nth"));
  }
  auto err = parse_errno(reader);
  if (!err) return err.error();
  o.err = *err;
  auto count = reader.get_uint("count");
  if (!count) return count.error();
  o.count = count->value_or(1);
  return o;
}

constexpr std::array<std::string_view, 4> kMutableOptions{"kind", "nth", "errno", "count"};

class FaultInjectDriver final : public FilterDriver {
 public:
  FaultInjectDriver(Child& file, FaultOptions options) : FilterDriver(file), o_(options) {}

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    if (auto injected = next(FaultKind::kRead)) co_return *injected;
    auto task = FilterDriver::preadv(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    if (auto injected = next(FaultKind::kWrite)) co_return *injected;
    auto task = FilterDriver::pwritev(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    if (auto injected = next(FaultKind::kWriteZeroes)) co_return *injected;
    auto task = FilterDriver::pwrite_zeroes(offset, bytes, flags);
    co_return co_await task;
  }
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override {
    if (auto injected = next(FaultKind::kDiscard)) co_return *injected;
    auto task = FilterDriver::pdiscard(offset, bytes);
    co_return co_await task;
  }
  // Nothing of this node's own to write out; the core flushes the child afterwards.
  Task<Result<void>> flush() override {
    if (auto injected = next(FaultKind::kFlush)) co_return *injected;
    co_return Result<void>{};
  }

  std::span<const std::string_view> mutable_options() const override { return kMutableOptions; }
  Result<void> reopen_prepare(OptionReader& options, const NodeOptions&) override {
    auto parsed = parse_options(options);
    if (!parsed) return parsed.error();
    staged_ = *parsed;
    return {};
  }
  void reopen_commit() override {
    if (staged_) o_ = *staged_;
    staged_.reset();
    seen_ = 0;
  }
  void reopen_abort() override { staged_.reset(); }

 private:
  // Counts a request of `kind` and returns the error to fail it with, if it is one of the
  // armed ones.
  std::optional<Error> next(FaultKind kind) {
    if (o_.kind != FaultKind::kAny && o_.kind != kind) return std::nullopt;
    uint64_t n = ++seen_;
    if (n < o_.nth) return std::nullopt;
    if (o_.count != 0 && n - o_.nth >= o_.count) return std::nullopt;
    return Error(o_.err, std::strerror(o_.err));
  }

  FaultOptions o_;
  std::optional<FaultOptions> staged_;  // between reopen_prepare and commit/abort
  uint64_t seen_ = 0;                   // counted requests since open or the last reopen
};

Task<Result<std::unique_ptr<Driver>>> open_fault_inject(OpenContext& ctx) {
  auto options = parse_options(ctx.options());
  if (!options) co_return options.error();
  // Refuse unknown options before opening anything. `file` is marked as consumed here (it is
  // opened just below), so finish() reports only keys nobody reads.
  (void)ctx.options().take("file");
  auto leftover = ctx.options().finish();
  if (!leftover) co_return leftover.error();
  auto open = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await open;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<FaultInjectDriver>(**child, *options));
}

}  // namespace

constexpr auto kKindValues = option_value_names(kKindNames);

// What parse_options and open_fault_inject read.
constexpr DriverOption kFaultInjectOptions[] = {
    {"file", OptionType::kBlockdevRef, true},
    {"kind", OptionType::kEnum, false, kKindValues, "FaultInjectKind"},
    {"nth", OptionType::kUint},
    {"errno", OptionType::kIntOrString},
    {"count", OptionType::kUint},
};

const DriverClass kFaultInject = {"fault-inject", DriverKind::kFilter, &open_fault_inject, false,
                                  kFaultInjectOptions};

}  // namespace strata::drivers
