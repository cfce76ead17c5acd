"""glu_scaling: convergence-order studies of shallow MLP / GLU / GQU networks in JAX.

The public contract (see README and docs):

    init(key, arch, n_in, n_hidden, n_out, *, activation="relu", spline_init=True, width=None)
    apply(arch, params, x)            x (N, n_in) -> y (N, n_out)
    param_count(arch, n_in, n_hidden, n_out)
    construct(arch, f, n_hidden, *, interval=(-1.0, 1.0))
    sweep(...) -> list of result records;  fit_slope(x, y) -> SlopeFit

and the settings a sweep is made of: `SweepConfig` (built from flat settings by
`sweep_config`), holding a `TrainConfig` and an `InitConfig`.
"""

import os as _os

# jaxlib's LAPACK (Cholesky, triangular solves) runs on OpenBLAS, whose own
# threads spin against XLA's thread pool and slow every Newton step (docs/design.md).
# Keep a user's explicit setting.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from glu_scaling.config import SweepConfig, sweep_config  # noqa: E402
from glu_scaling.constructions import construct  # noqa: E402
from glu_scaling.errors import UsageError  # noqa: E402
from glu_scaling.inits import InitConfig, init  # noqa: E402
from glu_scaling.models import (  # noqa: E402
    ACTIVATIONS,
    NAMED_ARCHS,
    Params,
    apply,
    hidden,
    pad,
    param_count,
    unpad,
)
from glu_scaling.problems import REGISTRY as PROBLEMS  # noqa: E402
from glu_scaling.problems import Dataset, make_dataset  # noqa: E402
from glu_scaling.schedules import TrainConfig  # noqa: E402
from glu_scaling.slopes import SlopeFit, fit_slope  # noqa: E402
from glu_scaling.sweeps import sweep  # noqa: E402

__all__ = [
    "ACTIVATIONS", "NAMED_ARCHS", "PROBLEMS", "Dataset", "InitConfig", "Params", "SlopeFit", "SweepConfig",
    "TrainConfig", "UsageError", "apply", "construct", "fit_slope", "hidden", "init", "make_dataset", "pad",
    "param_count", "sweep", "sweep_config", "unpad",
]
__version__ = "0.1.0"
