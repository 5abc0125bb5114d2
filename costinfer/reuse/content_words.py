"""The words a text is about, and the semantic tier's guards built on them.

Embeddings average a text's words, so one word present in one text only barely moves the cosine: "what do arctic
foxes eat" sits at 0.95 from "what do foxes eat", "who is your mentor" at 0.96 from "who are you a mentor to". These
guards read the words themselves (``guards.conflict`` runs them after its own):

- **a word in one text only**: a content word (noun, verb or adjective, lemmatized by lemminflect; adverbs only where
  they change what is asked, "abroad") whose lemma the other text lacks vetoes, unless a word of the other text that
  this one lacks is near it by the embedding model itself (``WORD_SYNONYM``: "purchase" for "buy"). This is the
  modifier added ("arctic"), the content word swapped for another of its kind ("statistics" / "design"), and the
  narrower question ("the song" / "the song in this video").
- **one vs many**: the same noun singular in one text and plural in the other ("a good book" / "good books").
- **roles**: different people ("I am late" is not "they are late"), a word governed by the
  opposite preposition ("from Boston to Denver" / "from Denver to Boston"), or a who/what question ending in a
  preposition the other text lacks ("who is your mentor" / "who are you a mentor to").

Function words are not content: pronouns, determiners, prepositions, auxiliaries, request frames ("can you tell me",
"I want to", "help me find"), light verbs ("make a payment", "take steps") and fillers ("actually"). Numbers,
negations, quantifiers and question words have guards of their own in ``guards.py``. Each rule and list here was set
on STS-B train+dev and banking77 (docs/semantic.md says which errors each removes and what recall it costs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# Word-level cosine (all-MiniLM-L6-v2) from which a word present in one text only counts as a synonym of one in the
# other: buy/purchase 0.87, big/large 0.81, incorrect/wrong 0.77 pass; words of the same kind that mean different
# things stay below (red/blue 0.73, monday/friday 0.71, dog/cat 0.66, euro/dollar 0.62, statistics/design 0.30).
WORD_SYNONYM = 0.76

_TOKEN = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)

# "I" and "you" are one person here: users ask "how do you get a card" for "how do I get a card"
_PERSONS: dict[str, str] = {
    **dict.fromkeys(["i", "me", "my", "mine", "myself"], "I/you"),
    **dict.fromkeys(["you", "your", "yours", "yourself", "yourselves"], "I/you"),
    **dict.fromkeys(["we", "us", "our", "ours", "ourselves"], "we"),
    **dict.fromkeys(["he", "him", "his", "himself"], "he"),
    **dict.fromkeys(["she", "her", "hers", "herself"], "she"),
    **dict.fromkeys(["they", "them", "their", "theirs", "themselves"], "they"),
}
# Prepositions that give a word the opposite role: "from Boston to Denver" / "from Denver to Boston". Others differ
# in wording more often than in meaning ("a limit on top-ups", "a limit for top-ups").
_SAME_ROLE = {"into": "to", "onto": "to", "toward": "to", "towards": "to", "beneath": "under"}
_OPPOSITE = {
    "from": "to",
    "to": "from",
    "before": "after",
    "after": "before",
    "over": "under",
    "under": "over",
    "above": "below",
    "below": "above",
    "for": "against",
    "against": "for",
}
_STRANDED = frozenset(["to", "for", "from", "with", "by", "of", "about", "at", "on", "in"])
_FILLERS = "a an the this that these those my your his her its our their some any"
_NOUN_PHRASE_FILLERS = frozenset(_FILLERS.split())

_FUNCTION_WORDS = """
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves one ones someone somebody something anyone anybody anything
    everyone everybody everything whatever whoever whichever
    a an the this that these those there here such other another same own
    of to in on at by for with from into onto about as over under up down out off through between after before
    during since until till via per than like within across around against along among upon toward towards onto
    behind beside besides near above below beyond inside outside throughout regarding concerning including despite
    and or but if so because while though although whether then also too either else instead
    be am is are was were been being do does did done doing have has had having
    can could may might must shall should will would ought
    please pls plz kindly thank thanks thx hi hello hey dear ok okay yes yeah sir madam
    want wanted wants wanting need needed needs like liked likes wish wonder wondering know knew tell told let
    get gets got getting gotten go going gonna wanna able possible possibly
    think thought seem seems seemed see saw show explain assist mean means happen happened happens located
    just really actually exactly currently basically simply even very quite still already yet anyway somehow
    now today recently lately pretty sure well anyway anyways help using find
    maybe perhaps probably certainly definitely literally specifically particularly especially generally usually
    anymore ever much lot lots bit thing things stuff way ways step steps process procedure fact
    make makes made making take takes took taking taken give gives gave given giving use uses used
    keep keeps kept keeping come comes came coming cause causes caused put puts receive receives received
    s t d ll m re ve
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())


