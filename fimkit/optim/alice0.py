"""Alice-0 ([P] §5.2): Alice without tracking (b3 = 0), so no ``r x r`` statistic is stored
(state ``2nr + mr + n`` per matrix); every other default is Alice's (Table 11)."""

from dataclasses import replace

from ..derive import derive
from .alice import Alice

AliceZero = derive(
    replace(Alice.structure, tracking_beta=0.0), name="AliceZero", doc=__doc__,
    paper_hparams=Alice.paper_hparams, **Alice.declaration.recipe(),
)
