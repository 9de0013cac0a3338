"""fimkit: structured Fisher information approximations turned into optimizers.

    import fimkit
    approx = fimkit.solve(fimkit.structures.RowColumn(), grads)     # Frobenius-optimal member
    MyOptimizer = fimkit.derive(my_structure, lr=1e-3)               # a torch.optim.Optimizer
    opt = fimkit.build_optimizer(model, "racs")                      # routed: matrices vs the rest
"""

from . import memory, optim, structures
from .derive import derive, recipe
from .fim import empirical_fim
from .routing import build_optimizer, param_groups
from .solve import Approximation, solve

__all__ = [
    "structures", "optim", "memory", "derive", "recipe", "solve", "Approximation", "empirical_fim",
    "param_groups", "build_optimizer",
]
__version__ = "0.1.0"
