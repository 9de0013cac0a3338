"""fimkit's named optimizers: each one is a short recipe over the shared blocks.

Every optimizer here is registered (``registered()``), routed by name
(``fimkit.build_optimizer(model, "racs")``) and covered by the shared contract tests.
"""

from .adafactor import Adafactor
from .adam import Adam
from .chain import Block, ChainOptimizer
from .registry import get_optimizer, paper_hparams, register, registered
from .shampoo import Shampoo
from .soap import SOAP, EigenAdam

register("adam", Adam)
register("shampoo", Shampoo)
register("soap", SOAP)
register("eigen_adam", EigenAdam)
register("adafactor", Adafactor)

__all__ = [
    "Adam", "Shampoo", "SOAP", "EigenAdam", "Adafactor", "Block", "ChainOptimizer",
    "register", "registered", "get_optimizer", "paper_hparams",
]
