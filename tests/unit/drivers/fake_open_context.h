// A stand-in for the core's OpenContext, so protocol drivers can be opened and driven through
// the Driver interface alone, without the core's open path or request path.
//
// node() is a real Node of an empty Engine, attached to nothing: the protocol drivers tested
// here only keep its address (to name themselves as block_status `file`). open_child() is not
// available: protocol drivers have no children.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/iovec.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::testing {

class FakeOpenContext final : public OpenContext {
 public:
  FakeOpenContext(EventLoop& loop, nlohmann::json options,
                  OptionSyntax syntax = OptionSyntax::kJson, std::string prefix = {})
      : loop_(&loop),
        engine_(loop, {}),
        node_(engine_, NodeOptions{}, kClass),
        options_(std::move(options)),
        reader_(options_, syntax, std::move(prefix)) {}

  Node& node() override { return node_; }
  const NodeOptions& generic() const override { return node_.options(); }
  OptionReader& options() override { return reader_; }
  Engine& engine() override { return engine_; }
  EventLoop& loop() override { return *loop_; }
  Task<Result<Child*>> open_child(std::string name, ChildRole, bool) override {
    ADD_FAILURE() << "a protocol driver opened child " << name;
    co_return fail(ENOTSUP, "no children here");
  }

  const Node* node_address() { return &node(); }

 private:
  // The Node only records its class; nothing here opens through it.
  static constexpr DriverClass kClass = {"fake", DriverKind::kProtocol, nullptr};

  EventLoop* loop_;
  Engine engine_;
  Node node_;
  nlohmann::json options_;
  OptionReader reader_;
};

// Opens `cls` on `ctx` and, like the core, refuses options the driver did not read.
inline Result<std::unique_ptr<Driver>> open_driver(EventLoop& loop, const DriverClass& cls,
                                                   FakeOpenContext& ctx) {
  auto driver = run_sync(loop, cls.open(ctx));
  if (!driver) return driver;
  auto leftover = ctx.options().finish();
  if (!leftover) return leftover.error();
  return driver;
}

inline Result<void> read(EventLoop& loop, Driver& d, uint64_t offset, std::vector<uint8_t>& buf) {
  return run_sync(loop,
                  d.preadv(offset, buf.size(), IoVec(buf.data(), buf.size()), ReqFlags::kNone));
}

inline Result<void> write(EventLoop& loop, Driver& d, uint64_t offset, std::vector<uint8_t>& buf,
                          ReqFlags flags = ReqFlags::kNone) {
  return run_sync(loop, d.pwritev(offset, buf.size(), IoVec(buf.data(), buf.size()), flags));
}

inline Result<BlockStatus> status(EventLoop& loop, Driver& d, uint64_t offset, uint64_t bytes) {
  return run_sync(loop, d.block_status(offset, bytes));
}

}  // namespace strata::testing
