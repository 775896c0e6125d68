// How strata-qmp turns what a person types into QMP requests.
//
// Arguments come either as one raw JSON object ('{"driver": "file", ...}') or as key=value words
// with QEMU's dotted keys (file.driver=file becomes {"file": {"driver": "file"}}). There is no
// QAPI schema on the client side, so a value's type cannot be looked up the way QEMU's keyval
// visitor does. The rule instead, simple and predictable:
//   - a value that parses as a JSON scalar is that scalar: 512 and -1.5 are numbers, true/false
//     are booleans, null is null, and "512" (with the quotes) is the string "512";
//   - anything else is a string, as typed (driver=file, filename=/tmp/x.img).
// QEMU's on/off spellings are NOT booleans here: enums such as detect-zeroes=off must stay
// strings. Keys whose components are all 0, 1, 2, ... make an array (QEMU's list syntax:
// children.0=a children.1=b). A repeated key: the later value wins, as in QEMU's keyval.
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"

namespace strata::qmp_client {

// The JSON value of one keyval value, by the rule above.
nlohmann::json typed_value(std::string_view text);

// The arguments object of a command from its words: empty -> {}, one word starting with '{' ->
// that JSON object, otherwise key=value words. Errors: a word without '=', an empty key
// component, a key used both as a value and as an object, an array with a gap, bad JSON.
Result<nlohmann::json> parse_arguments(const std::vector<std::string>& words);

// Splits a shell line into words at blanks. '...' and "..." group blanks into one word and are
// removed (as a POSIX shell does, without escapes or expansion); a backslash outside single
// quotes takes the next character literally. Error: an unterminated quote.
Result<std::vector<std::string>> split_words(std::string_view line);

// The request for a shell line: a raw JSON request ('{"execute": ...}'), or a command name
// followed by its arguments as parse_arguments reads them. REQUIRES: the line is not blank.
Result<nlohmann::json> parse_request_line(std::string_view line);

}  // namespace strata::qmp_client
