// Opening nodes (blockdev-add): the generic options, inheritance, node names, the OpenContext a
// driver's open gets, and undoing everything when an open fails.
//
// Before anything opens, the whole option tree is checked as QEMU's QAPI visitor checks
// BlockdevOptions (Engine::check_options): types, unknown keys and missing drivers, also inside
// inline children, so "Parameter 'file.bogus' is unexpected" wins over "Could not open".
//
// Order, as in QEMU's bdrv_open_inherit: parse the generic options and apply inheritance, check
// the node-name, create the Node, let the driver open (it opens its own children through the
// context, each attached at once), refuse leftover options, then refresh the permissions below
// the node with the driver's own child_perms. Any failure closes what the driver opened, detaches
// every edge the node made and removes the node; permissions go back to what they were because
// every edge went through the permission transaction.
#include <array>
#include <cctype>
#include <cerrno>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "generic_options.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata {
namespace {

// QEMU's limit: node_name is a char[32].
constexpr size_t kMaxNodeName = 31;

// Parses the generic options of a node being opened, with inheritance from the parent that
// opens it (an inline child), and checks their combinations.
Result<GenericOptions> open_generic(OptionReader& reader, const Node* parent, ChildRole role) {
  auto g = parse_generic(reader);
  if (!g) return g.error();
  if (!g->driver) return reader.missing("driver");
  g->options.driver = *g->driver;
  inherit(*g, parent != nullptr ? &parent->options() : nullptr, role);
  auto valid = validate_generic(g->options);
  if (!valid) return valid.error();
  return g;
}

// What a node keeps of its options for a later reopen: the driver's own, as given. Generic
// options live in NodeOptions; children are edges (and `backing: null` means no edge).
nlohmann::json driver_options_of(const nlohmann::json& options, const Node& node) {
  nlohmann::json out = nlohmann::json::object();
  for (auto it = options.begin(); it != options.end(); ++it) {
    const std::string& key = it.key();
    if (is_generic_option(key) || key == "file" || key == "backing") continue;
    if (node.child(key) != nullptr) continue;
    out[key] = *it;
  }
  return out;
}

template <class T>
Result<void> status_of(const Result<T>& read) {
  if (!read) return read.error();
  return {};
}

// An enum option's value, checked against the declared values with get_enum's text (QEMU's
// enum visitor names the member alone).
Result<void> check_enum(OptionReader& reader, const DriverOption& option) {
  auto value = reader.get_string(option.name);
  if (!value) return value.error();
  if (!*value) return {};
  for (std::string_view allowed : option.values) {
    if (allowed == **value) return {};
  }
  return fail(EINVAL, "Parameter '{}' does not accept value '{}'", option.name, **value);
}

// Checks one declared driver option's type; a BlockdevRef given inline is checked recursively.
Result<void> check_option(const Engine& engine, OptionReader& reader, const DriverOption& option) {
  switch (option.type) {
    case OptionType::kString:
      return status_of(reader.get_string(option.name));
    case OptionType::kBool:
      return status_of(reader.get_bool(option.name));
    case OptionType::kUint:
      return status_of(reader.get_uint(option.name));
    case OptionType::kSize:
      return status_of(reader.get_size(option.name));
    case OptionType::kEnum:
      return check_enum(reader, option);
    case OptionType::kIntOrString:
      // The driver reads it with its own texts; here it only counts as known.
      (void)reader.take(option.name);
      return {};
    case OptionType::kBlockdevRef:
    case OptionType::kBlockdevRefOrNull:
      break;
  }
  const nlohmann::json* value = reader.take(option.name);
  if (value == nullptr || value->is_string()) return {};
  if (value->is_object()) {
    return engine.check_options(*value, reader.syntax(), reader.full_name(option.name) + ".");
  }
  // Wrong types are left to open, which reports them with QEMU's texts (null included).
  return {};
}

// QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
bool well_formed(std::string_view name) {
  auto ascii_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (name.empty() || !ascii_alpha(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!ascii_alpha(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

// QEMU's bdrv_assign_node_name checks, in its order.
Result<void> check_node_name(const Engine& engine, std::string_view name) {
  if (!well_formed(name)) return fail(EINVAL, "Invalid node-name: '{}'", name);
  if (engine.find_backend(name) != nullptr) {
    return fail(EINVAL, "node-name={} is conflicting with a device id", name);
  }
  if (engine.find_node(name) != nullptr) {
    return fail(EINVAL, "Duplicate nodes with node-name='{}'", name);
  }
  if (name.size() > kMaxNodeName) return fail(EINVAL, "Node name too long");
  return {};
}

class NodeOpenContext final : public OpenContext {
 public:
  NodeOpenContext(Engine& engine, Node& node, OptionReader& reader)
      : engine_(engine), node_(node), reader_(reader) {}

  Node& node() override { return node_; }
  const NodeOptions& generic() const override { return node_.options(); }
  OptionReader& options() override { return reader_; }
  Engine& engine() override { return engine_; }
  EventLoop& loop() override { return engine_.loop(); }

  Task<Result<Child*>> open_child(std::string name, ChildRole role, bool required) override {
    return open(std::move(name), role, required, false);
  }
  Task<Result<Child*>> open_child_or_null(std::string name, ChildRole role,
                                          bool required) override {
    return open(std::move(name), role, required, true);
  }
  Task<Result<Child*>> open_implicit_child(std::string name, ChildRole role,
                                           nlohmann::json options) override;

 private:
  Task<Result<Child*>> open(std::string name, ChildRole role, bool required, bool allow_null);
  Task<Result<Child*>> open_inline(const nlohmann::json& options, std::string name, ChildRole role);
  Result<Child*> attach_reference(const std::string& ref, std::string name, ChildRole role);

  Engine& engine_;
  Node& node_;
  OptionReader& reader_;
};

Task<Result<Child*>> NodeOpenContext::open(std::string name, ChildRole role, bool required,
                                           bool allow_null) {
  const nlohmann::json* value = reader_.take(name);
  if (value == nullptr) {
    if (required) co_return reader_.missing(name);
    co_return nullptr;
  }
  // JSON null, or keyval's empty string (QEMU's deprecated spelling of the same).
  bool is_null =
      value->is_null() || (reader_.syntax() == OptionSyntax::kKeyval && value->is_string() &&
                           value->get_ref<const std::string&>().empty());
  if (allow_null && is_null) co_return nullptr;
  if (value->is_string() && !is_null) {
    std::string ref = value->get<std::string>();
    auto edge = attach_reference(ref, std::move(name), role);
    co_return edge;
  }
  if (value->is_object()) {
    auto task = open_inline(*value, std::move(name), role);
    co_return co_await task;
  }
  std::string full_name = reader_.full_name(name);
  const char* expected = allow_null ? "BlockdevRefOrNull" : "BlockdevRef";
  co_return fail(EINVAL, "Invalid parameter type for '{}', expected: {}", full_name, expected);
}

// A reference attaches an existing node as it is: it inherits nothing.
Result<Child*> NodeOpenContext::attach_reference(const std::string& ref, std::string name,
                                                 ChildRole role) {
  Node* target = engine_.find_node(ref);
  if (target == nullptr) {
    if (BlockBackend* user = engine_.find_backend(ref)) target = &user->node();
  }
  if (target == nullptr) {
    return fail(ENODEV, "Cannot find device='{}' nor node-name='{}'", ref, ref);
  }
  return engine_.attach_child(node_, *target, std::move(name), role);
}

Task<Result<Child*>> NodeOpenContext::open_inline(const nlohmann::json& options, std::string name,
                                                  ChildRole role) {
  std::string prefix = reader_.full_name(name) + ".";
  auto task = engine_.open_node(options, reader_.syntax(), &node_, role, std::move(prefix));
  auto child = co_await task;
  if (!child) co_return child.error();
  auto edge = engine_.attach_child(node_, **child, std::move(name), role);
  if (!edge) {
    auto release = engine_.release_node(*child);
    co_await release;
  }
  co_return edge;
}

Task<Result<Child*>> NodeOpenContext::open_implicit_child(std::string name, ChildRole role,
                                                          nlohmann::json options) {
  std::string prefix = name + ".";
  auto task =
      engine_.open_node(std::move(options), OptionSyntax::kJson, &node_, role, std::move(prefix));
  auto child = co_await task;
  if (!child) co_return child.error();
  auto edge = engine_.attach_child(node_, **child, std::move(name), role);
  if (!edge) {
    auto release = engine_.release_node(*child);
    co_await release;
  }
  co_return edge;
}

}  // namespace

Result<void> Engine::check_options(const nlohmann::json& options, OptionSyntax syntax,
                                   std::string prefix) const {
  std::string what = "options";
  if (!prefix.empty()) what = prefix.substr(0, prefix.size() - 1);
  auto is_object = OptionReader::expect_object(options, what);
  if (!is_object) return is_object;
  OptionReader reader(options, syntax, prefix);
  auto generic = parse_generic(reader);
  if (!generic) return generic.error();
  if (!generic->driver) return reader.missing("driver");
  const DriverClass* driver = find_driver(*generic->driver);
  if (driver == nullptr) {
    return fail(EINVAL, "Parameter 'driver' does not accept value '{}'", *generic->driver);
  }
  // A driver without declared options is checked by its open (leftovers are refused after it).
  if (!driver->options) return {};
  for (const DriverOption& option : *driver->options) {
    auto checked = check_option(*this, reader, option);
    if (!checked) return checked;
  }
  return reader.finish();
}

Task<Result<Node*>> Engine::open_node(nlohmann::json options, OptionSyntax syntax, Node* parent,
                                      ChildRole role, std::string prefix) {
  return open_node_of(std::move(options), syntax, parent, role, std::move(prefix), nullptr);
}

Task<Result<Node*>> Engine::add_internal_node(const DriverClass& cls, nlohmann::json options) {
  return open_node_of(std::move(options), OptionSyntax::kJson, nullptr, ChildRole::kNone, "", &cls);
}

Task<Result<Node*>> Engine::open_node_of(nlohmann::json options, OptionSyntax syntax, Node* parent,
                                         ChildRole role, std::string prefix,
                                         const DriverClass* internal) {
  // No conditional expressions with class temporaries in coroutines: GCC 12 miscompiles them.
  std::string what = "options";
  if (!prefix.empty()) what = prefix.substr(0, prefix.size() - 1);
  auto is_object = OptionReader::expect_object(options, what);
  if (!is_object) co_return is_object.error();
  if (parent == nullptr && internal == nullptr) {
    // The whole tree, inline children included, before anything opens (internal nodes are
    // built by the engine from options it wrote).
    auto checked = check_options(options, syntax, prefix);
    if (!checked) co_return checked.error();
  }
  OptionReader reader(options, syntax, prefix);
  auto generic = open_generic(reader, parent, role);
  if (!generic) co_return generic.error();
  const DriverClass* driver_class = find_driver(generic->options.driver);
  if (internal != nullptr && internal->name == generic->options.driver) driver_class = internal;
  if (driver_class == nullptr) {
    // QEMU's enum visitor names the member alone, without the path.
    co_return fail(EINVAL, "Parameter 'driver' does not accept value '{}'",
                   generic->options.driver);
  }
  if (generic->node_name) {
    auto valid = check_node_name(*this, *generic->node_name);
    if (!valid) co_return valid.error();
    generic->options.node_name = *generic->node_name;
  } else {
    generic->options.node_name = next_auto_name();
  }

  nodes_.push_back(std::make_unique<Node>(*this, generic->options, *driver_class));
  Node* node = nodes_.back().get();
  node->set_origin(generic->given, parent);
  NodeOpenContext ctx(*this, *node, reader);
  auto open = driver_class->open(ctx);
  auto driver = co_await open;
  Result<void> status;
  if (driver) {
    node->set_driver(std::move(*driver));
    node->set_driver_options(driver_options_of(options, *node));
    status = reader.finish();
  } else {
    status = driver.error();
  }
  // The node's edges were set up with the role defaults while it had no driver; now its
  // driver's own rule applies.
  if (status) status = refresh_perms(*node);
  if (!status) {
    // Nothing holds the node yet; closing it closes its driver, detaches every edge it made
    // (closing inline children, loosening permissions) and removes it.
    auto close = close_node(node);
    co_await close;
    co_return status.error();
  }
  co_return node;
}

}  // namespace strata
