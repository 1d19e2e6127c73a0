"""Training: pairs (where training pairs come from), batching (datasets, collators, the multi-process gather),
models (LoRA models and their projection), runs (run folders and checkpoints), defence (injected negatives) and loop
(``FinetuneConfig`` and ``run_finetune``, imported from ``lir_robust.training.loop``: it needs Accelerate).

The names of pairs, batching, models and runs are re-exported here (``lir_robust.training.load_training_pairs``).
"""

from lir_robust.training.batching import *  # noqa: F401,F403
from lir_robust.training.batching import __all__ as _batching
from lir_robust.training.models import *  # noqa: F401,F403
from lir_robust.training.models import __all__ as _models
from lir_robust.training.pairs import *  # noqa: F401,F403
from lir_robust.training.pairs import __all__ as _pairs
from lir_robust.training.runs import *  # noqa: F401,F403
from lir_robust.training.runs import __all__ as _runs

__all__ = [*_pairs, *_batching, *_models, *_runs]
