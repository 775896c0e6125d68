// Typed option parsing at the boundary, with QEMU's error texts.
//
// Options arrive as JSON (QMP arguments, --blockdev '{...}') or as keyval text
// (--blockdev driver=file,filename=x, --image-opts, qemu-io's reopen -o). Keyval text is first
// turned into JSON whose scalars are all strings (parse_keyval); an OptionReader in keyval mode
// then accepts "on"/"off" (and QEMU 7.2's other spellings yes/no, true/false, y/n) for booleans
// and digits (with k/M/G/T/P/E suffixes for sizes) for numbers, as QEMU's keyval input visitor
// does.
//
// An OptionReader consumes the keys of one JSON object; finish() reports the first key nobody
// asked for. Errors name the full dotted path ("file.filename") like QEMU's visitors:
//   "Parameter 'x' is missing"
//   "Parameter 'x' is unexpected"
//   "Invalid parameter type for 'x', expected: boolean"
//   "Invalid parameter type for 'x', expected: integer|string|object"   (JSON)
//   "Parameter 'x' expects uint64"                                     (JSON, unsigned/size)
//   "Parameter 'x' expects 'on' or 'off'"                              (keyval)
//   "Parameter 'x' expects integer" / "... expects size"               (keyval)
//   "Parameters 'x.*' are unexpected"                     (keyval: object where scalar wanted)
//   "Parameter 'y' does not accept value 'z'"    (enums: QEMU names the member, not its path)
//
// Thread safety: plain values.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "strata/result.h"

namespace strata {

enum class OptionSyntax { kJson, kKeyval };

// Parses QEMU keyval text ("a=1,b.c=x,,y") into a nested JSON object whose scalars are strings.
// `implied_key`, if set, names the key of a first element given without "key=" (e.g. "driver"
// for --blockdev, "type" for --export). ",," is a literal comma.
[[nodiscard]] Result<nlohmann::json> parse_keyval(std::string_view text,
                                                  std::string_view implied_key = {});

// Parses a size with an optional binary suffix (k, M, G, T, P, E; case-insensitive; "512",
// "64k", "1.5G" is refused). Used by options and the command-line tools.
[[nodiscard]] std::optional<uint64_t> parse_size(std::string_view text);

class OptionReader {
 public:
  // `obj` must outlive the reader. `prefix` is prepended to key names in messages ("file.").
  OptionReader(const nlohmann::json& obj, OptionSyntax syntax, std::string prefix = {});

  // REQUIRES: the reader was built on a JSON object; check with expect_object() first where the
  // caller has not checked it already.
  // Returns "Invalid parameter type for '<what>', expected: object" if obj is not an object.
  static Result<void> expect_object(const nlohmann::json& obj, std::string_view what);

  bool has(std::string_view key) const;

  Result<std::optional<std::string>> get_string(std::string_view key);
  Result<std::optional<bool>> get_bool(std::string_view key);
  Result<std::optional<int64_t>> get_int(std::string_view key);
  Result<std::optional<uint64_t>> get_uint(std::string_view key);
  // Like get_uint, but keyval text may carry a size suffix.
  Result<std::optional<uint64_t>> get_size(std::string_view key);

  // An enum given as a string, out of `values` (wire name -> value). The error names `key`
  // alone, without the prefix: QEMU's enum visitor does the same.
  template <class E>
  Result<std::optional<E>> get_enum(std::string_view key,
                                    std::span<const std::pair<std::string_view, E>> values) {
    auto s = get_string(key);
    if (!s) return s.error();
    if (!*s) return std::optional<E>{};
    for (const auto& [name, value] : values) {
      if (name == **s) return std::optional<E>{value};
    }
    return fail(EINVAL, "Parameter '{}' does not accept value '{}'", key, **s);
  }

  // The raw JSON value of `key` (for nested objects and BlockdevRef alternates), marking it
  // consumed; nullptr if absent.
  const nlohmann::json* take(std::string_view key);

  // "Parameter '<prefix><key>' is missing".
  Error missing(std::string_view key) const;
  // "<prefix><key>".
  std::string full_name(std::string_view key) const;

  OptionSyntax syntax() const { return syntax_; }
  const std::string& prefix() const { return prefix_; }

  // Fails with "Parameter '<key>' is unexpected" for the first key not consumed.
  Result<void> finish() const;

 private:
  const nlohmann::json* find(std::string_view key);

  const nlohmann::json& obj_;
  OptionSyntax syntax_;
  std::string prefix_;
  std::set<std::string, std::less<>> consumed_;
};

}  // namespace strata
