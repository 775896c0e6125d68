// Reopen (blockdev-reopen): one transaction that changes the options and the `file`/`backing`
// children of many nodes, or changes nothing at all.
//
// The steps follow QEMU's bdrv_reopen_queue and bdrv_reopen_multiple:
//  1. Engine::reopen resolves the named nodes, flushes them and drains the whole graph. From
//     there on everything runs without suspending, so no request sees a half-done reopen.
//  2. Queue: each entry's node, then recursively its inline children (inherits_from == node),
//     unless the entry points that child slot at another node or at null. The new generic
//     options of every queued node are computed here, in QEMU's precedence (generic_options.h);
//     an inline child inherits from its parent's *new* options. A node queued twice merges the
//     option objects, the later one winning key by key.
//  3. Prepare, in queue order: the driver-specific options against the node's (Driver::
//     mutable_options), the driver's reopen_prepare, then the child slots: `backing` may not be
//     left out while there is one, a node-name replaces `file` or `backing`, null detaches
//     `backing`. Each edit is made at once (with undo), so later checks see it.
//  4. The new generic options go onto the nodes, and permissions are refreshed over the queued
//     nodes and every node that gained or lost a parent: check_perm sees the post-reopen flags.
//  5. Commit in reverse queue order (the drivers' reopen_commit, then set_perm through the
//     permission transaction, then explicit options, driver options and limits), or abort:
//     perms restored (abort_perm_update), edits undone in reverse, options and edge order
//     restored, reopen_abort on every driver whose prepare succeeded.
//  6. Engine::reopen closes the nodes the reopen left without any holder.
//
// Error texts, roughly in the order they are checked:
//   "node-name not specified", "Failed to find node with node-name='x'"          (entries)
//   "Error flushing drive: ..."
//   "Cannot change the option 'node-name'" / "'driver'" / "'force-share'",
//   "Parameter 'driver' is missing" (an entry or inline dict of blockdev-reopen without one),
//   the option reader's type texts, "force-share=on can only be used with read-only images",
//   "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap"
//   "Option '<x>' cannot be reset to its default value", "Cannot change the option '<x>'"
//   whatever the driver's reopen_prepare says
//   "backing is missing for '<node>'"
//   "Cannot find device='' nor node-name='<x>'",
//   "Making '<x>' a backing child of '<node>' would create a cycle",
//   "'<node>' is a <driver> filter node that does not support a backing child",
//   "Cannot change frozen 'backing' link from '<node>' to '<child>'",
//   "Driver '<driver>' of node '<node>' does not support backing files",
//   "Cannot set file child to format node without file child",
//   "Cannot change the option '<child>.<key>'" (a dict for a child that is not inline),
//   "Invalid parameter type for '<child>', expected: BlockdevRef" (or BlockdevRefOrNull)
//   then the permission refresh: "Read-only block node '<node>' cannot support read-write
//   users", "Block node is read-only", conflicts, the drivers' check_perm errors.
#include <algorithm>
#include <cerrno>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "generic_options.h"
#include "perm_update.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata {
namespace {

// One node in the reopen queue.
struct ReopenEntry {
  Node* node = nullptr;
  nlohmann::json options = nlohmann::json::object();  // as given for this node
  std::string prefix;                                 // "file." in messages
  bool keep_old = false;
  bool require_driver = false;
  const ReopenEntry* parent = nullptr;  // the queued node it inherits from
  ChildRole role = ChildRole::kNone;
  // Computed when queued.
  GenericOptions generic;
  nlohmann::json driver_options = nlohmann::json::object();
  OptionSyntax driver_syntax = OptionSyntax::kJson;
  bool driver_prepared = false;
};

// How queue() was reached: from an entry, or from a queued parent for one of its inline
// children.
struct QueueArgs {
  const ReopenEntry* parent = nullptr;
  ChildRole role = ChildRole::kNone;
  bool keep_old = false;
  bool require_driver = false;
  std::string prefix;
};

bool is_child_slot(const Node& node, std::string_view key) {
  return key == "file" || key == "backing" || node.child(key) != nullptr;
}

// Keyval text for a JSON scalar (what the value would have been on a command line), so option
// values given in either syntax compare and parse alike.
nlohmann::json to_keyval(const nlohmann::json& value) {
  if (value.is_boolean()) return value.get<bool>() ? "on" : "off";
  if (value.is_number()) return value.dump();
  if (!value.is_object()) return value;
  nlohmann::json out = nlohmann::json::object();
  for (auto it = value.begin(); it != value.end(); ++it) out[it.key()] = to_keyval(*it);
  return out;
}

// Option values compare equal across the two syntaxes: 1024 equals "1024" and "1k", true
// equals "on".
bool same_value(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_object() && b.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !same_value(*it, *other)) return false;
    }
    return true;
  }
  if (a.is_string() != b.is_string()) {
    const nlohmann::json& text = a.is_string() ? a : b;
    const nlohmann::json& typed = a.is_string() ? b : a;
    const std::string& s = text.get_ref<const std::string&>();
    if (typed.is_boolean()) {
      bool on = s == "on" || s == "yes" || s == "true" || s == "y";
      bool off = s == "off" || s == "no" || s == "false" || s == "n";
      return typed.get<bool>() ? on : off;
    }
    if (typed.is_number_unsigned() || (typed.is_number_integer() && typed.get<int64_t>() >= 0)) {
      std::optional<uint64_t> size = parse_size(s);
      return size && *size == typed.get<uint64_t>();
    }
    return typed.is_number() && typed.dump() == s;
  }
  return a == b;
}

