"""The guards of the semantic tier (the normalized tier's text form is ``reading.keys.normalize_text``).

Embeddings put "refund my order 1234" next to "refund my order 1243", and "I can log in" next to "I can't log in".
Whatever the cosine says, two texts are not interchangeable when they differ in their numbers, their negations,
their quantifiers ("declined" vs "partly declined"), their question word ("where" vs "how"), their quoted strings or
the named things they mention. Each guard compares one of these features; any difference vetoes the match. The
guards on content words (a word in one text only, one vs many, roles) are in ``content.py``.
"""

from __future__ import annotations

import re
from collections import Counter

from costinfer.reading.keys import normalize_text
from costinfer.reuse.content_words import Similar, content_words, one_sided, one_vs_many, swapped_roles, words_asked

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:\.\d+)?%?")
_NUMBER_WORDS = frozenset(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "million",
        "billion",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "half",
        "twice",
        "once",
        "double",
        "triple",
    ]
)
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "hasnt",
        "havent",
        "hadnt",
        "mustnt",
        "neednt",
        "aint",
        "unable",
        "fail",
        "failed",
        "failing",
        "refuse",
        "refused",
        "deny",
        "denied",
    ]
)
_QUANTIFIERS = frozenset(
    [
        "all",
        "every",
        "each",
        "some",
        "any",
        "only",
        "just",
        "partly",
        "partially",
        "fully",
        "completely",
        "most",
        "more",
        "less",
        "least",
        "few",
        "many",
        "several",
        "both",
        "either",
        "extra",
        "always",
        "sometimes",
        "often",
        "rarely",
    ]
)
_QUESTION_WORDS = frozenset(["what", "where", "when", "why", "how", "who", "whom", "whose", "which"])
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|«([^»]+)»|`([^`]+)`|(?<!\w)'([^']{2,})'(?!\w)")
_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")


def numbers(text: str) -> Counter[str]:
    found = Counter(m.group(0).replace(",", "").lstrip("+") for m in _NUMBER.finditer(text))
    for word in _WORD.findall(text.casefold()):
        if word in _NUMBER_WORDS:
            found[word] += 1
    return found


_POSSESSIVE = re.compile(r"['’]s$")


def _words(text: str) -> list[str]:
    """Lowercased words; "what's" counts as "what", "can't" as "cant"."""
    return [_POSSESSIVE.sub("", w).replace("'", "").replace("’", "") for w in _WORD.findall(text.casefold())]


def negations(text: str) -> Counter[str]:
    """The negating words themselves: "can't" and "won't" negate different things."""
    return Counter(w for w in _words(text) if w in _NEGATIONS)


def quantifiers(text: str) -> Counter[str]:
    return Counter(w for w in _words(text) if w in _QUANTIFIERS)


def question_words(text: str) -> set[str]:
    """ "Where do I find X" and "how do I find X" ask different questions."""
    return {w for w in _words(text) if w in _QUESTION_WORDS}


def quoted(text: str) -> set[str]:
    return {normalize_text(next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text)}


def entities(text: str) -> set[str]:
    """Capitalized words that do not start a sentence, and words with inner capitals or digits (names, codes)."""
    found: set[str] = set()
    for m in _WORD.finditer(text):
        word = m.group(0)
        start = m.start()
        sentence_start = start == 0 or bool(_SENTENCE_END.search(text[:start]))
        inner_caps = any(c.isupper() for c in word[1:])
        if (word[0].isupper() and not sentence_start and word.lower() not in ("i", "i'm", "i've", "i'd", "i'll")) or (
            inner_caps and len(word) > 1
        ):
            found.add(word.casefold())
    return found


def conflict(a: str, b: str, similar: Similar | None = None) -> str | None:
    """Why two texts must not share an answer, or None when no guard objects. ``similar`` (word, word) -> cosine
    lets a word in one text only be a synonym of one in the other; without it, every such word vetoes."""
    if numbers(a) != numbers(b):
        return "numbers differ"
    if negations(a) != negations(b):
        return "negation differs"
    if quantifiers(a) != quantifiers(b):
        return "quantifiers differ"
    if question_words(a) != question_words(b):
        return "the question differs"
    if quoted(a) != quoted(b):
        return "quoted text differs"
    if entities(a) != entities(b):
        return "named entities differ"
    words_a, words_b = content_words(a, _OWNED), content_words(b, _OWNED)
    if one_sided(words_a, words_b, similar, a, b) is not None:
        return "a word in one text only"
    if one_vs_many(words_a, words_b) is not None:
        return "one vs many"
    if swapped_roles(a, b) is not None:
        return "roles differ"
    return None


def synonym_candidates(a: str, b: str) -> set[str]:
    """The words ``conflict(a, b, similar)`` may ask ``similar`` about (to encode many pairs' words in one batch)."""
    return words_asked(content_words(a, _OWNED), content_words(b, _OWNED), a, b)


_OWNED = _NUMBER_WORDS | _NEGATIONS | _QUANTIFIERS | _QUESTION_WORDS  # words the guards above compare
