// The Message-ID of a raw message, for finding it again on a target server.
#pragma once

#include <string>
#include <string_view>

namespace imapstage {

// The value of the first Message-ID header field (unfolded, surrounding
// white space removed, e.g. "<abc@example.org>"), or "" if the header
// section has none. Only the header section (up to the first empty line) is read.
std::string extract_message_id(std::string_view message);

}  // namespace imapstage