bool is_mutable(Node& node, std::string_view key) {
  std::span<const std::string_view> keys = node.driver().mutable_options();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// What the node keeps after the reopen: options that cannot change stay as they were written
// at open (the reopen gave them again, equal but maybe spelled differently); mutable ones are
// the new values, and gone where left out.
nlohmann::json stored_driver_options(const ReopenEntry& e) {
  nlohmann::json out = nlohmann::json::object();
  const nlohmann::json& old = e.node->driver_options();
  for (auto it = old.begin(); it != old.end(); ++it) {
    if (!is_mutable(*e.node, it.key())) out[it.key()] = *it;
  }
  for (auto it = e.driver_options.begin(); it != e.driver_options.end(); ++it) {
    if (is_mutable(*e.node, it.key())) out[it.key()] = *it;
  }
  return out;
}

// The key QEMU's flattened options would name first for a dict under `slot`.
std::string first_key(const nlohmann::json& dict) {
  if (dict.contains("driver")) return "driver";
  return dict.empty() ? std::string() : dict.begin().key();
}

Result<Node*> find_entry_node(const Engine& engine, const nlohmann::json& entry) {
  auto is_object = OptionReader::expect_object(entry, "options");
  if (!is_object) return is_object.error();
  auto name = entry.find("node-name");
  if (name == entry.end()) return fail(EINVAL, "node-name not specified");
  if (!name->is_string()) {
    return fail(EINVAL, "Invalid parameter type for 'node-name', expected: string");
  }
  Node* node = engine.find_node(name->get_ref<const std::string&>());
  if (node == nullptr) {
    return fail(ENOENT, "Failed to find node with node-name='{}'",
                name->get_ref<const std::string&>());
  }
  return node;
}

// Waits until no request is in flight anywhere in the graph. Returns without suspending when
// the graph is idle, so the caller's next synchronous step sees it idle.
Task<void> drain_graph(Engine* engine) {
  for (;;) {
    Node* busy = nullptr;
    for (Node* node : engine->nodes()) {
      if (node->in_flight() > 0) {
        busy = node;
        break;
      }
    }
    if (busy == nullptr) co_return;
    auto drain = busy->drain();
    co_await drain;
  }
}

}  // namespace

class ReopenTransaction {
 public:
  ReopenTransaction(Engine& engine, OptionSyntax syntax, bool keep_old)
      : engine_(engine), syntax_(syntax), keep_old_(keep_old) {}

  // Queues, prepares, refreshes permissions and commits; on error undoes everything.
  Result<void> run(const std::vector<nlohmann::json>& entries);
  // Names of nodes that lost a parent edge; the caller closes those nothing holds any more.
  const std::vector<std::string>& released() const { return released_; }

 private:
  // What a node looked like before the transaction touched it.
  struct Saved {
    NodeOptions options;
    ExplicitOptions explicit_options;
    Node* inherits_from = nullptr;
    std::vector<Child*> children;
    std::vector<Child*> parents;
  };
  enum class EditKind { kReplace, kRemove, kAdd };
  struct Edit {
    EditKind kind;
    Child* edge;
    Node* parent;
    Node* old_node;  // kReplace: where the edge pointed before
  };

