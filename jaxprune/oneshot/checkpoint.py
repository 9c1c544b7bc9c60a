"""Reading back the orbax checkpoint a one-shot job saves (``config.save_checkpoint``).

The job saves ``{"params": nnx.State of the parameters, "masks": the mask tree}`` with the
shardings the arrays had: split over a device mesh, or over several processes under
``jax.distributed``. orbax restores such a checkpoint only onto the same topology unless it is
given a target; ``restore_pruned`` gives it one, so a checkpoint from any mesh opens on one
device (a notebook, a laptop).
"""

from __future__ import annotations

import os

import jax


def restore_pruned(path: str, device: jax.Device | None = None) -> dict:
    """The ``{"params", "masks"}`` tree of a one-shot job's checkpoint, every array on
    ``device``, whatever mesh or processes wrote it.

    Args:
      path: the checkpoint directory (``WORKDIR/checkpoint``).
      device: where the arrays go; default the first local device.

    Returns:
      The saved tree: ``params`` (the pruned parameters, as nested dicts of arrays) and
      ``masks`` (the same paths; ``None`` where a leaf was not pruned).

    Raises:
      FileNotFoundError: for a path that is not an orbax checkpoint directory.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "_CHECKPOINT_METADATA")):
        raise FileNotFoundError(f"{path} is not an orbax checkpoint directory (no "
                                f"_CHECKPOINT_METADATA; an interrupted save leaves only "
                                f"{os.path.basename(path)}.orbax-checkpoint-tmp*)")
    one = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)
        target = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one), metadata)
        return checkpointer.restore(path, target)
