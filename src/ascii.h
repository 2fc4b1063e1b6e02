// ASCII character tests for what job files and flags spell out: names,
// identifiers, units. Unlike <cctype> they ignore the locale and take any
// char, so a byte from outside data is never undefined behaviour.
//
// Used by the job-file parser, the duration and size parsers and the "did
// you mean" Suggester. Thread-safe: pure functions.
#ifndef DROVER_ASCII_H_
#define DROVER_ASCII_H_

namespace drover {

inline char Lower(char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }
inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }
inline bool IsAlpha(char c) { return Lower(c) >= 'a' && Lower(c) <= 'z'; }
inline bool IsWordChar(char c) { return IsAlpha(c) || IsDigit(c) || c == '_'; }

}  // namespace drover

#endif  // DROVER_ASCII_H_
