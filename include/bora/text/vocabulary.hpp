// Why this file exists: Vocabulary moved down to io/vocabulary.hpp (its two readers are in io/, and io
// must not include text/); this name is kept so code that includes the old path still compiles.
#ifndef BORA_TEXT_VOCABULARY_HPP
#define BORA_TEXT_VOCABULARY_HPP

#include "bora/io/vocabulary.hpp"

#endif  // BORA_TEXT_VOCABULARY_HPP
