// Oniguruma pattern syntax, as written in tokenizer.json files, rewritten for PCRE2.
#pragma once

#include <string>

namespace redhare::text {

// Rewrites the constructs whose meaning differs between the two engines, so that PCRE2 matches
// what the reference library's Oniguruma matches:
//  - \w is Alphabetic, marks, decimal digits, connector punctuation and the two joiners
//    (PCRE2 10.42's \w lacks the marks);
//  - \s is exactly White_Space (PCRE2's also has U+180E);
//  - \h is a hex digit, not horizontal space;
//  - \p{..} classes also cover the characters that Unicode assigned after the version of
//    PCRE2's tables: ICU's tables (Unicode 15.0) say which class each is in, and for those
//    assigned after 15.0, up to the reference's version, the general category table
//    unicode_delta.inc does.
// Negated forms inside a bracket class (\W, \S, \P{..} in [...]) are left to PCRE2: no tokenizer
// file seen uses them.
std::string translate_oniguruma(const std::string& pattern);

}  // namespace redhare::text
