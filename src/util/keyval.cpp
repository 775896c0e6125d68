// parse_keyval: QEMU's KEY=VALUE,... syntax (util/keyval.c semantics), reduced to JSON.
//
//   key-vals     = [ key-val { ',' key-val } [ ',' ] ]
//   key-val      = key '=' val | help
//   key          = key-fragment { '.' key-fragment }
//   key-fragment = qapi-name | index          (index only after the first fragment)
//   val          = { any character but ',' | ',,' }
//   help         = 'help' | '?'
//
// A dotted key is a path from the root object to a leaf; every leaf is a string. An object
// whose members are all indexes becomes an array, and the indexes must have no gaps. When the
// same leaf is given twice the last value wins (QEMU's rule, not an error). With an implied key,
// the first element may be a bare value: "file,filename=x" means "driver=file,filename=x".
//
// Error texts are QEMU's, since scripts and people compare them.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/options.h"

namespace strata {

namespace {

using nlohmann::json;

// QEMU keeps each key fragment in a 128-byte buffer with its terminator.
constexpr std::size_t kMaxFragment = 127;

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

// Length of the QAPI name at the start of `s` ("__RFQDN_" downstream prefix allowed), or 0.
std::size_t qapi_name_length(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && s[i] == '_') {
    if (++i >= s.size() || s[i] != '_') return 0;
    do {
      ++i;
    } while (i < s.size() && (is_alnum(s[i]) || s[i] == '-' || s[i] == '.'));
    if (i >= s.size() || s[i] != '_') return 0;
    ++i;
  }
  if (i >= s.size() || !is_alpha(s[i])) return 0;
  do {
    ++i;
  } while (i < s.size() && (is_alnum(s[i]) || s[i] == '-' || s[i] == '_'));
  return i;
}

// Number of leading decimal digits of `s`.
std::size_t index_length(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && is_digit(s[i])) ++i;
  return i;
}

// The list index a key made only of digits stands for, capped at INT_MAX like QEMU's.
std::optional<std::size_t> key_to_index(std::string_view key) {
  if (key.empty() || index_length(key) != key.size()) return std::nullopt;
  std::size_t value = 0;
  for (char c : key) {
    value = value * 10 + static_cast<std::size_t>(c - '0');
    if (value > INT_MAX) return static_cast<std::size_t>(INT_MAX);
  }
  return value;
}

bool is_help(std::string_view element) { return element == "help" || element == "?"; }

// Where a key's value goes: member `name` of the object `parent`.
struct Leaf {
  json* parent;
  std::string name;
};

class KeyvalParser {
 public:
  KeyvalParser(std::string_view text, std::string_view implied_key)
      : text_(text), implied_key_(implied_key) {}

  Result<json> parse() {
    json root = json::object();
    while (pos_ < text_.size()) {
      auto r = parse_one(root);
      if (!r) return r.error();
      implied_key_ = {};
    }
    if (help_) return fail(EINVAL, "Help is not available for this option");
    std::string path;
    auto listed = listify(root, path);
    if (!listed) return listed.error();
    return root;
  }

 private:
  // Parses the element at pos_ into `root` and moves pos_ past it and its ','.
  Result<void> parse_one(json& root) {
    std::string_view rest = text_.substr(pos_);
    std::size_t len = rest.find_first_of("=,");
    if (len == std::string_view::npos) len = rest.size();
    bool bare = len != 0 && (len == rest.size() || rest[len] != '=');
    if (bare && is_help(rest.substr(0, len))) {
      help_ = true;
      skip_element(len);
      return {};
    }
    if (bare && !implied_key_.empty()) {
      auto leaf = walk_key(root, implied_key_);
      if (!leaf) return leaf.error();
      std::string value(rest.substr(0, len));
      skip_element(len);
      return put_string(*leaf, std::move(value), implied_key_);
    }

    std::string_view key = rest.substr(0, len);
    auto leaf = walk_key(root, key);
    if (!leaf) return leaf.error();
    if (len == rest.size() || rest[len] != '=') {
      return fail(EINVAL, "Expected '=' after parameter '{}'", key);
    }
    pos_ += len + 1;
    return put_string(*leaf, read_value(), key);
  }

  // Moves pos_ past a bare element of `len` characters and the ',' after it.
  void skip_element(std::size_t len) {
    pos_ += len;
    if (pos_ < text_.size() && text_[pos_] == ',') ++pos_;
  }

