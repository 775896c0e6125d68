#include "output.h"

namespace strata::qmp_client {

using nlohmann::json;

namespace {

// dump() throws on invalid UTF-8 unless told otherwise; a server's odd byte must not kill the
// client, so such bytes are replaced.
std::string safe_dump(const json& value, int indent) {
  return value.dump(indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace

std::string format_return(const json& reply) {
  auto ret = reply.find("return");
  return ret == reply.end() ? std::string() : safe_dump(*ret, 2);
}

std::string format_error(const json& reply) {
  auto error = reply.find("error");
  if (error == reply.end()) return {};
  auto cls = error->find("class");
  auto desc = error->find("desc");
  std::string cls_text = cls != error->end() && cls->is_string() ? cls->get<std::string>()
                                                                 : std::string("GenericError");
  std::string desc_text =
      desc != error->end() && desc->is_string() ? desc->get<std::string>() : safe_dump(*error, -1);
  return cls_text + ": " + desc_text;
}

std::string format_event(const json& event) { return safe_dump(event, -1); }

}  // namespace strata::qmp_client
