"""The README's `make demo` table states what the committed demo run measured."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def committed_losses() -> dict[str, float]:
    table = (ROOT / "paper_figs/cpu_demo/results.md").read_text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| (\w+) \| ([\d.]+) \|", table, re.MULTILINE)}


def readme_losses() -> dict[str, float]:
    section = (ROOT / "README.md").read_text().split("## What `make demo` shows", 1)[1].split("\n## ", 1)[0]
    rows = re.finditer(r"^\| (Adam|RACS|Alice)\b[^|]*\| \**([\d.]+)\**", section, re.MULTILINE)
    return {m[1].lower(): float(m[2]) for m in rows}


def test_readme_demo_losses_are_the_committed_demo_results():
    committed, readme = committed_losses(), readme_losses()
    assert set(readme) == {"adam", "racs", "alice"}
    for name, loss in readme.items():
        assert loss == round(committed[name], 3), f"README's {name} row says {loss}, paper_figs/cpu_demo says {committed[name]}"