  // Reads a value at pos_ up to an unescaped ',' (",," is a literal comma).
  std::string read_value() {
    std::string value;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == ',') {
        if (pos_ >= text_.size() || text_[pos_] != ',') break;
        ++pos_;
      }
      value.push_back(c);
    }
    return value;
  }

  // Checks the fragments of `key` and creates the objects on its path; returns where the value
  // goes.
  Result<Leaf> walk_key(json& root, std::string_view key) {
    json* cur = &root;
    std::string leaf;
    std::size_t s = 0;
    for (;;) {
      std::string_view frag = key.substr(s);
      std::size_t len =
          s != 0 && index_length(frag) != 0 ? index_length(frag) : qapi_name_length(frag);
      if (len == 0 || (s + len < key.size() && key[s + len] != '.')) {
        return fail(EINVAL, "Invalid parameter '{}'", key);
      }
      if (len > kMaxFragment) {
        bool whole = s == 0 && len == key.size();
        return fail(EINVAL, "Parameter{} '{}' is too long", whole ? "" : " fragment",
                    key.substr(s, len));
      }
      if (s != 0) {
        auto next = put_object(*cur, leaf, key.substr(0, s - 1));
        if (!next) return next.error();
        cur = *next;
      }
      leaf.assign(key.substr(s, len));
      s += len;
      if (s >= key.size() || key[s] != '.') break;
      ++s;
    }
    return Leaf{cur, std::move(leaf)};
  }

  // Makes cur[name] an object (keeping an existing one). `prefix` names it in errors.
  static Result<json*> put_object(json& cur, const std::string& name, std::string_view prefix) {
    auto it = cur.find(name);
    if (it == cur.end()) return &(cur[name] = json::object());
    if (!it->is_object()) {
      return fail(EINVAL, "Parameters '{}.*' used inconsistently", prefix);
    }
    return &*it;
  }

  // Sets the leaf to a string; the last of several values for one leaf wins.
  static Result<void> put_string(const Leaf& leaf, std::string value, std::string_view key) {
    auto it = leaf.parent->find(leaf.name);
    if (it != leaf.parent->end() && !it->is_string()) {
      return fail(EINVAL, "Parameters '{}.*' used inconsistently", key);
    }
    (*leaf.parent)[leaf.name] = std::move(value);
    return {};
  }

  // Replaces, depth first, every object whose keys are all indexes by an array. `path` is the
  // dotted key of `cur` with a trailing '.', for error messages.
  static Result<void> listify(json& cur, std::string& path) {
    bool has_index = false;
    bool has_member = false;
    for (auto it = cur.begin(); it != cur.end(); ++it) {
      const std::string& name = it.key();
      json& value = it.value();
      if (key_to_index(name)) {
        has_index = true;
      } else {
        has_member = true;
      }
      if (!value.is_object()) continue;
      std::size_t saved = path.size();
      path += name;
      path += '.';
      auto r = listify(value, path);
      if (!r) return r;
      path.resize(saved);
    }
    if (has_index && has_member) {
      return fail(EINVAL, "Parameters '{}*' used inconsistently", path);
    }
    if (!has_index) return {};
    return to_array(cur, path);
  }

  // REQUIRES: every key of `cur` is an index.
  static Result<void> to_array(json& cur, const std::string& path) {
    // Like QEMU, indexes at or past the member count cannot fill a gap-free list, so only the
    // first `n` slots are kept and the first empty one is reported.
    std::size_t n = cur.size();
    std::vector<json*> slots(n + 1, nullptr);
    std::size_t max_index = 0;
    for (auto it = cur.begin(); it != cur.end(); ++it) {
      std::size_t index = *key_to_index(it.key());
      if (index > max_index) max_index = index;
      if (index < n) slots[index] = &it.value();
    }
    json list = json::array();
    std::size_t limit = std::min(n + 1, max_index + 1);
    for (std::size_t i = 0; i < limit; ++i) {
      if (slots[i] == nullptr) return fail(EINVAL, "Parameter '{}{}' missing", path, i);
      list.push_back(std::move(*slots[i]));
    }
    cur = std::move(list);
    return {};
  }

  std::string_view text_;
  std::string_view implied_key_;
  std::size_t pos_ = 0;
  bool help_ = false;
};

}  // namespace

Result<nlohmann::json> parse_keyval(std::string_view text, std::string_view implied_key) {
  return KeyvalParser(text, implied_key).parse();
}

}  // namespace strata
