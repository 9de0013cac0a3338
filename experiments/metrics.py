"""Run outputs: ``metrics.jsonl`` (one JSON object a line) and ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.atomic import write_text_atomic

METRICS = "metrics.jsonl"
CONFIG = "config.json"


class MetricsLog:
    """Appends records; on resume, first drops records newer than the checkpoint so the file
    describes exactly one history (a crash after the last checkpoint leaves such lines)."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            write_text_atomic(self.path, "")
        elif self.path.exists():
            kept = [line for line in self.read(self.path) if line["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        with Path(path).open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def write_config(out: Path, config: dict[str, Any]) -> None:
    write_text_atomic(out / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