  Result<void> queue(Node& node, const nlohmann::json& options, QueueArgs args);
  Result<void> compute(ReopenEntry& e);
  Result<GenericOptions> new_generic(const ReopenEntry& e) const;
  void set_driver_options(ReopenEntry& e) const;
  Result<void> queue_children(ReopenEntry& e);
  Result<void> prepare(ReopenEntry& e);
  Result<void> check_driver_options(const ReopenEntry& e) const;
  Result<void> prepare_children(ReopenEntry& e);
  Result<void> set_child(ReopenEntry& e, const std::string& slot, const nlohmann::json& value);
  Result<void> replace_child(Node& parent, const std::string& slot, Child* current, Node& target);
  Result<void> detach_backing(Node& parent, Child* current);
  void add_edge(Node& parent, std::string name, ChildRole role, Node& target);
  void save(Node& node);
  Result<void> prepare_all(PermUpdate& update);
  void commit(PermUpdate& update);
  void abort(PermUpdate& update);

  Engine& engine_;
  OptionSyntax syntax_;
  bool keep_old_;
  std::deque<ReopenEntry> queue_;  // a deque: entries point at their queued parent
  std::unordered_map<Node*, Saved> saved_;
  std::vector<Edit> edits_;
  std::vector<Node*> moved_;  // nodes that gained or lost a parent edge
  std::vector<std::string> released_;
};

Result<void> ReopenTransaction::run(const std::vector<nlohmann::json>& entries) {
  // Queueing only computes; nothing changes until prepare.
  for (const nlohmann::json& entry : entries) {
    auto node = find_entry_node(engine_, entry);
    if (!node) return node.error();
    auto queued = queue(**node, entry, {nullptr, ChildRole::kNone, keep_old_, !keep_old_, ""});
    if (!queued) return queued;
  }
  PermUpdate update;
  auto prepared = prepare_all(update);
  if (!prepared) {
    abort(update);
    return prepared;
  }
  commit(update);
  return {};
}

Result<void> ReopenTransaction::queue(Node& node, const nlohmann::json& options, QueueArgs args) {
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const ReopenEntry& e) { return e.node == &node; });
  ReopenEntry* e = nullptr;
  if (it == queue_.end()) {
    e = &queue_.emplace_back();
    e->node = &node;
    e->options = options;
    e->prefix = std::move(args.prefix);
    e->keep_old = args.keep_old;
    e->require_driver = args.require_driver;
    e->parent = args.parent;
    e->role = args.role;
  } else {
    // Queued before (named twice, or named and also an inline child): the options merge, the
    // later ones winning, and its inline children are queued again with the result.
    e = &*it;
    for (auto o = options.begin(); o != options.end(); ++o) e->options[o.key()] = *o;
    e->keep_old = e->keep_old || args.keep_old;
    e->require_driver = e->require_driver || args.require_driver;
    if (args.parent != nullptr) {
      e->parent = args.parent;
      e->role = args.role;
    }
  }
  auto computed = compute(*e);
  if (!computed) return computed;
  return queue_children(*e);
}

Result<void> ReopenTransaction::compute(ReopenEntry& e) {
  if (!e.node->has_driver()) return fail(EBUSY, "Node '{}' is still being opened", e.node->name());
  auto is_object = OptionReader::expect_object(e.options, e.prefix.empty() ? "options" : e.prefix);
  if (!is_object) return is_object;
  auto generic = new_generic(e);
  if (!generic) return generic.error();
  e.generic = std::move(*generic);
  set_driver_options(e);
  return {};
}

Result<GenericOptions> ReopenTransaction::new_generic(const ReopenEntry& e) const {
  const Node& node = *e.node;
  const NodeOptions& old = node.options();
  OptionReader reader(e.options, syntax_, e.prefix);
  auto g = parse_generic(reader);
  if (!g) return g.error();
  if (g->node_name && *g->node_name != node.name()) {
    return fail(EINVAL, "Cannot change the option 'node-name'");
  }
  if (g->driver) {
    if (engine_.find_driver(*g->driver) == nullptr) {
      return fail(EINVAL, "Parameter 'driver' does not accept value '{}'", *g->driver);
    }
    if (*g->driver != old.driver) return fail(EINVAL, "Cannot change the option 'driver'");
  } else if (e.require_driver) {
    return reader.missing("driver");
  }
  if (g->given.force_share && g->options.force_share != old.force_share) {
    return fail(EINVAL, "Cannot change the option 'force-share'");
  }
  if (e.keep_old) {
    keep_explicit(*g, old, node.explicit_options());
    fill_unset(*g, old);
  }
  inherit(*g, e.parent != nullptr ? &e.parent->generic.options : nullptr, e.role);
  // force-share never changes in a reopen, whatever the parent has now.
  g->options.force_share = old.force_share;
  g->given.force_share = g->given.force_share || node.explicit_options().force_share;
  g->options.node_name = node.name();
  g->options.driver = old.driver;
  auto valid = validate_generic(g->options);
  if (!valid) return valid.error();
  return g;
}

