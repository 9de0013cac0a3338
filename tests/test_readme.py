"""The README's Python examples run as written (the worked example is a contract with users)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_worked_example_runs_as_written(capsys):
    blocks = [b for b in _blocks() if "TiedColumns" in b]
    assert len(blocks) == 2, "the worked example is two consecutive blocks"
    namespace = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert out.startswith("generic") and losses[-1] < 0.6 * losses[0]
