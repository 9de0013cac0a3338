"""Adam: the ``Diagonal`` structure's square-root natural gradient with momentum ([P] Prop 1).

``v = EMA(G*G)``, step ``m_hat / (sqrt(v_hat) + eps)``. Equals ``torch.optim.Adam`` for the same
lr, betas and eps; weight_decay is decoupled (AdamW).
"""

from ..derive import derive
from ..structures import Diagonal

Adam = derive(
    Diagonal(), name="Adam", doc=__doc__, paper_hparams={"1.3B": {"lr": 7e-4}},
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, bias_correction=True,
)
