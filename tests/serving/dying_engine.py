"""``omniloom`` whose engine loop dies on its first step with work: a fault that no
``except Exception`` catches, to check that ``serve`` exits for its supervisor to restart it."""

from __future__ import annotations

import sys

from omniloom import cli
from omniloom.engine.engine import Engine


class EngineKilled(BaseException):
    """Stands for what the loop cannot survive."""


def dying_step(self: Engine) -> None:
    if self._waiting or self._running:
        raise EngineKilled("injected by the test")


if __name__ == "__main__":
    Engine.step = dying_step
    sys.exit(cli.main(sys.argv[1:]))
