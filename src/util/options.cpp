// OptionReader: typed reads of one JSON object of options, with the texts of QEMU's QObject
// input visitor (qapi/qobject-input-visitor.c, QEMU 7.2).
//
// JSON mode is strict: a boolean must be a JSON boolean, an integer a JSON integer. Keyval mode
// converts the strings parse_keyval produces; it also takes a value that already has the right
// JSON type, so that code merging defaults into keyval-made options need not stringify them.
//
// Deliberate difference from QEMU: unsigned options refuse negative numbers. QEMU accepts them
// in JSON and in keyval text for backward compatibility and wraps them around, which turns
// "size": -1 into 16 EiB.
#include "strata/options.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace strata {

namespace {

using nlohmann::json;

// strtoll/strtoull with base 0 (decimal, 0x hex, 0 octal) over the whole string, as QEMU's
// qemu_strtoi64/qemu_strtou64 read keyval numbers.
std::optional<int64_t> parse_keyval_int(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  long long value = std::strtoll(begin, &end, 0);
  if (errno != 0 || end == begin || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(value);
}

std::optional<uint64_t> parse_keyval_uint(const std::string& text) {
  const char* begin = text.c_str();
  // strtoull accepts "-1" and wraps it; an unsigned option has no use for that.
  if (text.find('-') != std::string::npos) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long value = std::strtoull(begin, &end, 0);
  if (errno != 0 || end == begin || *end != '\0') return std::nullopt;
  return static_cast<uint64_t>(value);
}

// The spellings qapi_bool_parse accepts.
std::optional<bool> parse_keyval_bool(std::string_view text) {
  if (text == "on" || text == "yes" || text == "true" || text == "y") return true;
  if (text == "off" || text == "no" || text == "false" || text == "n") return false;
  return std::nullopt;
}

std::optional<int64_t> json_int(const json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

std::optional<uint64_t> json_uint(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

}  // namespace

OptionReader::OptionReader(const nlohmann::json& obj, OptionSyntax syntax, std::string prefix)
    : obj_(obj), syntax_(syntax), prefix_(std::move(prefix)) {}

Result<void> OptionReader::expect_object(const nlohmann::json& obj, std::string_view what) {
  if (obj.is_object()) return {};
  return fail(EINVAL, "Invalid parameter type for '{}', expected: object", what);
}

bool OptionReader::has(std::string_view key) const {
  return obj_.is_object() && obj_.find(std::string(key)) != obj_.end();
}

const nlohmann::json* OptionReader::find(std::string_view key) {
  if (!obj_.is_object()) return nullptr;
  auto it = obj_.find(std::string(key));
  if (it == obj_.end()) return nullptr;
  consumed_.emplace(key);
  return &*it;
}

const nlohmann::json* OptionReader::take(std::string_view key) { return find(key); }

std::string OptionReader::full_name(std::string_view key) const {
  return prefix_ + std::string(key);
}

Error OptionReader::missing(std::string_view key) const {
  return fail(EINVAL, "Parameter '{}' is missing", full_name(key));
}

Result<std::optional<std::string>> OptionReader::get_string(std::string_view key) {
  const json* v = find(key);
  if (v == nullptr) return std::optional<std::string>{};
  if (v->is_string()) return std::optional<std::string>{v->get<std::string>()};
  if (syntax_ == OptionSyntax::kKeyval && v->is_structured()) {
    return fail(EINVAL, "Parameters '{}.*' are unexpected", full_name(key));
  }
  return fail(EINVAL, "Invalid parameter type for '{}', expected: string", full_name(key));
}

Result<std::optional<bool>> OptionReader::get_bool(std::string_view key) {
  const json* v = find(key);
  if (v == nullptr) return std::optional<bool>{};
  if (v->is_boolean()) return std::optional<bool>{v->get<bool>()};
  if (syntax_ == OptionSyntax::kJson) {
    return fail(EINVAL, "Invalid parameter type for '{}', expected: boolean", full_name(key));
  }
  if (v->is_structured()) {
    return fail(EINVAL, "Parameters '{}.*' are unexpected", full_name(key));
  }
  if (v->is_string()) {
    if (auto b = parse_keyval_bool(v->get_ref<const std::string&>())) {
      return std::optional<bool>{*b};
    }
  }
  return fail(EINVAL, "Parameter '{}' expects 'on' or 'off'", full_name(key));
}

Result<std::optional<int64_t>> OptionReader::get_int(std::string_view key) {
  const json* v = find(key);
  if (v == nullptr) return std::optional<int64_t>{};
  if (auto i = json_int(*v)) return std::optional<int64_t>{*i};
  if (syntax_ == OptionSyntax::kJson) {
    return fail(EINVAL, "Invalid parameter type for '{}', expected: integer", full_name(key));
  }
  if (v->is_structured()) {
    return fail(EINVAL, "Parameters '{}.*' are unexpected", full_name(key));
  }
  if (v->is_string()) {
    if (auto i = parse_keyval_int(v->get_ref<const std::string&>())) {
      return std::optional<int64_t>{*i};
    }
  }
  return fail(EINVAL, "Parameter '{}' expects integer", full_name(key));
}

Result<std::optional<uint64_t>> OptionReader::get_uint(std::string_view key) {
  const json* v = find(key);
  if (v == nullptr) return std::optional<uint64_t>{};
  if (auto u = json_uint(*v)) return std::optional<uint64_t>{*u};
  if (syntax_ == OptionSyntax::kJson) {
    return fail(EINVAL, "Parameter '{}' expects uint64", full_name(key));
  }
  if (v->is_structured()) {
    return fail(EINVAL, "Parameters '{}.*' are unexpected", full_name(key));
  }
  if (v->is_string()) {
    if (auto u = parse_keyval_uint(v->get_ref<const std::string&>())) {
      return std::optional<uint64_t>{*u};
    }
  }
  return fail(EINVAL, "Parameter '{}' expects integer", full_name(key));
}

Result<std::optional<uint64_t>> OptionReader::get_size(std::string_view key) {
  // QEMU's JSON visitor has no size type of its own: a size is read as a uint64 there.
  if (syntax_ == OptionSyntax::kJson) return get_uint(key);
  const json* v = find(key);
  if (v == nullptr) return std::optional<uint64_t>{};
  if (auto u = json_uint(*v)) return std::optional<uint64_t>{*u};
  if (v->is_structured()) {
    return fail(EINVAL, "Parameters '{}.*' are unexpected", full_name(key));
  }
  if (v->is_string()) {
    if (auto u = parse_size(v->get_ref<const std::string&>())) {
      return std::optional<uint64_t>{*u};
    }
  }
  return fail(EINVAL, "Parameter '{}' expects size", full_name(key));
}

Result<void> OptionReader::finish() const {
  if (!obj_.is_object()) return {};
  // nlohmann::json keeps object members sorted, so "the first" is the same on every run.
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    if (consumed_.find(it.key()) == consumed_.end()) {
      return fail(EINVAL, "Parameter '{}' is unexpected", full_name(it.key()));
    }
  }
  return {};
}

}  // namespace strata
