// Header fields of a raw message: the Message-ID, for finding a message again
// on a target server, and any other field by name.
#pragma once

#include <string>
#include <string_view>

namespace imapstage {

// The value of the first Message-ID header field (unfolded, surrounding
// white space removed, e.g. "<abc@example.org>"), or "" if the header
// section has none. Only the header section (up to the first empty line) is read.
std::string extract_message_id(std::string_view message);

// The value of the first header field called `name` (any case), unfolded and
// with surrounding white space removed, or "" if the header section has none.
std::string header_field(std::string_view message, std::string_view name);

}  // namespace imapstage