void ReopenTransaction::set_driver_options(ReopenEntry& e) const {
  nlohmann::json given = nlohmann::json::object();
  for (auto it = e.options.begin(); it != e.options.end(); ++it) {
    if (!is_generic_option(it.key()) && !is_child_slot(*e.node, it.key())) given[it.key()] = *it;
  }
  if (!e.keep_old) {
    e.driver_options = std::move(given);
    e.driver_syntax = syntax_;
    return;
  }
  // Old values fill the gaps. The node's options may have been given in either syntax, so the
  // driver reads the merged set as keyval text, which parses into any type.
  e.driver_options = to_keyval(e.node->driver_options());
  for (auto it = given.begin(); it != given.end(); ++it) {
    e.driver_options[it.key()] = to_keyval(*it);
  }
  e.driver_syntax = OptionSyntax::kKeyval;
}

Result<void> ReopenTransaction::queue_children(ReopenEntry& e) {
  // A snapshot: queueing does not change the graph, but the span is cheap to copy anyway.
  std::vector<Child*> children(e.node->children().begin(), e.node->children().end());
  for (Child* c : children) {
    Node& child = c->node();
    if (child.inherits_from() != e.node) continue;  // a reference: left alone
    std::string prefix = e.prefix + c->name() + ".";
    auto slot = e.options.find(c->name());
    Result<void> queued;
    if (slot == e.options.end()) {
      queued = queue(child, nlohmann::json::object(), {&e, c->role(), e.keep_old, false, prefix});
    } else if (slot->is_string() && slot->get_ref<const std::string&>() == child.name()) {
      // The current child by name: it keeps its options, and still inherits.
      queued = queue(child, nlohmann::json::object(), {&e, c->role(), true, false, prefix});
    } else if (slot->is_object()) {
      nlohmann::json sub = *slot;
      queued = queue(child, sub, {&e, c->role(), e.keep_old, !e.keep_old, prefix});
    }
    // Anything else points the slot elsewhere; prepare_children() deals with it.
    if (!queued) return queued;
  }
  return {};
}

Result<void> ReopenTransaction::prepare_all(PermUpdate& update) {
  for (ReopenEntry& e : queue_) {
    save(*e.node);
    auto prepared = prepare(e);
    if (!prepared) return prepared;
  }
  std::vector<Node*> start;
  start.reserve(queue_.size() + moved_.size());
  for (ReopenEntry& e : queue_) {
    bool read_only_before = e.node->is_read_only();
    e.node->mutable_options() = e.generic.options;
    update.note_reopening(*e.node, read_only_before);
    start.push_back(e.node);
  }
  start.insert(start.end(), moved_.begin(), moved_.end());
  return update.refresh(start);
}

Result<void> ReopenTransaction::prepare(ReopenEntry& e) {
  auto checked = check_driver_options(e);
  if (!checked) return checked;
  OptionReader reader(e.driver_options, e.driver_syntax, e.prefix);
  auto prepared = e.node->driver().reopen_prepare(reader, e.generic.options);
  if (!prepared) return prepared;
  e.driver_prepared = true;
  return prepare_children(e);
}

Result<void> ReopenTransaction::check_driver_options(const ReopenEntry& e) const {
  const nlohmann::json& old = e.node->driver_options();
  for (auto it = old.begin(); it != old.end(); ++it) {
    if (!e.driver_options.contains(it.key()) && !is_mutable(*e.node, it.key())) {
      return fail(EINVAL, "Option '{}' cannot be reset to its default value", it.key());
    }
  }
  for (auto it = e.driver_options.begin(); it != e.driver_options.end(); ++it) {
    if (is_mutable(*e.node, it.key())) continue;
    auto before = old.find(it.key());
    if (before == old.end() || !same_value(*before, *it)) {
      return fail(EINVAL, "Cannot change the option '{}'", it.key());
    }
  }
  return {};
}

