"""Progress reporting: a tqdm bar on a terminal, plain periodic lines otherwise (CI, pipes, logs)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """``update(n, **postfix)``; a bar when stderr is a terminal, else a line every ``every`` seconds."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, every: float = 10.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = initial
        self.last_line = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True) if sys.stderr.isatty() else None

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line >= self.every or self.n >= self.total:
            self.last_line = now
            details = " ".join(f"{k}={v}" for k, v in postfix.items())
            log(f"{self.desc}: {self.n}/{self.total} {self.unit} {details}".rstrip())

    def write(self, message: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
