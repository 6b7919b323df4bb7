"""The digits example's labelling function: the digit a caption names, read from its number word.

Listed in examples/digits/params.yaml as `label.functions: [examples.digits.labelling:caption_digit]`;
flywheel imports it by that path, like any user's labelling function, and calls it once per clean row.
"""

from __future__ import annotations

import re
from typing import Any

from examples.digits.vocabulary import DIGIT_WORDS, fold

# Digit words per language (accents stripped, lower case): every language the demo writes.
NUMBER_WORDS: dict[str, tuple[str, ...]] = {lang: tuple(fold(w) for w in words) for lang, words in DIGIT_WORDS.items()}
# Indefinite articles that also spell "one" ("un chiffre", "een cijfer"): they name the digit
# only when nothing else does and they are not the caption's leading article.
ARTICLES_MEANING_ONE: frozenset[str] = frozenset({"un", "une", "una", "uno", "ein", "eine", "een"})


def caption_label(caption: str | None, language: str | None) -> int | None:
    """The digit a caption names, or None when it names none or several.

    Words of the caption's own language are tried first; unknown languages fall back to every
    table. A numeral 0..9 counts; a larger number ("10") makes the caption ambiguous.
    """
    if not caption:
        return None
    tokens = re.findall(r"[a-z]+|\d+", fold(caption))
    if len(tokens) > 1 and tokens[0] in ARTICLES_MEANING_ONE:
        tokens = tokens[1:]  # "un chiffre numérisé" is "a digit", not "one digit"
    tables = [NUMBER_WORDS[language]] if language in NUMBER_WORDS else list(NUMBER_WORDS.values())
    found = {digit for table in tables for digit, word in enumerate(table) for token in tokens if token == word}
    numerals = {int(token) for token in tokens if token.isdigit()}
    if any(n > 9 for n in numerals):
        return None
    found |= numerals
    if len(found) > 1 and 1 in found and {t for t in tokens if t in ARTICLES_MEANING_ONE}:
        found.discard(1)  # "c'est un sept": the article gave the 1
    return found.pop() if len(found) == 1 else None


def caption_digit(row: dict[str, Any]) -> str | None:
    """Labelling function: the class name ("7") of the digit the row's caption names; None abstains."""
    digit = caption_label(row.get("caption"), row.get("language"))
    return None if digit is None else str(digit)
