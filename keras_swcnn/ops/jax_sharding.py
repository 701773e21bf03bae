"""SPMD partitioning of the native JAX calls: each device convolves its own shard of the batch.

XLA cannot see inside an FFI custom call, so by default it gathers every
operand onto every device and runs the whole call on each of them: under
``keras.distribution.DataParallel`` every device would convolve the full
batch. ``partitioned`` attaches a rule (``jax.experimental.custom_partitioning``)
that names the dimensions of each operand and result and says which of them
may stay split across devices:

- ``n`` (the batch): images are independent, so each device runs the call on
  its own images;
- ``k`` (the filters, where an op allows it): output channels are
  independent, so a kernel split along ``k`` (model parallelism) gives an
  output split along ``k``.

Every other dimension is gathered (a tile straddles image rows, and the
sparse format packs all filters in one array). A result that lacks a split
dimension is a sum over it (the kernel gradient sums over images, the input
gradient over filters): each device's partial result is all-reduced over
those mesh axes, the one collective a data-parallel ``Conv2D`` also needs. A
dimension whose size does not divide evenly over its axes is gathered
instead: the padding of an uneven shard would add garbage rows to those sums.
With one device, or under ``shard_map``, the plain call runs.

Example:
    >>> import jax.numpy as jnp
    >>> double = partitioned(lambda x, options: 2 * x, operands=("n c",),
    ...                      results=("n c",), splittable=("n",))
    >>> double(jnp.ones((4, 3)), ()).shape
    (4, 3)
"""

import math

import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec


def _on_one_device(value):
    """Whether ``value`` is a concrete array (not traced) that lives on one device."""
    return (isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)
            and len(value.sharding.device_set) == 1)


def _split_axes(sharding, dim):
    """The mesh axes that split dimension ``dim`` of a value with ``sharding`` (a tuple)."""
    if not isinstance(sharding, NamedSharding) or dim >= len(sharding.spec):
        return ()
    entry = sharding.spec[dim]
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _plan(mesh, arg_shapes, operands, splittable):
    """Mesh axes for each splittable dimension: taken from the first operand split along it,
    kept only when they divide the dimension evenly and no other dimension uses them."""
    plan, used = {}, set()
    for factor in splittable:
        for dims, arg in zip(operands, arg_shapes):
            if factor not in dims:
                continue
            axes = _split_axes(arg.sharding, dims.index(factor))
            count = math.prod(mesh.shape[axis] for axis in axes)
            if axes and not used & set(axes) and arg.shape[dims.index(factor)] % count == 0:
                plan[factor] = axes
                used |= set(axes)
                break
    return plan


def _sharding(mesh, dims, plan):
    return NamedSharding(mesh, PartitionSpec(*(plan.get(factor) for factor in dims)))


def _reduce_missing(values, results, plan):
    """All-reduce each result over the axes of the split dimensions it does not have."""
    summed = []
    for value, dims in zip(values, results):
        axes = tuple(axis for factor, split in plan.items() if factor not in dims for axis in split)
        summed.append(jax.lax.psum(value, axes) if axes else value)
    return summed


def partitioned(local, operands, results, splittable=("n", "k")):
    """``local(*arrays, options)`` run per device on shards of the ``splittable`` dimensions.

    ``operands`` and ``results`` name each array's dimensions (space separated,
    one letter each, shared letters are the same dimension); ``options`` is a
    hashable value passed through unchanged. The returned function takes the
    same arguments; it runs one call after another under ``vmap``.
    """
    operands = tuple(tuple(dims.split()) for dims in operands)
    results = tuple(tuple(dims.split()) for dims in results)
    single = len(results) == 1
    # In order of first appearance: Shardy wants a rule's special factors sorted so.
    names = tuple(dict.fromkeys(factor for dims in operands + results for factor in dims))

    def result_shardings(mesh, plan):
        shardings = tuple(_sharding(mesh, dims, plan) for dims in results)
        return shardings[0] if single else shardings

    def partition(options, mesh, arg_shapes, result_shape):
        plan = _plan(mesh, arg_shapes, operands, splittable)

        def per_device(*arrays):
            values = local(*arrays, options)
            values = _reduce_missing((values,) if single else values, results, plan)
            return values[0] if single else tuple(values)

        arg_shardings = tuple(_sharding(mesh, dims, plan) for dims in operands)
        return mesh, per_device, result_shardings(mesh, plan), arg_shardings

    def infer_sharding_from_operands(options, mesh, arg_shapes, result_shape):
        return result_shardings(mesh, _plan(mesh, arg_shapes, operands, splittable))

    call = custom_partitioning(local, static_argnums=(len(operands),))
    call.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer_sharding_from_operands,
        sharding_rule=", ".join(" ".join(d) for d in operands)
        + " -> " + ", ".join(" ".join(d) for d in results),
        need_replication_factors=tuple(f for f in names if f not in splittable),
    )

    def run(*arrays_and_options):
        *arrays, options = arrays_and_options
        if all(_on_one_device(array) for array in arrays):
            return local(*arrays, options)  # eager, unsharded: skip the partitioner's tracing
        return jax.custom_batching.sequential_vmap(lambda *a: call(*a, options))(*arrays)

    return run