Result<void> ReopenTransaction::prepare_children(ReopenEntry& e) {
  Node& node = *e.node;
  if (!e.keep_old && !e.options.contains("backing") && node.child("backing") != nullptr) {
    return fail(EINVAL, "backing is missing for '{}'", node.name());
  }
  // QEMU's order: backing, then file, then the other children.
  std::vector<std::string> slots{"backing", "file"};
  for (Child* c : node.children()) {
    if (c->name() != "backing" && c->name() != "file") slots.push_back(c->name());
  }
  for (const std::string& slot : slots) {
    auto value = e.options.find(slot);
    if (value == e.options.end()) continue;
    auto set = set_child(e, slot, *value);
    if (!set) return set;
  }
  return {};
}

Result<void> ReopenTransaction::set_child(ReopenEntry& e, const std::string& slot,
                                          const nlohmann::json& value) {
  Node& node = *e.node;
  Child* current = node.child(slot);
  bool is_null = value.is_null() || (syntax_ == OptionSyntax::kKeyval && value.is_string() &&
                                     value.get_ref<const std::string&>().empty());
  if (value.is_string() && !is_null) {
    const std::string& name = value.get_ref<const std::string&>();
    if (current != nullptr && current->node().name() == name) return {};
    if (slot != "file" && slot != "backing") {
      return fail(EINVAL, "Cannot change the option '{}'", slot);
    }
    Node* target = engine_.find_node(name);
    if (target == nullptr) return fail(ENODEV, "Cannot find device='' nor node-name='{}'", name);
    return replace_child(node, slot, current, *target);
  }
  if (is_null && slot == "backing") return detach_backing(node, current);
  if (value.is_object()) {
    // An inline child was queued with these options; any other child keeps its own.
    if (current != nullptr && current->node().inherits_from() == &node) return {};
    return fail(EINVAL, "Cannot change the option '{}.{}'", slot, first_key(value));
  }
  return fail(EINVAL, "Invalid parameter type for '{}{}', expected: {}", e.prefix, slot,
              slot == "backing" ? "BlockdevRefOrNull" : "BlockdevRef");
}

Result<void> ReopenTransaction::replace_child(Node& parent, const std::string& slot, Child* current,
                                              Node& target) {
  if (reaches(target, parent)) {
    return fail(EINVAL, "Making '{}' a {} child of '{}' would create a cycle", target.name(), slot,
                parent.name());
  }
  const DriverClass& cls = parent.driver_class();
  if (cls.kind == DriverKind::kFilter && current == nullptr) {
    return fail(EINVAL, "'{}' is a {} filter node that does not support a {} child", parent.name(),
                cls.name, slot);
  }
  if (current != nullptr && current->frozen()) {
    return fail(EPERM, "Cannot change frozen '{}' link from '{}' to '{}'", slot, parent.name(),
                current->node().name());
  }
  if (current == nullptr) {
    if (slot == "file") {
      return fail(EINVAL, "Cannot set file child to format node without file child");
    }
    if (cls.kind != DriverKind::kFilter && !cls.supports_backing) {
      return fail(EINVAL, "Driver '{}' of node '{}' does not support backing files", cls.name,
                  parent.name());
    }
    add_edge(parent, slot, ChildRole::kCow, target);
    return {};
  }
  Node& old = current->node();
  save(parent);
  save(old);
  save(target);
  // The old child no longer belongs to this parent's options (QEMU's bdrv_unset_inherits_from).
  if (old.inherits_from() == &parent) old.set_origin(old.explicit_options(), nullptr);
  current->replace_node(target);
  edits_.push_back({EditKind::kReplace, current, &parent, &old});
  moved_.push_back(&old);
  moved_.push_back(&target);
  return {};
}

Result<void> ReopenTransaction::detach_backing(Node& parent, Child* current) {
  if (current == nullptr) return {};
  Node& old = current->node();
  if (current->frozen()) {
    return fail(EPERM, "Cannot change frozen 'backing' link from '{}' to '{}'", parent.name(),
                old.name());
  }
  save(parent);
  save(old);
  if (old.inherits_from() == &parent) old.set_origin(old.explicit_options(), nullptr);
  parent.remove_child(current);
  old.remove_parent(current);
  edits_.push_back({EditKind::kRemove, current, &parent, &old});
  moved_.push_back(&old);
  return {};
}

