"""Where the local commands keep their store: one folder, whichever folder a command runs from.

A relative `storage_path` is taken from `$LLM_GATEWAY_DATA_DIR`, or else from the home folder, so
the shipped configuration's `.llm-gateway/gateway.db` is `~/.llm-gateway/gateway.db` for `serve`,
`review`, `batch`, `purge` and `guard-report` alike. An absolute `storage_path` is used as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import EXAMPLE_CONFIG, GatewayConfig, load_config

DATA_DIR_ENV = "LLM_GATEWAY_DATA_DIR"
IN_MEMORY = ":memory:"


def data_dir() -> Path:
    """The folder a relative `storage_path` is taken from."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser().absolute() if configured else Path.home()


def storage_path(configured: str) -> str:
    """`configured` resolved: `:memory:` and absolute paths as they are, a relative one in `data_dir()`."""
    if configured == IN_MEMORY:
        return configured
    path = Path(configured).expanduser()
    return str(path if path.is_absolute() else data_dir() / path)


def load_local_config(path: str | Path | None) -> GatewayConfig:
    """The configuration at `path` (without one, the shipped example), its `storage_path` resolved."""
    config = load_config(path or EXAMPLE_CONFIG)
    return config.model_copy(update={"storage_path": storage_path(config.storage_path)})


def existing_store(config: GatewayConfig) -> str:
    """The configuration's store, which `serve` must have written already (`ConfigError` if not)."""
    from ..errors import ConfigError

    path = config.storage_path
    if path != ":memory:" and not Path(path).exists():
        raise ConfigError(f"no store at {path}: has `llm-gateway serve` run with this configuration?")
    return path


def note_if_new(path: str) -> None:
    """Before a read-only command opens the store: one line on stderr when there is none yet (the
    command then reads an empty store, not one that `serve` wrote somewhere else)."""
    if path != IN_MEMORY and not Path(path).exists():
        print(
            f"llm-gateway: no store at {path} yet, starting an empty one "
            f"(a relative storage_path is taken from ${DATA_DIR_ENV}, else the home folder)",
            file=sys.stderr,
        )


def report_folder(out: Path, files: tuple[str, ...]) -> None:
    """A report's folder, made and found writable (and its `files` not folders) before a command
    sends, and pays for, anything."""
    from ..errors import ConfigError

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".llm-gateway-writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write the report there ({exc.strerror or exc})") from None
    taken = [name for name in files if (out / name).is_dir()]
    if taken:
        raise ConfigError(f"--out {out}: {', '.join(taken)} is a folder; the report is written there")
