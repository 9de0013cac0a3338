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
from .muon import Muon
from .racs import RACS
from .sinkgd import SinkGD
from .swan import SWAN
from .alice import Alice, AliceZero
from .apollo import APOLLO, APOLLOMini
from .fira import Fira
from .galore import GaLore

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
