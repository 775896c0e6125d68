#include "qemu_json.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace strata::tools {
namespace {

using nlohmann::ordered_json;

constexpr unsigned kQdictBuckets = 512;

// The keys of `dict` in the order QEMU's qdict_first/qdict_next visit them.
std::vector<std::string> qdict_order(const ordered_json& dict) {
  std::vector<std::vector<std::string>> buckets(kQdictBuckets);
  for (auto it = dict.begin(); it != dict.end(); ++it) {
    auto& bucket = buckets[qdict_bucket(it.key())];
    bucket.insert(bucket.begin(), it.key());  // QLIST_INSERT_HEAD: the newest first
  }
  std::vector<std::string> keys;
  for (const auto& bucket : buckets) keys.insert(keys.end(), bucket.begin(), bucket.end());
  return keys;
}

// Decodes one UTF-8 sequence at s[i]; returns the code point (U+FFFD for a malformed one, as
// QEMU's mod_utf8_codepoint makes its caller print) and advances i.
uint32_t next_codepoint(std::string_view s, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = byte(i);
  size_t len = 0;
  uint32_t cp = 0;
  if (c < 0x80) {
    ++i;
    return c;
  } else if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else {
    ++i;
    return 0xfffd;
  }
  if (i + len > s.size()) {
    ++i;
    return 0xfffd;
  }
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) {
      ++i;
      return 0xfffd;
    }
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  i += len;
  return cp;
}

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = next_codepoint(s, i);
    char buf[16];
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (cp >= 0x20 && cp < 0x7f) {
          out += static_cast<char>(cp);
        } else if (cp > 0xffff) {
          const uint32_t v = cp - 0x10000;
          std::snprintf(buf, sizeof buf, "\\u%04X\\u%04X", 0xd800 + (v >> 10),
                        0xdc00 + (v & 0x3ff));
          out += buf;
        } else {
          std::snprintf(buf, sizeof buf, "\\u%04X", cp);
          out += buf;
        }
    }
  }
  out += '"';
}

void newline(std::string& out, int indent) {
  out += '\n';
  out.append(static_cast<size_t>(indent) * 4, ' ');
}

void append_json(std::string& out, const ordered_json& v, int indent) {
  if (v.is_object()) {
    if (v.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    const char* sep = "";
    for (const std::string& key : qdict_order(v)) {
      out += sep;
      newline(out, indent + 1);
      append_quoted(out, key);
      out += ": ";
      append_json(out, v[key], indent + 1);
      sep = ",";
    }
    newline(out, indent);
    out += '}';
  } else if (v.is_array()) {
    if (v.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    const char* sep = "";
    for (const auto& e : v) {
      out += sep;
      newline(out, indent + 1);
      append_json(out, e, indent + 1);
      sep = ",";
    }
    newline(out, indent);
    out += ']';
  } else if (v.is_string()) {
    append_quoted(out, v.get_ref<const std::string&>());
  } else {
    out += v.dump();  // numbers, booleans, null print as QEMU prints them
  }
}

void dump_value(std::string& out, const ordered_json& v, int indentation);

void dump_list(std::string& out, const ordered_json& list, int indentation) {
  int i = 0;
  for (const auto& e : list) {
    const bool composite = e.is_object() || e.is_array();
    out.append(static_cast<size_t>(indentation) * 4, ' ');
    out += "[" + std::to_string(i++) + "]:" + (composite ? "\n" : " ");
    dump_value(out, e, indentation + 1);
    if (!composite) out += '\n';
  }
}

void dump_value(std::string& out, const ordered_json& v, int indentation) {
  if (v.is_object()) {
    out += qemu_dump_dict(v, indentation);
  } else if (v.is_array()) {
    dump_list(out, v, indentation);
  } else if (v.is_string()) {
    out += v.get_ref<const std::string&>();
  } else {
    out += v.dump();
  }
}

}  // namespace

std::optional<OutputFormat> parse_output_format(std::string_view text) {
  if (text == "human") return OutputFormat::kHuman;
  if (text == "json") return OutputFormat::kJson;
  return std::nullopt;
}

unsigned qdict_bucket(std::string_view key) {
  uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i) {
    value += static_cast<uint32_t>(static_cast<uint8_t>(key[i])) << (i * 5 % 24);
  }
  return (1103515243u * value + 12345u) % kQdictBuckets;
}

std::string qemu_json_pretty(const ordered_json& value) {
  std::string out;
  append_json(out, value, 0);
  return out;
}

std::string qemu_dump_dict(const ordered_json& dict, int indentation) {
  std::string out;
  for (const std::string& key : qdict_order(dict)) {
    const ordered_json& v = dict[key];
    const bool composite = v.is_object() || v.is_array();
    std::string shown = key;
    for (char& c : shown) {
      if (c == '-') c = ' ';
    }
    out.append(static_cast<size_t>(indentation) * 4, ' ');
    out += shown + ":" + (composite ? "\n" : " ");
    dump_value(out, v, indentation + 1);
    if (!composite) out += '\n';
  }
  return out;
}

std::string qemu_size_to_str(uint64_t value) {
  static constexpr const char* kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  // The exponent of value * 1024 / 1000 picks the unit, so 1000..1023 of a unit already show
  // as the next one ("0.977 KiB"), as QEMU prints them.
  int exp = 0;
  std::frexp(static_cast<double>(value) / (1000.0 / 1024.0), &exp);
  const int unit = (exp - 1) / 10;
  const double shown = static_cast<double>(value) / static_cast<double>(uint64_t{1} << (unit * 10));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %sB", shown, kSuffixes[unit]);
  return buf;
}

}  // namespace strata::tools
