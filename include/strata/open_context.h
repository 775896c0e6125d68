// OpenContext: what a driver's open function gets from the core.
//
// The core has already parsed the generic options (NodeOptions), applied inheritance, checked
// the node-name and created the Node. The driver reads its own options from options(), opens its
// children with open_child(), and returns its Driver. If open fails, the core closes every
// child the driver opened and removes the node: nothing is left behind.
//
// Threading: event loop thread only, during the driver's open.
#pragma once

#include <cerrno>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "strata/options.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
class Engine;
class EventLoop;
class Node;
struct NodeOptions;

class OpenContext {
 public:
  virtual ~OpenContext() = default;

  virtual Node& node() = 0;
  virtual const NodeOptions& generic() const = 0;
  // The driver-specific options; the core calls finish() after open to refuse leftovers.
  virtual OptionReader& options() = 0;
  virtual Engine& engine() = 0;
  virtual EventLoop& loop() = 0;

  // Opens the child called `name` from the option of the same name, a BlockdevRef: either a
  // node-name (the existing node is attached; it inherits nothing) or an inline object (a new
  // node is opened whose read-only, auto-read-only, cache.* and force-share default to this
  // node's, except that a kCow child defaults to read-only=on, auto-read-only=off).
  // Returns nullptr without error when the option is absent and `required` is false.
  // Errors: "Parameter '<name>' is missing" style texts, "Cannot find device='x' nor
  // node-name='x'", "Invalid parameter type for '<name>', expected: BlockdevRef", and whatever
  // opening the inline child reports.
  virtual Task<Result<Child*>> open_child(std::string name, ChildRole role, bool required) = 0;

  // Like open_child, for a BlockdevRefOrNull option (`backing`): a JSON null (or, in keyval
  // syntax, an empty string) means "no child" and returns nullptr without error. To tell null
  // from absent, check options().has(name) first.
  virtual Task<Result<Child*>> open_child_or_null(std::string name, ChildRole role, bool required) {
    return open_child(std::move(name), role, required);
  }

  // Opens a child the driver describes itself (QEMU's implicit nodes: a qcow2 image's backing
  // file or data file named in its header): `options` is a BlockdevOptions object in JSON
  // syntax, inheriting from this node as an inline child would. The new node gets an automatic
  // name and goes away with its last parent.
  // The default (contexts that open no children) refuses.
  virtual Task<Result<Child*>> open_implicit_child(std::string name, ChildRole,
                                                   nlohmann::json) {
    co_return fail(ENOTSUP, "Cannot open the implicit child '{}' here", name);
  }
};

}  // namespace strata
