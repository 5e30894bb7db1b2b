"""Fine-tune the student (`llm-gateway distill train DATA_DIR --out STUDENT_DIR`): LoRA (peft) on the
packaged SmolLM2-135M-Instruct, read from its GGUF by transformers, on a collection's
`train.jsonl`, with the chat template the endpoint serves and the loss on the answers only;
the validation loss after each epoch, stopping when it stops falling (the best epoch's adapter
kept); the adapter merged into the weights and saved as a checkpoint directory the endpoint's
torch engine serves (`python -m model_server --engine torch --model-path STUDENT_DIR`), with
`training.json` (losses, steps, time, settings)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORED = -100  # labels the loss leaves out: the prompt's tokens, the padding


@dataclass(frozen=True)
class Settings:
    epochs: int = 4
    learning_rate: float = 1e-3
    rank: int = 16
    batch: int = 8
    patience: int = 1  # epochs without a better validation loss before stopping
    max_tokens: int = 512  # an example's tokens, prompt and answer (longer ones are cut from the left)
    seed: int = 0
    threads: int | None = None
    device: str | None = None  # torch's device; None: cuda when torch sees a GPU, else cpu


def _conversation_problem(raw: str) -> str | None:
    """Why a split's line is not a conversation of text messages ending with the answer (None: it is)."""
    try:
        found = json.loads(raw)
    except ValueError as exc:
        return f"not JSON ({exc})"
    messages = found.get("messages") if isinstance(found, dict) else None
    if not isinstance(messages, list) or not messages:
        return "not a JSON object with a non-empty `messages` list"
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not all(isinstance(message.get(k), str) for k in ("role", "content")):
            return f"message {number} is not an object with a text `role` and `content`"
    if messages[-1]["role"] != "assistant":
        return "the last message is not the assistant's answer"
    return None if len(messages) > 1 else "no prompt before the answer"


def read_split(path: Path) -> list[list[dict[str, str]]]:
    """A split's conversations (each ends with the teacher's answer); ValueError naming the split
    and its first line that is not a conversation of text messages ending with the answer."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    conversations = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        problem = _conversation_problem(raw)
        if problem is not None:
            raise ValueError(f"{path.name} line {number}: {problem}")
        messages = json.loads(raw)["messages"]
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return conversations


def encode(tokenizer: Any, conversation: list[dict[str, str]], max_tokens: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the endpoint renders it, then the answer and the end of
    turn; the labels are the answer's tokens only."""
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(conversation[-1]["content"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    ids, labels = prompt_ids + answer_ids, [IGNORED] * len(prompt_ids) + answer_ids
    return ids[-max_tokens:], labels[-max_tokens:]


def _batches(
    examples: list[tuple[list[int], list[int]]], size: int, pad: int, device: Any = None
) -> list[tuple[Any, Any, Any]]:
    import torch

    found = []
    for at in range(0, len(examples), size):
        chunk = examples[at : at + size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in chunk], device=device)
        labels = torch.tensor([lab + [IGNORED] * (width - len(lab)) for _, lab in chunk], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk], device=device)
        found.append((ids, mask, labels))
    return found


def _epoch(student: Any, optimizer: Any, batches: list[tuple[Any, Any, Any]]) -> float:
    """One pass over the training batches; their mean loss."""
    student.train()
    total = 0.0
    for ids, mask, labels in batches:
        loss = student(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += float(loss.item())
    return total / len(batches)


def _mean_loss(student: Any, batches: list[tuple[Any, Any, Any]]) -> float:
    import torch

    student.eval()
    with torch.no_grad():
        held = [float(student(input_ids=i, attention_mask=m, labels=lab).loss.item()) for i, m, lab in batches]
    return sum(held) / len(held)


def save_checkpoint(model: Any, tokenizer: Any, out: Path) -> None:
    """The merged weights as a checkpoint directory (safetensors, config, tokenizer). The model was
    read from a GGUF file, which transformers marks as not to be saved again; its weights are
    plain float32 tensors by now, written here as they are (tied ones once)."""
    from safetensors.torch import save_model

    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(out))
    save_model(model, str(out / "model.safetensors"))
    tokenizer.save_pretrained(str(out))


def load_base() -> tuple[Any, Any]:
    """The packaged model and its tokenizer, as the endpoint's torch engine reads them (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model_server.engines.packaged import packaged_model_path

    path = packaged_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def train(data: Path, out: Path, settings: Settings = Settings()) -> dict[str, Any]:
    """Fine-tune on `data`'s train split, stop on its validation split, save the merged student in `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.monotonic()
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model, tokenizer = load_base()
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_set = [encode(tokenizer, c, settings.max_tokens) for c in read_split(data / "train.jsonl")]
    validation = [encode(tokenizer, c, settings.max_tokens) for c in read_split(data / "validation.jsonl")]
    if not train_set or not validation:
        raise ValueError("the collection needs train and validation examples")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=2 * settings.rank,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    student = get_peft_model(model, config)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    losses: list[dict[str, float]] = []
    best: tuple[float, dict[str, Any]] | None = None
    waited, steps = 0, 0
    held_out = _batches(validation, settings.batch, pad, device)
    for epoch in range(1, settings.epochs + 1):
        order = list(train_set)
        random.shuffle(order)
        batches = _batches(order, settings.batch, pad, device)
        train_loss = _epoch(student, optimizer, batches)
        steps += len(batches)
        validation_loss = _mean_loss(student, held_out)
        losses.append({"epoch": epoch, "train_loss": train_loss, "validation_loss": validation_loss})
        if best is None or validation_loss < best[0]:
            state = {k: v.detach().clone() for k, v in student.state_dict().items() if "lora_" in k}
            best, waited = (validation_loss, state), 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    assert best is not None
    student.load_state_dict(best[1], strict=False)  # the best epoch's adapter
    merged: Any = student.merge_and_unload().to("cpu")  # saved from host memory
    save_checkpoint(merged, tokenizer, out)
    found = {
        "base": "smollm2-135m-instruct (packaged GGUF)",
        "examples": {"train": len(train_set), "validation": len(validation)},
        "epochs": losses,
        "best_validation_loss": best[0],
        "steps": steps,
        "seconds": round(time.monotonic() - started, 1),
        "device": str(device),
        "settings": asdict(settings),
    }
    (out / "training.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    return found
