"""glu_scaling: convergence-order studies of shallow MLP / GLU / GQU networks in JAX.

The public contract (see README and docs):

    init(key, arch, n_in, n_hidden, n_out, *, activation="relu", spline_init=True, width=None)   any architecture
    apply(arch, params, x)            x (N, n_in) -> y (N, n_out)
    param_count(arch, n_in, n_hidden, n_out)   any architecture, a `Unit` or a registered name
    construct(arch, f, n_hidden, *, interval=(-1.0, 1.0))
    sweep(...) -> list of result records;  fit_slope(x, y) -> SlopeFit

your own architecture: `Unit(name, unit, groups, linear=, gate=, degree=)` (`units`), which
`sweep` accepts like a name; and the settings a sweep is made of: `SweepConfig` (built from flat settings by
`sweep_config`), holding a `TrainConfig` and an `InitConfig`.
"""

import os as _os

# jaxlib's LAPACK (Cholesky, triangular solves) runs on OpenBLAS, whose own
# threads spin against XLA's thread pool and slow every Newton step (docs/design.md).
# Keep a user's explicit setting.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from glu_scaling.architectures import ARCHITECTURES, param_count, register  # noqa: E402
from glu_scaling.architectures import apply_model as apply  # noqa: E402
from glu_scaling.architectures import init_model as init  # noqa: E402
from glu_scaling.config import SweepConfig, sweep_config  # noqa: E402
from glu_scaling.constructions import construct  # noqa: E402
from glu_scaling.dense import Dense  # noqa: E402  (registers mlp2 and glu2)
from glu_scaling.errors import UsageError  # noqa: E402
from glu_scaling.inits import InitConfig  # noqa: E402
from glu_scaling.models import (  # noqa: E402
    ACTIVATIONS,
    NAMED_ARCHS,
    Params,
    hidden,
    pad,
    unpad,
)
from glu_scaling.problems import REGISTRY as PROBLEMS  # noqa: E402
from glu_scaling.problems import Dataset, make_dataset  # noqa: E402
from glu_scaling.schedules import TrainConfig  # noqa: E402
from glu_scaling.slopes import SlopeFit, fit_slope  # noqa: E402
from glu_scaling.sweeps import sweep  # noqa: E402
from glu_scaling.units import Unit, UnitParams, affine  # noqa: E402

__all__ = [
    "ACTIVATIONS", "ARCHITECTURES", "NAMED_ARCHS", "PROBLEMS", "Dataset", "Dense", "InitConfig", "Params", "SlopeFit",
    "SweepConfig", "TrainConfig", "Unit", "UnitParams", "UsageError", "affine", "apply", "construct", "fit_slope",
    "hidden", "init", "make_dataset", "pad", "param_count", "register", "sweep", "sweep_config", "unpad",
]
__version__ = "0.1.0"