void ReopenTransaction::add_edge(Node& parent, std::string name, ChildRole role, Node& target) {
  save(parent);
  save(target);
  auto owned = std::make_unique<Child>(std::move(name), role, parent, target);
  Child* edge = owned.get();
  engine_.edges_.emplace(edge, std::move(owned));
  target.add_parent(edge);
  parent.add_child(edge);
  edits_.push_back({EditKind::kAdd, edge, &parent, nullptr});
  moved_.push_back(&target);
}

void ReopenTransaction::save(Node& node) {
  if (saved_.count(&node) != 0) return;
  Saved saved;
  saved.options = node.options();
  saved.explicit_options = node.explicit_options();
  saved.inherits_from = node.inherits_from();
  saved.children.assign(node.children().begin(), node.children().end());
  saved.parents.assign(node.parents().begin(), node.parents().end());
  saved_.emplace(&node, std::move(saved));
}

void ReopenTransaction::commit(PermUpdate& update) {
  // Children before parents (qcow2 writes its header flags after its children are ready).
  for (auto e = queue_.rbegin(); e != queue_.rend(); ++e) e->node->driver().reopen_commit();
  update.commit();
  for (auto e = queue_.rbegin(); e != queue_.rend(); ++e) {
    Node& node = *e->node;
    node.set_origin(e->generic.given, node.inherits_from());
    node.set_driver_options(stored_driver_options(*e));
    node.refresh_limits();
  }
  for (const Edit& edit : edits_) {
    if (edit.kind == EditKind::kAdd) continue;
    released_.push_back(edit.kind == EditKind::kRemove ? edit.edge->node().name()
                                                       : edit.old_node->name());
    if (edit.kind == EditKind::kRemove) engine_.edges_.erase(edit.edge);
  }
}

void ReopenTransaction::abort(PermUpdate& update) {
  update.abort();
  for (auto edit = edits_.rbegin(); edit != edits_.rend(); ++edit) {
    Child* edge = edit->edge;
    switch (edit->kind) {
      case EditKind::kReplace:
        edge->replace_node(*edit->old_node);
        break;
      case EditKind::kRemove:
        edit->parent->add_child(edge);
        edge->node().add_parent(edge);
        break;
      case EditKind::kAdd:
        edit->parent->remove_child(edge);
        edge->node().remove_parent(edge);
        engine_.edges_.erase(edge);
        break;
    }
  }
  for (auto& [node, saved] : saved_) {
    node->mutable_options() = saved.options;
    node->set_origin(saved.explicit_options, saved.inherits_from);
    node->restore_edge_order(std::move(saved.children), std::move(saved.parents));
  }
  for (auto e = queue_.rbegin(); e != queue_.rend(); ++e) {
    if (e->driver_prepared) e->node->driver().reopen_abort();
  }
}

Task<Result<void>> Engine::reopen(std::vector<nlohmann::json> entries, OptionSyntax syntax,
                                  bool keep_old_options) {
  // Unknown nodes fail before anything is flushed.
  std::vector<std::string> names;
  for (const nlohmann::json& entry : entries) {
    auto node = find_entry_node(*this, entry);
    if (!node) co_return node.error();
    names.push_back((*node)->name());
  }
  for (const std::string& name : names) {
    Node* node = find_node(name);
    if (node == nullptr) continue;  // gone meanwhile: the transaction reports it
    auto flush = node->flush();
    auto flushed = co_await flush;
    if (!flushed) co_return flushed.error().prefixed("Error flushing drive");
  }
  auto drain = drain_graph(this);
  co_await drain;

  ReopenTransaction transaction(*this, syntax, keep_old_options);
  auto done = transaction.run(entries);
  if (!done) co_return done.error();
  for (const std::string& name : transaction.released()) {
    Node* node = find_node(name);
    if (node == nullptr) continue;
    auto release = release_node(node);
    co_await release;
  }
  co_return Result<void>{};
}

Task<Result<void>> Engine::set_read_only(Node& node, bool read_only) {
  std::vector<nlohmann::json> entries;
  entries.push_back({{"node-name", node.name()}, {"read-only", read_only}});
  return reopen(std::move(entries), OptionSyntax::kJson, true);
}

}  // namespace strata
