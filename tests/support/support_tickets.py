"""Support emails to turn into JSON, and the deterministic teacher that does it: the narrow task of
the distillation pipeline's end-to-end run (`tests/support/distill_pipeline.py`).

Each email names a customer, a product and an order number and says what went wrong, in one of
many phrasings (greetings, sentence orders, sign-offs), so that few are near-duplicates of each
other; the answer is `{"name", "product", "order", "issue"}` with the issue one of `ISSUES`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

SYSTEM = "Support email to JSON: name, product, order, issue (damaged|late|wrong_item|refund|not_working)."
FIRST = ["Ana", "Bo", "Carla", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Liam", "Maya"]
FIRST += ["Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Xena", "Yusuf", "Zoe"]
LAST = ["Lopez", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski", "Larsen"]
LAST += ["Moreau", "Novak", "Okafor", "Petrov", "Quiroga", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber"]
PRODUCTS = ["kettle", "router", "laptop", "phone", "camera", "printer", "blender", "drone", "monitor", "speaker"]
PRODUCTS += ["headphones", "toaster", "vacuum", "tablet", "smartwatch", "keyboard", "heater", "projector"]
ISSUES = {
    "damaged": [
        "arrived with a cracked casing",
        "came in a crushed box and is dented",
        "was broken when I opened the package",
        "has a shattered screen straight out of the box",
    ],
    "late": [
        "still has not arrived after three weeks",
        "was due last Monday and is nowhere to be seen",
        "shows no tracking update for ten days",
        "is very late and I need it for a trip",
    ],
    "wrong_item": [
        "turned out to be a different model than I ordered",
        "came in the wrong colour and size",
        "is not what I ordered at all",
        "was swapped for another customer's item",
    ],
    "refund": [
        "is fine but I changed my mind and want my money back",
        "needs to be returned for a refund",
        "was charged twice and I want a refund",
        "is no longer needed, please refund me",
    ],
    "not_working": [
        "stopped working after two days",
        "does not turn on any more",
        "keeps restarting on its own",
        "makes a loud noise and then shuts off",
    ],
}
GREETINGS = ["Hello,", "Hi there,", "Dear support,", "Good morning,", "Hey team,", "To whom it may concern,", ""]
SIGN_OFFS = ["Thanks,", "Best regards,", "Cheers,", "Kind regards,", "Sincerely,", "Many thanks,"]
BODIES = [
    "My {product} (order {order}) {problem}. Can you help?",
    "I bought a {product} with order number {order}, and it {problem}.",
    "Order {order}: the {product} {problem}. What are my options?",
    "I am writing about order {order}. The {product} I received {problem}.",
    "The {product} from my order {order} {problem}. Please advise.",
    "Regarding my {product}, order #{order}: it {problem}.",
    "Quick question about order {order}, the {product} {problem}. Please get back to me.",
    "This is about a {product} I ordered ({order}). It {problem}, which is frustrating.",
]
INTROS = ["I'm {name}.", "This is {name} writing.", "My name is {name}.", "", ""]


@dataclass(frozen=True)
class Ticket:
    email: str
    truth: dict[str, str]

    @property
    def answer(self) -> str:
        """The teacher's reply: the fields as compact JSON, in a fixed order."""
        return json.dumps(self.truth, separators=(", ", ": "))

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.email}]


def ticket(rng: random.Random) -> Ticket:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    product = rng.choice(PRODUCTS)
    order = f"{rng.choice('ABCDEFGHKMNPRSTW')}{rng.randint(100000, 999999)}"
    issue = rng.choice(list(ISSUES))
    body = rng.choice(BODIES).format(product=product, order=order, problem=rng.choice(ISSUES[issue]))
    intro = rng.choice(INTROS).format(name=name)
    opening = " ".join(part for part in (intro, body) if part)
    lines = [rng.choice(GREETINGS), opening, f"{rng.choice(SIGN_OFFS)}\n{name}"]
    email = "\n".join(line for line in lines if line)
    return Ticket(email, {"name": name, "product": product, "order": order, "issue": issue})


def tickets(count: int, seed: int = 0) -> list[Ticket]:
    """`count` tickets, none with the same email."""
    rng = random.Random(seed)
    found: dict[str, Ticket] = {}
    while len(found) < count:
        made = ticket(rng)
        found.setdefault(made.email, made)
    return list(found.values())


class Teacher:
    """The deterministic teacher: the answer of each email it was told about (as a fake provider's
    responder), and a refusal-free `{}` for anything else."""

    def __init__(self, known: list[Ticket]) -> None:
        self.answers = {t.email: t.answer for t in known}

    def answer(self, body: dict[str, Any]) -> str:
        question = str(body["messages"][-1]["content"])
        return self.answers.get(question, "{}")
