"""The copyright policy (`guard.copyright`): requests to reproduce a substantial part of an existing
work word for word — a song's lyrics, a verse or chorus, a long passage, pages or a chapter of a
book, a whole article, poem or script.

A request is read as a reproduction request when one of its clauses has all three of:
- a unit of a work (`lyrics`, `the words to`, `chorus`, `chapter 7`, `a long passage`, `the first
  three pages`, `the full text`, `the complete poem` …),
- a named work (a quoted title, `by <Name>`, `<Title> by <Name>`, `from the novel …`),
- a wish to see it (`generate`, `give me`, `type out`, `recite`, `what are the words to` …, or a bare
  `"<Title>" lyrics`),
and nothing that makes it the user's own writing (`write a song about`, `in the style of`, `my
lyrics`, the text pasted below) or a question about the work rather than its text (`what is … about`,
`meaning`, `summarise`, `chords`). English, French, Spanish, German, Italian and Portuguese.

The decision is lexical and explainable: its reason names the unit matched (`lyrics`, `book`,
`article`, `poem`, `script`), never the request's words. It does not know whether a work is still
protected: a tenant that wants public-domain texts recited approves those refusals in review (the
allow-list) or runs the layer with `action: log`. Answers are not compared against works (there
is no reference corpus in the gateway); the policy acts on the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import CopyrightGuard
from ..contracts import ChatMessage, GuardDecision
from .allowlist import COPYRIGHT_LAYER, latest_user_text

# Long pasted documents are not instructions: only clauses up to this length are read, and the
# text's head and tail (where people put the instruction).
MAX_CLAUSE = 400
HEAD_TAIL = 1500
# Sentence ends (not an initial such as "J. Smith"), a colon before a line break, line breaks.
_CLAUSES = re.compile(r"(?<=[.!?;])(?<!\b[A-Z]\.)\s+|:\s*\n|\n+")

_TITLE = (
    r"(?:\"[^\"\n]{2,80}\"|\u201c[^\u201d\n]{2,80}\u201d|\u201e[^\u201c\"\n]{2,80}[\u201c\"]"
    r"|\u00ab[^\u00bb\n]{2,80}\u00bb|(?<!\w)'[^'\n]{2,80}'(?!\w)|(?<!\w)\u2018[^\u2019\n]{2,80}\u2019(?!\w))"
)
_NAME = r"(?:[A-Z][\w'\u2019.-]+(?:\s+(?:[A-Z][\w'\u2019.-]+|de|da|van|von|di|le|la|del)){0,4})"
_CAPS = r"(?:(?:The|A|An)\s+)?[A-Z][\w'\u2019-]+(?:\s+(?:of|the|in|on|and|a|to|for|[A-Z][\w'\u2019-]+)){0,7}"

# A named work: a quoted title, "by <Name>" / "de|von|di|da <Name>", "<Title Case> by", or the kind of
# work named after from/of/to ("from the novel", "of the song").
_WORK = re.compile(
    rf"{_TITLE}"
    rf"|\b(?:by|de|d['\u2019]|von|di|da|do|del)\s*{_NAME}"
    rf"|(?:of|to|from|for)\s+{_CAPS}\s+by\b"
    r"|\b(?:lyrics|words|chapter \d+)\s+(?:of|to|for|from)\s+(?:\S+\s+){1,7}by\s+\S"
    r"|\b(?:the|this|that)\s+(?:song|album|track|single|novel|book|poem|film|movie|play|musical|article|"
    r"essay|memoir|textbook|story|screenplay)\s+(?:[\"\u201c\u201e\u00ab'\u2018]|[A-Z])"
    r"|\b(?:la chanson|le roman|la canción|la novela|das Lied|der Roman|la canzone|il romanzo|a música|o romance)\b",
    re.UNICODE,
)

_UNITS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE | re.UNICODE))
    for kind, pattern in (
        (
            "lyrics",
            r"\blyrics?\b|\bthe words (?:to|of)\b|\b(?:chorus|refrain|bridge|verses?)\b|\bsing\b"
            r"|\bparoles\b|\bletras?\b|\bsongtext|\bliedtext|\btesto (?:completo )?della canzone\b|\btesto\b",
        ),
        (
            "book",
            r"\b(?:long |whole |entire |full |opening )?(?:passages?|excerpts?|extracts?|prologue|epilogue)\b"
            r"|\bchapters?\b|\bpages?\s+\d|\b(?:first|last|opening|\d+)\s+(?:\w+\s+)?(?:pages|paragraphs|lines|words|chapters)\b"
            r"|\bchapitre|\bcap[ií]tulos?\b|\bcapitolo\b|\bkapitel\b|\bpasaje\b|\bextrait\b|\bauszug\b|\btrecho\b",
        ),
        (
            "text",
            r"\b(?:full|complete|entire|whole|exact)\s+(?:[\w'\u2019\"-]+\s+){0,3}(?:text|article|poem|book|song|script|screenplay|story|essay|"
            r"transcript|dialogue|speech)\b|\bword[- ]for[- ]word\b|\bverbatim\b|\bexactly as (?:published|written)\b"
            r"|\bin full\b|\btexte intégral\b|\btexto completo\b|\bpalabra por palabra\b|\bvollständigen? text\b"
            r"|\btesto completo\b|\bmot (?:à|pour) mot\b",
        ),
        ("script", r"\b(?:script|screenplay|dialogue|transcript)\b"),
    )
)

_WANT = re.compile(
    r"\b(?:generate|give|write|type|print|paste|copy|reproduce|recite|quote|show|send|provide|share|post|list|"
    r"output|display|transcribe|sing|tell me|what are|how does|how do(?:es)? .{0,40} go|need|want|get|"
    r"can (?:i|you) (?:see|have|read|get))\b"
    r"|^\s*(?:the\s+)?(?:full\s+|complete\s+|all\s+(?:the\s+)?)?lyrics\b"
    r"|\b(?:donne|écris|ecris|tape|recopie|copie|récite|cite|montre|genera|escribe|dame|dime|copia|recita|"
    r"muestra|gib|schreib|tippe|kopiere|zitiere|zeig|scrivi|dammi|ricopia|mostra|escreva|escreve|me d[aá]|"
    r"mostre|recite|copie)\w*",
    re.IGNORECASE | re.UNICODE,
)
# The user's own writing, original writing, or a question about the work rather than its words.
_NOT = re.compile(
    r"\b(?:about|meaning|mean|means|summar\w*|explain\w*|analy[sz]\w*|interpret\w*|themes?"
    r"|(?:a )?review (?:of|it|this|my)|who (?:wrote|sang|sings)"
    r"|when (?:was|did)|how many|chords?|key of|in the style of|inspired by|original|similar to|like the song"
    r"|recommend\w*|cite|citation|bibliograph\w*|my (?:own )?(?:song|lyrics|poem|essay|novel|book|story|chapter|"
    r"script|article|draft|verse|chorus)|(?:this|the following|below|above|pasted|attached) "
    r"(?:text|chapter|article|passage|lyrics|poem|excerpt|script)|"
    r"write (?:me |us )?(?:a|an|some|new|short|funny|simple) (?:\w+ ){0,3}(?:song|lyrics|verse|poem|chorus|rap|"
    r"story|passage|article|script|chapter)"
    r"|de quoi parle|trata|worum geht|riassum\w*|résum\w*|resum\w*|significado|signification|bedeutung"
    r"|une chanson|una canción|una canzone|uma (?:letra|música)|einen? (?:\w+ )?songtext über|originale?)\b",
    re.IGNORECASE | re.UNICODE,
)
_TITLES = re.compile(_TITLE, re.UNICODE)
_BARE_LYRICS = re.compile(rf"^\s*(?:{_TITLE}|{_CAPS})(?:\s+by\s+{_NAME})?\s+lyrics\s*[?.!]*\s*$", re.UNICODE)


@dataclass(frozen=True)
class CopyrightMatch:
    kind: str  # lyrics, book, text, script


def reproduction_request(text: str) -> CopyrightMatch | None:
    """The unit of a work `text` asks to see verbatim, or None."""
    if len(text) > 2 * HEAD_TAIL:
        text = text[:HEAD_TAIL] + "\n" + text[-HEAD_TAIL:]
    # A title's own words ("Man's Search for Meaning", "Sapiens: A Brief History") are neither
    # clause ends nor cues: each quoted title reads as one quoted word.
    text = _TITLES.sub('"Title"', text)
    for clause in _CLAUSES.split(text):
        if not clause or len(clause) > MAX_CLAUSE:
            continue
        if _BARE_LYRICS.match(clause):
            return CopyrightMatch("lyrics")
        if _NOT.search(clause) or not _WORK.search(clause) or not _WANT.search(clause):
            continue
        for kind, unit in _UNITS:
            if unit.search(clause):
                return CopyrightMatch(kind)
    return None


def copyright_decision(messages: list[ChatMessage], policy: CopyrightGuard) -> GuardDecision:
    """The copyright layer's decision on the latest user message (earlier turns were decided when
    they were sent)."""
    found = reproduction_request(latest_user_text(messages))
    if found is None:
        return GuardDecision(layer=COPYRIGHT_LAYER, action="pass")
    return GuardDecision(layer=COPYRIGHT_LAYER, action=policy.action, score=1.0, reason=f"reproduce {found.kind}")
