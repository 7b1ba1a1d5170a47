// Arithmetic on sizes and counts read from an archive, which may be anything.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace imapstage {

// a + b, or Error(corrupt) saying `what` overflowed when the sum does not fit in 64 bits.
inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t sum;
  if (__builtin_add_overflow(a, b, &sum))
    throw Error(ErrorKind::corrupt, what + " exceeds 2^64 bytes: a size in the index is impossible", Retry::never);
  return sum;
}

}  // namespace imapstage
