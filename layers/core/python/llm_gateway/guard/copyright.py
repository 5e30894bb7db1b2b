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

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import CopyrightGuard
from ..contracts import ChatMessage, GuardDecision
from .allowlist import COPYRIGHT_LAYER, latest_user_text


class _Lazy:
    """A pattern compiled on its first use: every guard imports this module, and compiling all of
    them takes ~15 ms, which only tenants with the policy on should pay (once per process)."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._source = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(*self._source)
        return self._compiled

    def search(self, text: str) -> re.Match[str] | None:
        return self.compiled.search(text)

    def match(self, text: str) -> re.Match[str] | None:
        return self.compiled.match(text)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        return self.compiled.finditer(text)

    def split(self, text: str) -> list[str]:
        return self.compiled.split(text)

    def sub(self, replacement: str, text: str) -> str:
        return self.compiled.sub(replacement, text)


# Long pasted documents are not instructions: only clauses up to this length are read, and the
# text's head and tail (where people put the instruction).
MAX_CLAUSE = 400
HEAD_TAIL = 1500
WHOLE_REQUEST = 600
EDGE_CLAUSES = 3
# Sentence ends (not an initial such as "J. Smith"), a colon before a line break, line breaks.
_CLAUSES = _Lazy(r"(?<=[.!?;])(?<!\b[A-Z]\.)\s+|:\s*\n|\n+")


_TITLE = (
    r"(?:\"[^\"\n]{2,80}\"|\u201c[^\u201d\n]{2,80}\u201d|\u201d[^\u201d\n]{2,80}\u201d"
    r"|\u201e[^\u201c\"\n]{2,80}[\u201c\"]|\u00ab[^\u00bb\n]{2,80}\u00bb|\u300c[^\u300d\n]{1,80}\u300d"
    r"|(?<!\w)'(?:[^'\n]|'(?=\w)){2,80}'(?!\w)|(?<!\w)\u2018(?:[^\u2019\n]|\u2019(?=\w)){2,80}\u2019(?!\w))"
)
_TITLES = _Lazy(_TITLE, re.UNICODE)
_NAME = r"(?:[A-Z][\w'\u2019.&-]+(?:\s+(?:[A-Z][\w'\u2019.&-]+|de|da|van|von|di|le|la|del|&)){0,4})"
_CAPS = r"(?:(?:The|A|An)\s+)?[A-Z][\w'\u2019-]+(?:\s+(?:of|the|in|on|and|a|to|for|[A-Z][\w'\u2019-]+)){0,7}"
_WORK_KINDS = (
    r"(?:song|album|track|single|novel|book|poem|collection|film|movie|play|musical|series|show|episode|"
    r"podcast|article|essay|memoir|textbook|cookbook|story|screenplay|cartoon|special|newsletter|column|"
    r"magazine|issue)"
)
_PUBLICATION = (
    r"(?:Times|Post|Herald|Gazette|Daily|Weekly|Review|Journal|Magazine|Quarterly|Beacon|Ledger|Tribune|"
    r"Chronicle|Courier|Observer|Rundschau|Zeitung|Gazeta|Gaceta|Quotidien|Corriere|Bulletin|Standard|"
    r"Express|Monthly|Sentinel|Dispatch)"
)

# A named work: a quoted title; a name after by/de/von/di/da; "<Title Case> by"; a work named by
# its kind ("the novel Greywater", "Dana Whitlock's novel"); a publication ("the Harbor Gazette").
_WORK = _Lazy(
    rf"{_TITLE}"
    rf"|\b(?:by|de|d['\u2019]|von|van|di|da|do|del|dei|dos|das|zespo\u0142u)\s*{_NAME}"
    rf"|(?:of|to|from|for)\s+{_CAPS}\s+by\b"
    r"|\b(?:lyrics|words|chorus|verse|chapter \d+)\s+(?:of|to|for|from|in)\s+(?:\S+\s+){1,7}(?:by|from)\s+\S"
    rf"|\b(?:the|this|that|a)\s+(?:[\w'-]+\s+){{0,3}}{_WORK_KINDS},?\s+(?:[\"\u201c\u201e\u00ab'\u2018]|[A-Z0-9])"
    r"|\b(?:the\s+)?(?:novelist|author|poet|singer|songwriter|band|comedian|columnist|journalist|writer|rapper|"
    r"playwright)\s+[A-Z]"
    r"|[A-Z][\w&-]*(?:\s+(?:&\s+)?[A-Z][\w-]*){0,3}\s+(?:magazine|newsletter|podcast|blog|radio)\b"
    r"|\b(?:scene|episode|season|act)\s+(?:\d+\s+)?(?:of|in|from)\s+(?:the\s+)?[A-Z]"
    rf"|[A-Z][\w-]+['\u2019]s\s+(?:\d{{4}}\s+|new\s+|latest\s+|debut\s+)?{_WORK_KINDS}\b"
    rf"|\b[A-Z][\w-]+(?:\s+[A-Z][\w-]+){{0,3}}\s+{_PUBLICATION}\b"
    r"|\b(?:Daily|Weekly|Sunday|Evening|Morning)\s+[A-Z]\w+"
    r"|\b[A-Z][\w-]+(?:\s+[A-Z][\w-]+){1,3}\s+(?:review|column|piece|report|article|interview|feature|"
    r"cover story|editorial)\b"
    r"|\b[A-Z][\w'\u2019]+(?:\s+[A-Z][\w'\u2019]+){0,5}\s+[-\u2013]\s+[A-Z][\w'\u2019]+"
    r"|(?i:\b(?:la chanson|le roman|le po\u00e8me|le film|la canci\u00f3n|la novela|el poema|la pel\u00edcula|"
    r"das Lied|der Roman|das Gedicht|der Film|la canzone|il romanzo|la poesia|il film|a m\u00fasica|a can\u00e7\u00e3o|"
    r"o romance|o poema|o filme|het lied|de roman|piosenki)\b)",
    re.UNICODE,
)

_UNITS: tuple[tuple[str, _Lazy], ...] = tuple(
    (kind, _Lazy(pattern, re.IGNORECASE | re.UNICODE))
    for kind, pattern in (
        (
            "text",
            r"\b(?:whole of|whole thing|every line|word[- ]for[- ]word|verbatim|exactly as|all of it)\b"
            r"|\b(?:full|complete|entire|whole)\s+\"Title\"",
        ),
        (
            "lyrics",
            r"\blyrics?\b|\bthe words (?:to|of|for)\b|\b(?:chorus|refrain|hook|bridge|outro|verses?|stanzas?|"
            r"couplet|theme song|(?:rest|whole|end) of the song|songte(?:kst|xt)|liedtext|l\u00e5ttext|"
            r"tekst piosenki|paroles|letras?|estribillo|estrofas?|coro|refr\u00e3o|refrao|estrofes?|strophen?|"
            r"ritornello|strofa|strofe|refrein|testo)\b"
            r"|\u6b4c\u8a5e|\u6b4c\u8bcd",
        ),
        ("poem", r"\b(?:poems?|po\u00e8me|poema|gedicht|poesia|dikt|wiersz)\b|\u8a69"),
        (
            "script",
            r"\b(?:script|screenplay|scenes?|dialogues?|monologue|speech|transcript|stand-up|set|routine|"
            r"(?:\w+['\u2019]s )?lines|guion|gui\u00f3n|roteiro|escena|cena|sc\u00e8ne|szene|scena|dialoghi|"
            r"di\u00e1logos|dialoge|copione|sceneggiatura|drehbuch)\b",
        ),
        (
            "article",
            r"\b(?:article|column|editorial|feature|interview|newsletter|post|cover story|obituary|long-read|"
            r"report|piece|art\u00edculo|articulo|artikel|articolo|artigo|mat\u00e9ria|materia|nota)\b",
        ),
        (
            "book",
            r"\b(?:passages?|excerpts?|extracts?|chapters?|pages?|prologue|epilogue|foreword|preface|afterword|"
            r"introduction|opening|ending|section|paragraphs?|(?:book )?text|chapitres?|cap\u00edtulos?|capitulo|"
            r"capitolo|kapitel|kapitlet|hoofdstuk|rozdzia\u0142|pasaje|fragmento|extrait|auszug|brano|trecho|"
            r"p\u00e1ginas|seiten|pagine|pagina['\u2019]s|sidor|recipes|booklet|short story)\b"
            r"|\b(?:first|last|opening|final)\s+(?:\d+|\w+)\s+(?:words|lines|pages|paragraphs|chapters)\b",
        ),
    )
)

# The whole of it, or its exact words.
_WHOLE = _Lazy(
    r"\b(?:full|complete|entire|whole|all of (?:it|them)|every (?:line|word|paragraph|verse|page|stanza)|"
    r"all (?:the )?(?:lines|words|verses|stanzas|lyrics|pages)|the rest of|word[- ]for[- ]word|verbatim|"
    r"exactly as (?:\w+ ){0,3}(?:printed|published|written|sung|sings|in the)|exact (?:wording|words|text)|"
    r"the actual (?:\w+ )?(?:text|words)|in full|as published|as printed|original line breaks|"
    r"en entier|int\u00e9grale?|compl[e\u00e8]te?|mot pour mot|completa?|enter[oa]|toda|palabra por palabra|"
    r"\u00edntegro|vollst\u00e4ndig\w*|komplett\w*|ganz\w*|w\u00f6rtlich|inter[oa]|tutt[oa]|parola per parola|"
    r"inteir[oa]|palavra por palavra|na \u00edntegra|volledige|hele|hela|ca\u0142y|ca\u0142\u0105)\b"
    r"|\u5168\u90e8|\u5168\u6587",
    re.IGNORECASE | re.UNICODE,
)

_VERBATIM = _Lazy(
    r"\b(?:word[- ]for[- ]word|verbatim|exactly as (?:\w+ ){0,3}(?:printed|published|written|sung|sings|in the)|"
    r"mot pour mot|palabra por palabra|parola per parola|palavra por palavra|w\u00f6rtlich)\b",
    re.IGNORECASE | re.UNICODE,
)

_WANT = _Lazy(
    r"\b(?:generate|give|write|type|print|paste|copy|copy-paste|reproduce|recreate|recite|show|send|provide|"
    r"share|post (?:the|it|all|me)|output|display|transcribe|sing|tell me|drop|fill|continue|finish|"
    r"read (?:me|out|it to me)|dump|need|want|"
    r"quote (?:the|me|it|all|every|from)|"
    r"what(?:['\u2019]s| is| are| r|['\u2019]re) the|what does|what comes after|what is sung|how do(?:es)? .{0,60} go|"
    r"can (?:i|you|u) (?:see|have|read|get)|i(?:['\u2019]d| would) like|"
    r"donne|\u00e9cri\w*|ecri\w*|tape|recopie|copie|r\u00e9cite|recite|cite|montre|envoie|quelles? sont|quel est|"
    r"genera|escrib\w*|dame|dime|c[o\u00f3]pia\w*|copi|recit\w*|muestra|p[a\u00e1]same|cu[a\u00e1]l es|necesito|quiero|"
    r"gib|schreib\w*|tipp\w*|abtippen|kopier\w*|zitier\w*|zeig\w*|wie geht|wiedergeben|brauche|m\u00f6chte|"
    r"scriv\w*|dammi|ricopia|mostra|trascriv\w*|qual \u00e8|qual \u00e9|puoi|escrev\w*|me d[a\u00e1]|mostre|"
    r"transcrev\w*|me passa|digit\w*|quero|geef|typ|schrijf|skriv|napisz|podaj)\b"
    r"|\u66f8\u3044\u3066|\u6559\u3048\u3066|\u5199|\u7ed9\u6211",
    re.IGNORECASE | re.UNICODE,
)

# Original writing, the user's own or pasted text, or a question about a work rather than its words.
_NOT = _Lazy(
    r"\b(?:(?:write|compose|create|make|draft)\s+(?:me\s+|us\s+)?(?:a|an|some|my|our|new|short|funny|simple|"
    r"original|little|cute|catchy|two|three|four)\b"
    r"|in the style of|inspired by|new words|my own|own version|parody|original (?:song|lyrics|poem|story|"
    r"jingle|tune|piece)|(?:an|my|our|some) original"
    r"|mean|means|meaning|what(?:['\u2019]s| is| was)\s.{0,80}\babout|is (?:it |this )?about|summari[sz]\w*|"
    r"(?:a|short|brief|quick|one-line) summary|sum up|synopsis|tl;?dr|key points|main (?:idea|argument|points?)|"
    r"explain\w*|analy[sz]\w*|interpret\w*|themes?(?!\s+(?:song|tune|music))|symbolism|rhyme scheme|structure|"
    r"pattern|describe|why do you think|in which|which scene|where in|at what point|tell me the context|suggest\w*|"
    r"worth (?:watching|reading|listening|buying)|style of|"
    r"how (?:to|can i|do i) use|topics|outline|table of contents|"
    r"(?:a|your|write a|short|quick) review\b|review (?:it|this|my)|opinion|"
    r"don['\u2019]?t (?:quote|copy|reproduce|paste|write)|without (?:quoting|copying|reproducing)|"
    r"how (?:do|should|can) i (?:cite|reference)|reference (?:a|an|the)|in (?:MLA|APA|Harvard|Chicago)|"
    r"translat\w+ (?:this|the following|it|my|these)|traduc\w* (?:esto|este|esta|ce|cet|cette)|rewrite|rephrase|"
    r"paraphrase|proofread|fix the grammar|simplify|"
    r"python|javascript|code|script to|function|dict|array|json\w*|regex|sql|postgres\w*|"
    r"i wrote|que escrib\u00ed|que j['\u2019]ai \u00e9crit|que escrevi|che ho scritto|das ich geschrieben|"
    r"(?:este|esta|ce|cette|questo|questa|dieses|diesen|esse|essa) (?:poema|po\u00e8me|texto|texte|testo|"
    r"canci\u00f3n|chanson|canzone|gedicht|text|lied|can\u00e7\u00e3o|poesia)"
    r"|who (?:wrote|sang|sings|directed|is the author)|when (?:was|did)|came out|release date|how many|"
    r"how long|(?<!with the )(?<!with )chords?|key of|tempo|bpm|instruments?|recommend\w*|similar|"
    r"citation|cite it|bibliograph\w*|is it legal|legally|fair use|licen[cs]\w*|permission"
    r"|my (?:own )?(?:song|lyrics|poem|essay|novel|book(?! club)|story|chapter|script|article|draft|verse|chorus|"
    r"speech|post|blog|notes|meeting)"
    r"|(?:this|the following|below|above|pasted|attached|here['\u2019]?s|here is) (?:\w+ )?(?:text|chapter|"
    r"article|passage|lyrics|poem|excerpt|script|transcript|paragraph|email|document|draft)"
    r"|de quoi parle|r\u00e9sum\w*|signification|qui a \u00e9crit|de qu\u00e9 trata|resum\w*|significado|"
    r"qui\u00e9n escribi\u00f3|worum geht|zusammenf\w*|fasse|bedeutung|wer hat|di cosa parla|riassum\w*|"
    r"significato|chi ha scritto|sobre o que|quem escreveu|une chanson|una canci\u00f3n|una canzone|"
    r"uma (?:letra|m\u00fasica|can\u00e7\u00e3o)|einen? (?:\w+ )?(?:songtext|lied|gedicht) \u00fcber|w\u0142asny)\b",
    re.IGNORECASE | re.UNICODE,
)
# A cue right after a negation does not count: "write it out in full, not a summary".
_NEGATED = _Lazy(r"(?:\bnot|\bno|instead of|rather than|without|nicht|pas|no es)\s+(?:\w+\s+)?$", re.IGNORECASE)
_BARE_LYRICS = _Lazy(
    rf"^\s*(?:lyrics\s*:?\s*)?(?:{_TITLE}|{_CAPS})(?:\s+(?:by|[-\u2013])\s+{_NAME})?\s+lyrics\s*[?.!]*\s*$"
    r"|^\s*(?:the\s+)?(?:full\s+|complete\s+|all\s+(?:the\s+)?)?(?:lyrics|songtext|paroles|letra|testo)\b"
    r".{0,80}\b(?:by|von|de|di|da|do)\s+\w",
    re.UNICODE | re.IGNORECASE,
)


# What makes a wish a request: it opens its sentence (or follows a comma), the clause asks (ends
# with "?"), or a request marker comes just before it. A pasted document's "the band brought the
# lyrics" is none of these.
_OPENING_WORDS = 4
_SENTENCE_STARTS = _Lazy(r"[.!?;\u2026]+\s+")
_ASKING = _Lazy(
    r"(?:please|pls|plz|can (?:you|u|i)|could you|would you|will you|i need|i want|i['\u2019]d like|just|now|kindly|"
    r"kannst du|k\u00f6nntest du|bitte|puoi|potresti|peux-tu|tu peux|pourrais-tu|puedes|podr\u00edas|pode|"
    r"voc\u00ea pode|kun je|kan du|mo\u017cesz)\W+(?:\w+\W+){0,2}$",
    re.IGNORECASE | re.UNICODE,
)


@dataclass(frozen=True)
class CopyrightMatch:
    kind: str  # lyrics, poem, script, article, book


def _declined(clause: str) -> bool:
    """Whether the clause has a cue that makes it original writing or a question about a work."""
    return any(not _NEGATED.search(clause[: cue.start()]) for cue in _NOT.finditer(clause))


def _wants(clause: str) -> bool:
    """Whether the clause asks for a work's words: it asks for them verbatim, or a wish or "the whole
    of it" is put as a request (see `_ASKING`)."""
    if _VERBATIM.search(clause):
        return True
    asks = clause.rstrip().endswith(("?", "\uff1f"))
    for cue in [*_WANT.finditer(clause), *_WHOLE.finditer(clause)]:
        before = _SENTENCE_STARTS.split(clause[: cue.start()])[-1]  # within its own sentence
        opens = len(before.split()) <= _OPENING_WORDS or before.rstrip().endswith((",", ";", ":", "-", "\u2013"))
        if asks or opens or _ASKING.search(before):
            return True
    return False


