"""Devices and processes: the mesh a sweep's batch axis is sharded over, how a batch of
models is padded to fill it (`padded_size`, `pad_models`), and multi-host start-up.

A sweep trains the models of a bucket as one batch axis; with more than one device
that axis is split over a one-dimensional `jax.sharding.Mesh` (axis "models") and
every device trains its share with `jax.shard_map` (see `train.train_batch`).  One
device takes the unsharded path, exactly as before sharding existed.

Multi-host runs use `jax.distributed`: `initialize()` starts it when the
environment asks for it, explicitly and nothing else:

* ``JAX_COORDINATOR_ADDRESS=host:port`` with ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (the last two may be left to JAX's cluster detection, e.g.
  under SLURM);
* ``GLU_SCALING_DISTRIBUTED=1``: everything from JAX's cluster auto-detection
  (a Cloud TPU pod slice, SLURM, Open MPI, Kubernetes);
* ``SLURM_STEP_NUM_TASKS`` > 1 (a job step started by ``srun`` with several tasks; not
  ``SLURM_NTASKS``, which a plain batch script or ``salloc`` shell also carries).

Every process then runs the same sweep over the global mesh (all processes' devices);
each writes the records of the models its own devices trained to
``results.host{K}.jsonl`` (`records_filename`), and ``glu-scaling merge DIR`` folds
them into results.jsonl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling.errors import UsageError

AXIS = "models"  # the mesh axis the batch of models is split over
FLAG = "GLU_SCALING_DISTRIBUTED"


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict | None:
    """Keyword arguments for `jax.distributed.initialize`, or None for a single-process run.

    An empty dict means "let JAX detect the cluster"; explicit JAX_* variables are
    passed through (JAX itself reads only the coordinator address from the environment).
    """
    env = os.environ if environ is None else environ
    explicit = {key: _env_int(var, env[var], minimum=1 if key == "num_processes" else 0)  # checked even if unused
                for var, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id"))
                if env.get(var, "") != ""}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"], **explicit}
    if env.get(FLAG, "").lower() in ("1", "true", "yes", "auto"):
        return {}
    if env.get("SLURM_STEP_NUM_TASKS") and _env_int("SLURM_STEP_NUM_TASKS", env["SLURM_STEP_NUM_TASKS"],
                                                   minimum=1) > 1:
        return {}
    return None


def _env_int(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UsageError(f"environment variable {name}={text!r} is not an integer >= {minimum}")
    return value


def initialize(environ: Mapping[str, str] | None = None) -> bool:
    """Start `jax.distributed` if the environment asks for it (and it is not running yet).

    Must run before anything touches a JAX backend.  Returns True when this is a
    multi-process run.
    """
    settings = settings_from_env(environ)
    if settings is not None and not jax.distributed.is_initialized():
        # CPU devices of several processes talk through gloo (accelerators use their own
        # collectives; the setting only concerns the CPU backend)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**settings)
    return jax.process_count() > 1


def resolve_devices(requested: int | None, visible: int | None = None, processes: int | None = None) -> int:
    """How many devices a sweep shards over: `requested`, or every visible device when None.

    visible: the global device count (default `jax.device_count()`); processes: the
    process count (default `jax.process_count()`).  A multi-host run uses every device.
    """
    visible = jax.device_count() if visible is None else visible
    processes = jax.process_count() if processes is None else processes
    if requested is None:
        return visible
    bad = isinstance(requested, bool) or not isinstance(requested, int | np.integer)
    if processes > 1 and (bad or requested != visible):
        raise UsageError(f"devices {requested!r} is not accepted in a {processes}-process run; "
                         f"accepted: {visible} (all devices of all processes)")
    if bad or not 1 <= requested <= visible:
        raise UsageError(f"devices must be in 1..{visible} (the visible devices), got {requested!r}")
    return int(requested)


def simulated_cpu_env(n_devices: int, cpus: int | None = None) -> dict[str, str]:
    """Environment for `n_devices` simulated CPU devices (tests, benchmarks), set before JAX starts.

    XLA_FLAGS=--xla_force_host_platform_device_count=N, and PJRT_NPROC (the size of
    XLA:CPU's shared thread pool) N + cpus: a vmapped Cholesky (jaxlib's LAPACK kernel)
    blocks its pool thread while its batch runs on that same pool, so with no more pool
    threads than devices all of them can block at once and the program hangs (seen with
    more simulated devices than cores); N + cpus leaves `cpus` threads working.  The pool size
    also sets how XLA:CPU splits large matrix products, so results agree to the last bit
    only between runs with the same PJRT_NPROC (scripts/bench_devices.py).
    """
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
            "PJRT_NPROC": str(n_devices + cpus)}


def make_mesh(n_devices: int) -> jax.sharding.Mesh | None:
    """A one-axis ("models") mesh over the first `n_devices` global devices; None for one device."""
    if n_devices <= 1:
        return None
    return jax.sharding.Mesh(np.asarray(jax.devices()[:n_devices]), (AXIS,))


def replicate(tree, mesh: jax.sharding.Mesh | None):
    """Every leaf as a global array replicated over `mesh` (every process passes the
    same values); the tree unchanged when mesh is None."""
    if mesh is None:
        return tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def device_owners(n_padded: int, mesh: jax.sharding.Mesh | None) -> np.ndarray:
    """(n_padded,) process index of the device that trains each model of a padded batch.

    `train.train_batch` gives device j of the mesh the contiguous block
    [j * n_padded / n_devices, (j + 1) * n_padded / n_devices).
    """
    if mesh is None:
        return np.full((n_padded,), jax.process_index())
    procs = np.asarray([d.process_index for d in mesh.devices.flat])
    return np.repeat(procs, n_padded // procs.size)


def process_index() -> int:
    """This process's index (0 in a single-process run)."""
    return jax.process_index()


def records_filename(process_index: int | None = None, process_count: int | None = None) -> str:
    """results.jsonl for a single-process run; results.host{K}.jsonl for process K of several."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    return "results.jsonl" if process_count == 1 else f"results.host{process_index}.jsonl"


def barrier(name: str) -> None:
    """Wait for every process (no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_from_first(array: np.ndarray) -> np.ndarray:
    """Process 0's value of `array` on every process (identity in a single-process run)."""
    if jax.process_count() == 1:
        return array
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(array))


def padded_size(n_models: int, n_devices: int = 1, batch_size: int | None = None) -> tuple[int, int]:
    """(models after padding, models vmapped together on one device) for a batch of `n_models`.

    Each of the `n_devices` devices gets ceil(n_models / n_devices) models, rounded up
    to a multiple of its vmap batch min(batch_size, that share) (None: the whole
    share), so every device runs the same number of whole `lax.map` groups.
    """
    share = -(-n_models // n_devices)
    batch = share if batch_size is None else min(batch_size, share)
    return n_devices * -(-share // batch) * batch, batch


def pad_models(params, n_total: int):
    """Append dummy models up to `n_total` on the leading axis: copies of model 0 with
    every unit masked (a constant model, whose Newton steps end at once); their
    results are dropped by the caller."""
    extra = n_total - params.mask.shape[0]
    if extra == 0:
        return params
    dummy = jax.tree.map(lambda a: jnp.repeat(a[:1], extra, axis=0), params)
    dummy = dummy.replace(mask=jnp.zeros_like(dummy.mask))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), params, dummy)
