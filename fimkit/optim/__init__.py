"""fimkit's named optimizers: each one is ``fimkit.derive(structure, short recipe)`` in its own
module (APOLLO and APOLLO-Mini, which are not a Frobenius fit, are ``fimkit.recipe``s over the
same blocks). ``fimkit optimizers`` prints each declaration as an expression.

Every optimizer here is registered (``registered()``), routed by name
(``fimkit.build_optimizer(model, "racs")``) and covered by the shared contract tests.
"""

from .adafactor import Adafactor
from .adam import Adam
from .alice import Alice
from .alice0 import AliceZero
from .apollo import APOLLO
from .apollo_mini import APOLLOMini
from .chain import Block, ChainOptimizer
from .eigen_adam import EigenAdam
from .fira import Fira
from .galore import GaLore
from .muon import Muon
from .racs import RACS
from .registry import get_optimizer, paper_hparams, register, registered
from .shampoo import Shampoo
from .sinkgd import SinkGD
from .soap import SOAP
from .swan import SWAN

register("adam", Adam)
register("shampoo", Shampoo)
register("soap", SOAP)
register("eigen_adam", EigenAdam)
register("adafactor", Adafactor)
register("racs", RACS)
register("swan", SWAN)
register("sinkgd", SinkGD)
register("muon", Muon)
register("alice", Alice)
register("alice0", AliceZero)
register("galore", GaLore)
register("fira", Fira)
register("apollo", APOLLO)
register("apollo_mini", APOLLOMini)

__all__ = [
    "Adam", "Shampoo", "SOAP", "EigenAdam", "Adafactor", "Block", "ChainOptimizer",
    "RACS", "SWAN", "SinkGD", "Muon",
    "Alice", "AliceZero", "GaLore", "Fira", "APOLLO", "APOLLOMini",
    "register", "registered", "get_optimizer", "paper_hparams",
]
