"""Trains a two-layer Winograd-ReLU model under one distribution setting, in its own process.

Run by ``tests/test_distributed.py``, which compares what each setting learns
with a float64 numpy computation. Device counts must be set before JAX or
TensorFlow starts, hence one process per setting:

    python tests/distributed_check.py SETTING CASE.npz OUT.npz [PROCESS_ID PORT]

``CASE.npz`` holds the inputs ``x``, targets ``t``, the initial Winograd kernels
``u1``, ``u2`` and the step settings; ``OUT.npz`` receives the trained kernels
and, for JAX, facts read from the compiled HLO of the train step: the operand
shapes of every native custom call, and the shape of every all-gather. SETTINGS
names the settings.
"""

import json
import os
import re
import sys

SETTINGS = {
    # setting: (backend, devices in this process)
    "jax-single": ("jax", 1),
    "jax-data-parallel": ("jax", 2),
    "jax-model-parallel": ("jax", 4),
    "jax-process": ("jax", 1),  # one of two processes, one device each
    "jax-ops": ("jax", 2),  # the ops alone on batches that split evenly or not
    "tf-single": ("tensorflow", 1),
    "tf-mirrored": ("tensorflow", 2),
}


def _configure(setting):
    backend, devices = SETTINGS[setting]
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    else:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )


def build_model(case):
    import keras

    from keras_swcnn.layers import WinogradReLUConv2D

    # Processes must create equal initial values (then replaced by the case's kernels).
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(case["x"].shape[1:]),
        WinogradReLUConv2D(case["u1"].shape[-1], use_bias=False, name="wino1"),
        WinogradReLUConv2D(case["u2"].shape[-1], use_bias=False, padding="valid", name="wino2"),
    ])
    model.set_weights([case["u1"], case["u2"]])
    model.compile(optimizer=keras.optimizers.SGD(float(case["learning_rate"])), loss="mse")
    return model


def _shapes(text):
    return [[int(d) for d in dims.split(",") if d] for dims in re.findall(r"f32\[([\d,]*)\]", text)]


def _native_calls(hlo):
    """``[target, operand shapes]`` of every native custom call in an HLO module's text."""
    calls = []
    for line in hlo.splitlines():
        target = re.search(r'custom_call_target="(swcnn_[a-z_]+)"', line)
        if target:
            operands = re.search(r"operand_layout_constraints=(.*?), api_version", line).group(1)
            calls.append([target.group(1), _shapes(operands)])
    return calls


def _all_gathers(hlo):
    """The result shape of every all-gather in an HLO module's text."""
    return [_shapes(line.split("=", 1)[1])[0] for line in hlo.splitlines()
            if re.search(r"\ball-gather(-start)?\(", line)]


def _jax_train_step_facts(model, x, t):
    """What the compiled train step of ``model`` does with the batch ``x``, ``t`` (this process's)."""
    import jax
    from keras.src.backend.jax.trainer import _distribute_data

    state = model._get_jax_state(True, True, True, True)
    data = _distribute_data((x, t, None))
    hlo = jax.jit(model.train_step).lower(state, data).compile().as_text()
    return {
        "native_calls": _native_calls(hlo),
        "all_gathers": _all_gathers(hlo),
    }


def _tf_replica_native_calls(model, strategy, x, t, batch):
    """``[kernel, device]`` of every native kernel call that a replicated train step places:
    the TensorFlow ops (``SwcnnConvForward``...) and any XLA custom call (by target name).

    Traces ``strategy.run(model.train_step)`` as ``fit`` does and follows the
    function calls of its graph down to the functions holding the calls.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, t)).batch(batch)
    step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)))
    graph = step.get_concrete_function(
        next(iter(strategy.experimental_distribute_dataset(data)))).graph.as_graph_def()
    library = {function.signature.name: function for function in graph.library.function}
    found = []

    def walk(nodes, device):
        for node in nodes:
            device_here = node.device or device
            if node.op == "XlaCustomCallV2":
                found.append([node.attr["call_target_name"].s.decode(), device_here])
            elif node.op.startswith("Swcnn"):
                found.append([node.op, device_here])
            for key in ("f", "body", "cond", "then_branch", "else_branch"):
                callee = node.attr[key].func.name if key in node.attr else ""
                if callee in library:
                    walk(library[callee].node_def, device_here)

    walk(graph.node, "")
    return found


def _refuse_reference_path():
    """Make a fall-back to the ``keras.ops`` reference convolution fail the run."""
    from keras_swcnn.ops import reference

    def refuse(*args, **kwargs):
        raise AssertionError("the reference path ran: the native kernels were not used")

    reference.winograd_conv2d = refuse


def _set_distribution(setting):
    import jax
    import keras

    if setting in ("jax-data-parallel", "jax-process"):
        distribution = keras.distribution.DataParallel(devices=jax.devices())
        # Each process passes its own rows (``_local_rows``): nothing for Keras to shard.
        distribution.auto_shard_dataset = setting != "jax-process"
        keras.distribution.set_distribution(distribution)
    elif setting == "jax-model-parallel":
        mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), devices=jax.devices())
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map[".*/wino[12]/kernel"] = (None, None, None, "model")  # filters split
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))


def _local_rows(case, process, processes):
    """This process's share of each global batch (its images, in order)."""
    batch = int(case["batch_size"])
    share = batch // processes
    rows = [i for start in range(0, len(case["x"]), batch)
            for i in range(start + process * share, start + (process + 1) * share)]
    return case["x"][rows], case["t"][rows], share