# Adverbs are not content words ("recently", "exactly"), except those that change what is asked: "can I use my card
# abroad" is not "can I use my card"
_ADVERBS_KEPT = "abroad overseas online offline internationally domestically automatically manually instantly"
_MEANINGFUL_ADVERBS = frozenset(_ADVERBS_KEPT.split())


@dataclass(frozen=True)
class Word:
    text: str
    lemmas: frozenset[str]
    noun: bool  # has a noun reading
    plural: bool  # a plural noun: its surface form is none of its noun lemmas, and it is not read as a verb


@lru_cache(maxsize=65536)
def _lexicon(word: str) -> dict[str, tuple[str, ...]]:
    """Part of speech -> lemmas of a lower-cased word, by lemminflect's lexicon ({} for a word it does not know)."""
    from lemminflect import getAllLemmas

    return dict(getAllLemmas(word))


@lru_cache(maxsize=65536)
def _readings(word: str) -> tuple[frozenset[str], bool, bool, bool]:
    """(lemmas, has a noun reading, is a plural noun form, is a content word) of a lower-cased word. A word the
    lexicon does not know (a name, a product, a typo) is content."""
    readings = _lexicon(word)
    if not readings:
        return frozenset([word]), True, False, True
    lemmas = frozenset(lemma.lower() for forms in readings.values() for lemma in forms)
    nouns = readings.get("NOUN", ()) + readings.get("PROPN", ())
    plural = bool(nouns) and word not in nouns  # "runs" may be a verb too: content_words reads the word before
    adverb_only = set(readings) == {"ADV"} and word not in _MEANINGFUL_ADVERBS
    return lemmas | {word}, bool(nouns), plural, not adverb_only


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for token in _TOKEN.findall(text.casefold().replace("in order to", "to")):
        token = token.replace("’", "'").replace("n't", "nt")  # "doesn't" is "doesnt", as the negation guard reads it
        for part in token.split("'"):  # "what's" -> what, s; "o'connor" -> o, connor
            out.extend(p for p in part.split("-") if p)
    return tuple(out)


_DETERMINERS = frozenset(["a", "an", "the"])
_OPENERS = "the these those my your our their his her its some many few several all any no more most other of about for"
_PLURAL_OPENERS = frozenset([*_OPENERS.split(), "with", "two", "three", "multiple"])


def _opens_noun_phrase(previous: Sequence[str]) -> bool:
    """Whether the word before can open a plural noun phrase: a determiner, or an adjective ("good books")."""
    if not previous:
        return False
    word = previous[0]
    return word in _PLURAL_OPENERS or "ADJ" in _lexicon(word)


@lru_cache(maxsize=4096)  # a text meets several candidates: read it once
def content_words(text: str, excluded: frozenset[str] = frozenset()) -> tuple[Word, ...]:
    """The content words of ``text`` in order: not function words, not in ``excluded`` (words other guards own).
    A request verb used as a noun is content: "what do I need to verify" is not "what is the need to verify"."""
    words: list[Word] = []
    tokens = _tokens(text)
    for position, token in enumerate(tokens):
        as_noun = position > 0 and tokens[position - 1] in _DETERMINERS and _readings(token)[1]
        if (token in FUNCTION_WORDS and not as_noun) or token in excluded or len(token) < 2:
            continue
        lemmas, noun, plural, content = _readings(token)
        if plural and "VERB" in _lexicon(token) and not _opens_noun_phrase(tokens[position - 1 : position]):
            plural = False  # "a panda slides": after a noun, a verb; "good books", "the cards": a plural
        if content and (as_noun or not lemmas & FUNCTION_WORDS):  # "finding" is "find", "ways" is "way"
            words.append(Word(token, lemmas, noun, plural))
    return tuple(words)


def persons(text: str) -> set[str]:
    """Who ``text`` is about, by its pronouns ("I/you", "we", "he", "she", "they")."""
    return {_PERSONS[t] for t in _tokens(text) if t in _PERSONS}


def _roles(text: str) -> dict[str, str]:
    """Word -> the preposition before it ("from Boston": boston -> from), for the prepositions that have opposites."""
    tokens = _tokens(text)
    roles: dict[str, str] = {}
    for i, token in enumerate(tokens):
        role = _SAME_ROLE.get(token, token)
        if role not in _OPPOSITE:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j] in _NOUN_PHRASE_FILLERS:
            j += 1
        if j < len(tokens) and tokens[j] not in FUNCTION_WORDS:
            roles.setdefault(tokens[j], role)
    return roles


