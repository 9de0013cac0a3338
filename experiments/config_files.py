"""Config files of ``fimkit train``: a TOML file (sections of ``TrainConfig`` fields), a run's
``config.json``, ``--set SECTION.KEY=VALUE`` overrides, and the resolved ``run.toml`` every run
writes beside its metrics (DECISIONS C3)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from experiments.config import FIELDS, SECTIONS, TrainConfig, section_fields, suggestion


def load_config(path: str | Path) -> TrainConfig:
    """A TOML config file (``.toml``) or a run's ``config.json`` (its ``train`` part)."""
    path = Path(path)
    if path.suffix == ".toml":
        return load_toml_config(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); repair it "
                         f"or start from a new config") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a JSON object of settings, got {type(values).__name__}")
    try:
        return TrainConfig.from_dict(values.get("train", values))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_toml_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    try:
        return TrainConfig.from_dict({**dataclasses.asdict(TrainConfig()), **fields_from_toml(table)})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def fields_from_toml(table: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a parsed TOML file: sections or top-level keys, each key once."""
    fields: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in fields:
            raise ValueError(f"{name!r} is given twice (at the top level and in [{FIELDS[name].metadata['section']}])")
        fields[name] = value

    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict):
            for name, item in value.items():
                _check_key(key, name)
                put(name, item)
        elif key in FIELDS:
            put(key, value)
        else:
            valid = [*SECTIONS, *FIELDS]
            raise ValueError(f"unknown section or key {key!r}{suggestion(key, valid)}; sections: "
                             f"{', '.join(f'[{s}]' for s in SECTIONS)}; keys: {', '.join(FIELDS)}")
    return fields


def _check_key(section: str, name: str) -> None:
    if name not in FIELDS:
        valid = section_fields(section)
        raise ValueError(f"unknown key {name!r} in [{section}]{suggestion(name, valid)}; valid keys of [{section}]: "
                         f"{', '.join(valid)}")
    home = FIELDS[name].metadata["section"]
    if home != section:
        raise ValueError(f"{name!r} belongs in [{home}], not in [{section}]")


def parse_toml_value(text: str) -> Any:
    """A ``--set`` value: TOML (``3e-3``, ``true``, ``[1, 2]``, ``"text"``), else the bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_setting(values: dict[str, Any], setting: str) -> None:
    """Apply one ``--set SECTION.KEY=VALUE`` (or ``KEY=VALUE``, or ``optimizer.hparams.NAME=VALUE``)
    to the field values ``values``."""
    key, sep, raw = setting.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ValueError(f"--set {setting!r}: expected SECTION.KEY=VALUE, e.g. --set optimizer.lr=3e-3")
    if parts[0] in SECTIONS and len(parts) > 1:
        section, parts = parts[0], parts[1:]
        _check_key(section, parts[0])
    elif parts[0] not in FIELDS:
        valid = [f"{f.metadata['section']}.{name}" for name, f in FIELDS.items()]
        raise ValueError(f"--set {key}: unknown key{suggestion(key, valid + list(FIELDS))}; valid: {', '.join(valid)}")
    name, value = parts[0], parse_toml_value(raw.strip())
    if name == "hparams" and len(parts) == 2:
        values["hparams"] = {**values["hparams"], parts[1]: value}
    elif len(parts) == 1:
        values[name] = {**values["hparams"], **value} if name == "hparams" and isinstance(value, dict) else value
    else:
        raise ValueError(f"--set {key}: {name} has no keys of its own (only optimizer.hparams.NAME does)")


def to_toml(cfg: TrainConfig, header: str = "") -> str:
    """``cfg`` as a TOML config file (``run.toml``), one section per group. TOML has no null:
    ``None`` values (which mean "the default") are left out."""
    values = dataclasses.asdict(cfg)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, about in SECTIONS.items():
        body = [f"{name} = {_toml_value(values[name])}" for name in section_fields(section)
                if name != "hparams" and values[name] is not None]
        if body:
            lines += ["", f"[{section}]  # {about}", *body]
        if section == "optimizer" and values["hparams"]:
            omitted = sorted(k for k, v in values["hparams"].items() if v is None)
            lines += ["", "[optimizer.hparams]"]
            if omitted:
                lines.append(f"# None (the default): {', '.join(omitted)}")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sorted(values["hparams"].items()) if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be written to a TOML config")
