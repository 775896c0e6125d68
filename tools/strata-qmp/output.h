// How strata-qmp prints what the server says, the same way in one-shot mode and in the shell.
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace strata::qmp_client {

// A reply's "return" value as indented JSON (two spaces), or "" when the reply has none.
std::string format_return(const nlohmann::json& reply);

// A reply's error as "<class>: <desc>" (QMP's error object); "" when the reply is no error.
std::string format_error(const nlohmann::json& reply);

// An event as one line of compact JSON, timestamp included, so a log can be grepped and parsed.
std::string format_event(const nlohmann::json& event);

}  // namespace strata::qmp_client