def _stranded(text: str) -> str | None:
    """A preposition that ends a who/what question ("who are you a mentor to?"): it asks about the other side."""
    tokens = _tokens(text)
    if not tokens or tokens[-1] not in _STRANDED or not {"who", "whom", "what", "which"} & set(tokens):
        return None
    return tokens[-1]


Similar = Callable[[str, str], float]


class WordSimilarity:
    """Cosine of two words by the embedding model itself, each word encoded once per instance.

    ``encode`` maps texts to unit vectors (``Embedder.encode``). Only pairs that reach the threshold and pass every
    other guard ask, and only for words present in one text each, so few words are ever encoded; ``prefetch``
    encodes many at once where the caller knows them ahead."""

    def __init__(self, encode: Callable[[list[str]], Any]) -> None:
        self._encode = encode
        self._vectors: dict[str, Any] = {}

    def prefetch(self, words: Iterable[str]) -> None:
        missing = list(dict.fromkeys(w for w in words if w not in self._vectors))
        if missing:
            self._vectors.update(zip(missing, self._encode(missing), strict=True))

    def __call__(self, x: str, y: str) -> float:
        self.prefetch((x, y))
        return float(self._vectors[x] @ self._vectors[y])


def _unmatched(a: Sequence[Word], b: Sequence[Word], text_a: str, text_b: str) -> list[tuple[str, set[str]]]:
    """Each content word of one text whose lemma the other lacks, with the words of the other text that this one
    lacks: its possible synonyms ("obtaining" / "getting", though "get" is no content word)."""
    lemmas_a = frozenset().union(*(w.lemmas for w in a)) if a else frozenset()
    lemmas_b = frozenset().union(*(w.lemmas for w in b)) if b else frozenset()
    only_a = [w for w in a if not (w.lemmas & lemmas_b)]
    only_b = [w for w in b if not (w.lemmas & lemmas_a)]
    if not only_a and not only_b:
        return []
    tokens_a, tokens_b = set(_tokens(text_a)), set(_tokens(text_b))
    out: list[tuple[str, set[str]]] = []
    for mine, theirs, other_tokens in ((only_a, only_b, tokens_b - tokens_a), (only_b, only_a, tokens_a - tokens_b)):
        others = {w.text for w in theirs} | {t for t in other_tokens if len(t) > 2 and t not in _PERSONS}
        out.extend((word.text, others) for word in mine)
    return out


def one_sided(a: Sequence[Word], b: Sequence[Word], similar: Similar | None, text_a: str, text_b: str) -> str | None:
    """A content word of one text that the other lacks and has no near-synonym for, or None."""
    for word, others in _unmatched(a, b, text_a, text_b):
        if similar is None or not any(similar(word, other) >= WORD_SYNONYM for other in others):
            return word
    return None


def words_asked(a: Sequence[Word], b: Sequence[Word], text_a: str, text_b: str) -> set[str]:
    """Every word ``one_sided`` may ask the word similarity about, to encode them all in one batch beforehand."""
    return {w for word, others in _unmatched(a, b, text_a, text_b) for w in (word, *others)}


def one_vs_many(a: Sequence[Word], b: Sequence[Word]) -> str | None:
    """A noun singular in one text and plural in the other, or None."""
    for x in a:
        if not x.noun:
            continue
        for y in b:
            if y.noun and x.plural != y.plural and x.lemmas & y.lemmas and x.text != y.text:
                return x.text if x.plural else y.text
    return None


def swapped_roles(text_a: str, text_b: str) -> str | None:
    """Why the same words stand in another relation, or None: other people ("you are" / "I am"), a word governed
    by another preposition ("from Boston to Denver" / "from Denver to Boston"), or a question turned to the other
    side ("who is your mentor" / "who are you a mentor to")."""
    persons_a, persons_b = persons(text_a), persons(text_b)
    if persons_a and persons_b and not persons_a & persons_b:
        return f"{', '.join(sorted(persons_a))} / {', '.join(sorted(persons_b))}"
    roles_a, roles_b = _roles(text_a), _roles(text_b)
    for word in sorted(roles_a.keys() & roles_b.keys()):
        if _OPPOSITE[roles_a[word]] == roles_b[word]:
            return f"'{roles_a[word]} {word}' / '{roles_b[word]} {word}'"
    for this, other in ((text_a, text_b), (text_b, text_a)):
        stranded = _stranded(this)
        if stranded and stranded not in _tokens(other):  # "in what countries" asks what "what countries ... in" does
            return f"ends with '{stranded}'"
    return None
