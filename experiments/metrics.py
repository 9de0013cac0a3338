"""Run outputs: ``metrics.jsonl`` (one JSON object a line), ``config.json`` and ``run.toml``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from experiments.atomic import write_text_atomic

METRICS = "metrics.jsonl"
CONFIG = "config.json"
RUN_TOML = "run.toml"  # the resolved TrainConfig as a TOML config file (experiments.config.to_toml)


class MetricsLog:
    """Appends records; on resume, first drops records newer than the checkpoint so the file
    describes exactly one history (a crash after the last checkpoint leaves such lines)."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            write_text_atomic(self.path, "")
        elif self.path.exists():  # a torn last line (a kill mid-append) is dropped here
            kept = [line for line in self.read(self.path) if line["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """The records of ``path``. An unreadable *last* line is a write cut short by a kill (or a
        run still writing it): it is skipped with a warning. Any other bad line is a ``ValueError``
        naming the file and the line."""
        path = Path(path)
        lines = [(number, line) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]
        records = []
        for index, (number, line) in enumerate(lines):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "step" not in record:
                    raise ValueError("not a record with a step")
            except ValueError as exc:
                if index == len(lines) - 1:
                    warnings.warn(f"{path}: line {number} is incomplete (a write cut short); ignoring it", stacklevel=2)
                    break
                raise ValueError(f"{path}: line {number} is not a metrics record ({exc}); repair or delete "
                                 f"the line") from None
            records.append(record)
        return records


def write_config(out: Path, config: dict[str, Any]) -> None:
    write_text_atomic(out / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
