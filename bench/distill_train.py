"""The fine-tuning step on this machine's CPU: a narrow task, the student against the base model.

Writes a collection of synthetic support tickets (a name, a product and an order number to turn
into JSON; the teacher's answer is the exact JSON), 240 for training, 30 for validation and 30
held out, fine-tunes the packaged SmolLM2-135M on it (`distill.train.train`), then asks the
student and the packaged model each held-out ticket (greedy) and counts the answers equal to the
teacher's. Prints the epochs' losses, the training time and both counts.

    .venv/bin/python bench/distill_train.py [--epochs 2] [--out /tmp/distill-bench]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from llm_gateway.distill.train import Settings, load_base, train

NAMES = ["Ana Lopez", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Fox", "Flo Green", "Gus Hill", "Ivy Ito", "Jo Kim", "Lu Ma"]
PRODUCTS = ["router", "kettle", "laptop", "phone", "camera", "printer", "blender", "drone"]
SYSTEM = "Extract the customer's name, product and order number from the ticket as JSON."


def ticket(rng: random.Random) -> dict[str, Any]:
    name, product, order = rng.choice(NAMES), rng.choice(PRODUCTS), rng.randint(10000, 99999)
    question = f"Hello, this is {name}. My {product} (order {order}) arrived broken. Please help."
    answer = json.dumps({"name": name, "product": product, "order": str(order)})
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return {"messages": [*messages, {"role": "assistant", "content": answer}]}


def exact(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> int:
    import torch

    equal = 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        text = tokenizer.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        equal += text == row["messages"][-1]["content"]
    return equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/distill-bench"))  # noqa: S108 - scratch
    args = parser.parse_args()
    rng = random.Random(0)
    rows = [ticket(rng) for _ in range(300)]
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:240]), ("validation", rows[240:270]), ("test", rows[270:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    started = time.monotonic()
    found = train(data, args.out / "student", Settings(epochs=args.epochs, threads=2))
    print(f"epochs: {json.dumps(found['epochs'])}; training {found['seconds']} s")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.out / "student"))
    student = AutoModelForCausalLM.from_pretrained(str(args.out / "student"))
    base, _ = load_base()
    held_out = rows[270:]
    print(
        f"| model | answers equal to the teacher's |\n|---|---|\n"
        f"| student | {exact(student, tokenizer, held_out)} / {len(held_out)} |\n"
        f"| packaged base | {exact(base, tokenizer, held_out)} / {len(held_out)} |\n"
        f"total {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