def _unit(clause: str) -> str | None:
    return next((kind for kind, unit in _UNITS if unit.search(clause)), None)


def reproduction_request(text: str) -> CopyrightMatch | None:
    """The unit of a work `text` asks to see verbatim, or None."""
    if len(text) > 2 * HEAD_TAIL:
        text = text[:HEAD_TAIL] + "\n" + text[-HEAD_TAIL:]
    # A title's own words ("Man's Search for Meaning", "Sapiens: A Brief History") are neither
    # clause ends nor cues: each quoted title reads as one quoted word.
    text = _TITLES.sub('"Title"', text)
    clauses = [c for c in _CLAUSES.split(text) if c and len(c) <= MAX_CLAUSE]
    if len(clauses) > 2 * EDGE_CLAUSES:
        # A pasted document: the request is its first or last sentences, and the document's own
        # sentences are not requests. An instruction that summarises or reworks it decides.
        if _declined(clauses[0]) or _declined(clauses[-1]):
            return None
        clauses = clauses[:EDGE_CLAUSES] + clauses[-EDGE_CLAUSES:]
    # Each clause alone and with the next: "In 'Tidewater', what comes after the bridge? Write it out."
    windows = clauses + [f"{a} {b}" for a, b in itertools.pairwise(clauses)]
    if len(clauses) > 2 and sum(map(len, clauses)) <= WHOLE_REQUEST:  # a short request read whole, too
        windows.append(" ".join(clauses))
    for window in windows:
        if _declined(window):
            continue
        if _BARE_LYRICS.match(window):
            return CopyrightMatch("lyrics")
        kind = _unit(window)
        if kind is not None and _WORK.search(window) and _wants(window):
            return CopyrightMatch(kind)
    return None


def copyright_decision(messages: list[ChatMessage], policy: CopyrightGuard) -> GuardDecision:
    """The copyright layer's decision on the latest user message (earlier turns were decided when
    they were sent)."""
    found = reproduction_request(latest_user_text(messages))
    if found is None:
        return GuardDecision(layer=COPYRIGHT_LAYER, action="pass")
    return GuardDecision(layer=COPYRIGHT_LAYER, action=policy.action, score=1.0, reason=f"reproduce {found.kind}")