def _jax_ops(case, out_path):
    """A sparse forward on an even batch, a dense gradient on an uneven one (both split over
    the batch axis) and a forward with nothing split."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from keras_swcnn import sparse_format
    from keras_swcnn.ops import jax_native

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    split = NamedSharding(mesh, PartitionSpec("batch"))
    whole = NamedSharding(mesh, PartitionSpec())
    mask, values = sparse_format.compress(case["u1"])
    sparse = jax.jit(lambda x, m, v: jax_native.sparse_winograd_conv2d(x, m, v),
                     in_shardings=(split, whole, whole))

    def loss(x, u):  # the slice leaves 5 images for 2 devices
        return (jax_native.winograd_conv2d(x[:5], u) * case["w"]).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)), in_shardings=(split, whole))
    replicated = jax.jit(jax_native.winograd_conv2d, in_shardings=(whole, whole))
    facts = {}
    for name, function, args in (("sparse", sparse, (case["x"], mask, values)),
                                 ("uneven", grads, (case["x"], case["u1"])),
                                 ("replicated", replicated, (case["x"], case["u1"]))):
        hlo = function.lower(*args).compile().as_text()
        facts[name] = _native_calls(hlo)
    dx, du = grads(case["x"], case["u1"])
    y = sparse(case["x"], mask, values)
    np.savez(out_path, y=np.asarray(y), y_replicated=np.asarray(replicated(case["x"], case["u1"])),
             dx=np.asarray(dx), du=np.asarray(du),
             facts=json.dumps(facts))


def main(setting, case_path, out_path, process_id=None, port=None):
    _configure(setting)
    import numpy as np

    case = dict(np.load(case_path))
    if setting == "jax-ops":
        return _jax_ops(case, out_path)
    facts = {}
    if setting == "jax-process":
        import jax
        from jax._src import xla_bridge

        # Loopback only: the coordinator binds to it, and gloo's collectives (which JAX starts
        # on the host name's address) are given it too.
        make_collectives = xla_bridge._jax.make_gloo_tcp_collectives

        def loopback_collectives(**kwargs):
            facts["gloo_hostname"] = "127.0.0.1"
            return make_collectives(**kwargs, hostname="127.0.0.1")

        xla_bridge._jax.make_gloo_tcp_collectives = loopback_collectives
        address = f"127.0.0.1:{port}"
        jax.distributed.initialize(address, num_processes=2, process_id=int(process_id),
                                   coordinator_bind_address=address, initialization_timeout=60)
    x, t, batch = case["x"], case["t"], int(case["batch_size"])
    if setting == "jax-process":
        x, t, batch = _local_rows(case, int(process_id), 2)
    _set_distribution(setting)
    _refuse_reference_path()
    if setting.startswith("tf"):
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(
            [device.name for device in tf.config.list_logical_devices("CPU")])
        with strategy.scope():
            model = build_model(case)
        facts["replicas"] = strategy.num_replicas_in_sync
        facts["native_calls"] = _tf_replica_native_calls(model, strategy, x, t, batch)
    else:
        model = build_model(case)
    model.fit(x, t, batch_size=batch, epochs=int(case["epochs"]), shuffle=False, verbose=0)
    if setting.startswith("jax"):  # after fit: the optimizer is built
        facts.update(_jax_train_step_facts(model, x[:batch], t[:batch]))
    if setting == "jax-process" and int(process_id) != 0:
        return
    weights = [np.asarray(w) for w in model.get_weights()]
    np.savez(out_path, u1=weights[0], u2=weights[1], facts=json.dumps(facts))


if __name__ == "__main__":
    main(*sys.argv[1:])
