"""glu_scaling: convergence-order studies of shallow MLP / GLU / GQU networks in JAX.

The public contract (see README and docs):

    init(key, arch, n_in, n_hidden, n_out, *, activation="relu", spline_init=True, width=None)
    apply(arch, params, x)            x (N, n_in) -> y (N, n_out)
    param_count(arch, n_in, n_hidden, n_out)
    construct(arch, f, n_hidden, *, interval=(-1.0, 1.0))
    sweep(...) -> list of result records;  fit_slope(x, y) -> SlopeFit
"""

from glu_scaling.errors import UsageError
from glu_scaling.models import (
    ACTIVATIONS,
    NAMED_ARCHS,
    Params,
    apply,
    hidden,
    init,
    pad,
    param_count,
    unpad,
)
from glu_scaling.problems import REGISTRY as PROBLEMS
from glu_scaling.problems import Dataset, make_dataset

__all__ = [
    "ACTIVATIONS", "NAMED_ARCHS", "PROBLEMS", "Dataset", "Params", "UsageError",
    "apply", "hidden", "init", "make_dataset", "pad", "param_count", "unpad",
]
__version__ = "0.1.0"
