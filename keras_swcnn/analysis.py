"""Density and multiplication accounting for Winograd-ReLU models (the paper's Tables 2-4).

For every Winograd layer: the weight density of the Winograd-domain kernel
(``rho_w``, as the layer computes with it, masks included), the measured
density of ``relu(B^T d B)`` on a batch of data (``rho_a``), and the
multiplications per image as a dense spatial conv (``9 H W C K``), a dense
Winograd layer (``16 tiles C K``) and a sparse Winograd-ReLU layer
(``16 tiles C K rho_w rho_a``). Other ``Conv2D`` and ``Dense`` layers are
counted too, by the same rule: dense count times their weight density and the
density of their input (a spatial conv after a ReLU skips zero activations as
well, which the paper's spatial baseline counts), so the whole-model reduction
factor is honest.

With ``time_layers=True`` each Winograd layer is also timed on its measured
input, next to its counts: as a sparse layer (multiplications for non-zero
weights only), as the dense Winograd layer and as a ``Conv2D`` of the same shape
(median of interleaved runs, ``keras_swcnn.benchmark``), so the count and the
wall clock can be compared layer by layer.

Example:
    >>> report = multiplication_report(model, x_batch)  # doctest: +SKIP
    >>> timed = multiplication_report(model, x_batch[:32], time_layers=True)  # doctest: +SKIP
    >>> print(format_report(report))  # doctest: +SKIP
    >>> plot_densities(report, "densities.png")  # doctest: +SKIP
"""

import math
from dataclasses import dataclass, field

import numpy as np
import keras
from keras import ops

from keras_swcnn import ops as winograd_ops
from keras_swcnn import winograd
from keras_swcnn._plotting import pyplot
from keras_swcnn.layers import SparseWinogradReLUConv2D, WinogradReLUConv2D

WINOGRAD_LAYERS = (WinogradReLUConv2D, SparseWinogradReLUConv2D)


@dataclass
class LayerCount:
    """Multiplications (per image) and densities of one layer."""

    name: str
    kind: str  # "winograd" or the Keras class name
    shape: str  # e.g. "28x28x32->64"
    weight_density: float
    activation_density: float  # of what the layer multiplies: relu(B^T d B), or its input
    dense_spatial: int  # multiplications of the dense spatial equivalent
    dense_winograd: int  # dense Winograd (equals dense_spatial for other layers)
    sparse: float  # with both densities applied
    seconds: dict = None  # measured: {"sparse", "dense", "conv2d"} seconds per batch (time_layers)

    @property
    def reduction(self):
        return self.dense_spatial / self.sparse if self.sparse else math.inf


@dataclass
class Report:
    layers: list = field(default_factory=list)

    def _sum(self, attribute, kind=None):
        return sum(getattr(r, attribute) for r in self.layers if kind is None or
                   (r.kind == "winograd") == (kind == "winograd"))

    @property
    def winograd_layers(self):
        return [r for r in self.layers if r.kind == "winograd"]

    @property
    def total_dense_spatial(self):
        return self._sum("dense_spatial")

    @property
    def total_dense_winograd(self):
        return self._sum("dense_winograd")

    @property
    def total_sparse(self):
        return self._sum("sparse")

    @property
    def reduction(self):
        """Whole model: dense spatial multiplications / sparse Winograd-ReLU multiplications."""
        return self.total_dense_spatial / self.total_sparse if self.total_sparse else math.inf

    @property
    def winograd_reduction(self):
        """Winograd layers only, as the paper reports it."""
        sparse = self._sum("sparse", "winograd")
        return self._sum("dense_spatial", "winograd") / sparse if sparse else math.inf

    def as_dict(self):
        return {
            "layers": [dict(vars(r), reduction=r.reduction) for r in self.layers],
            "total_dense_spatial": self.total_dense_spatial,
            "total_dense_winograd": self.total_dense_winograd,
            "total_sparse": self.total_sparse,
            "reduction": self.reduction,
            "winograd_reduction": self.winograd_reduction,
        }


def _unwrap(layer):
    """(inner layer, effective prunable kernels or None) for pruning wrappers."""
    from keras_swcnn.pruning import PruneLowMagnitude

    if isinstance(layer, PruneLowMagnitude):
        return layer.layer, [ops.convert_to_numpy(w) for w in layer.masked_weights()]
    return layer, None


def _density(array):
    array = np.asarray(array)
    return float(np.count_nonzero(array)) / max(array.size, 1)


def _counted(layer):
    inner, _ = _unwrap(layer)
    return isinstance(inner, WINOGRAD_LAYERS + (keras.layers.Conv2D, keras.layers.Dense))


def _input_in(model, layer):
    """The tensor feeding ``layer`` in ``model``'s graph.

    ``layer.input`` is the input of the layer's *first* call, which belongs to
    another model when layers are shared (``prune_low_magnitude`` and
    ``strip_pruning`` reuse layers, as tfmot's do).
    """
    graph = getattr(model, "_functional", None) or model  # a built Sequential wraps one
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.operation is layer:
                return node.input_tensors[0]
    raise ValueError(f"Layer {layer.name!r} is not called in model {model.name!r}.")


def _nhwc(shape_or_array, data_format):
    return shape_or_array if data_format == "channels_last" else np.transpose(shape_or_array, (0, 2, 3, 1))


def multiplication_report(model, x, batch_size=64, time_layers=False, repeats=5):
    """Count densities and multiplications per image of a functional or Sequential model.

    Args:
        model: a built Keras 3 functional or Sequential model (pruned, sparsified or not).
        x: a batch of input data, used to measure the activation densities.
        batch_size: batch size for the forward pass that collects layer inputs.
        time_layers: also time each Winograd layer on its input (all of ``x``), as a
            sparse layer, a dense one and a ``Conv2D`` (``LayerCount.seconds``).
        repeats: timed runs per candidate (the median is kept).
    """
    layers = [layer for layer in model.layers if _counted(layer)]
    if not layers:
        return Report()
    probe = keras.Model(model.inputs, [_input_in(model, layer) for layer in layers])
    inputs = probe.predict(x, batch_size=batch_size, verbose=0)
    if len(layers) == 1:
        inputs = [inputs]
    report = Report()
    for layer, layer_input in zip(layers, inputs):
        inner, masked = _unwrap(layer)
        if isinstance(inner, SparseWinogradReLUConv2D):
            kernel = ops.convert_to_numpy(inner.dense_kernel())
        else:
            kernel = masked[0] if masked else ops.convert_to_numpy(inner.kernel)
        rho_w = _density(kernel)
        if isinstance(inner, WINOGRAD_LAYERS):
            count = _winograd_count(layer.name, inner, kernel, layer_input, rho_w)
            if time_layers:
                count.seconds = _layer_seconds(inner, kernel, layer_input, repeats)
            report.layers.append(count)
        elif isinstance(inner, keras.layers.Conv2D):
            report.layers.append(_conv_count(layer.name, inner, layer_input, rho_w))
        else:
            report.layers.append(_dense_count(layer.name, inner, layer_input, rho_w))
    return report


def _winograd_count(name, layer, kernel, layer_input, rho_w):
    x = _nhwc(np.asarray(layer_input, np.float32), layer.data_format)
    _, h, w, c = x.shape
    k = kernel.shape[-1]
    g = winograd.tile_geometry(h, w, layer.padding)
    v = ops.convert_to_numpy(winograd_ops.input_transform(
        x, layer.padding, relu=layer.winograd_activation == "relu"))
    rho_a = _density(v)
    tiles = g.tiles_h * g.tiles_w
    dense_winograd = 16 * tiles * c * k
    return LayerCount(
        name=name, kind="winograd", shape=f"{h}x{w}x{c}->{k}", weight_density=rho_w,
        activation_density=rho_a, dense_spatial=9 * g.out_h * g.out_w * c * k,
        dense_winograd=dense_winograd, sparse=dense_winograd * rho_w * rho_a)


def _layer_seconds(layer, kernel, layer_input, repeats):
    """Median seconds of the layer's convolution as sparse, dense Winograd and Conv2D (NHWC)."""
    from keras_swcnn import benchmark

    x = np.ascontiguousarray(_nhwc(np.asarray(layer_input, np.float32), layer.data_format))
    filters = kernel.shape[-1]
    dense = WinogradReLUConv2D(filters, padding=layer.padding,
                               winograd_activation=layer.winograd_activation)
    dense.build(x.shape)
    dense.kernel.assign(kernel)
    conv = keras.layers.Conv2D(filters, 3, padding=layer.padding, use_bias=False)
    conv.build(x.shape)
    return benchmark.interleaved_medians({
        "sparse": benchmark.compiled_forward(SparseWinogradReLUConv2D.from_dense(dense), x),
        "dense": benchmark.compiled_forward(dense, x),
        "conv2d": benchmark.compiled_forward(conv, x)}, repeats)


def _conv_count(name, layer, layer_input, rho_w):
    shape = layer_input.shape[1:]
    h, w, c = shape if layer.data_format == "channels_last" else (shape[1], shape[2], shape[0])
    out = layer.compute_output_shape((None,) + tuple(shape))
    oh, ow = (out[1], out[2]) if layer.data_format == "channels_last" else (out[2], out[3])
    kh, kw = layer.kernel_size
    dense = kh * kw * oh * ow * (c // layer.groups) * layer.filters
    rho_a = _density(np.asarray(layer_input))
    return LayerCount(name=name, kind="Conv2D", shape=f"{h}x{w}x{c}->{layer.filters}",
                      weight_density=rho_w, activation_density=rho_a, dense_spatial=dense,
                      dense_winograd=dense, sparse=dense * rho_w * rho_a)


def _dense_count(name, layer, layer_input, rho_w):
    shape = layer_input.shape[1:]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    dense = rows * shape[-1] * layer.units
    rho_a = _density(np.asarray(layer_input))
    return LayerCount(name=name, kind="Dense", shape=f"{shape[-1]}->{layer.units}",
                      weight_density=rho_w, activation_density=rho_a, dense_spatial=dense,
                      dense_winograd=dense, sparse=dense * rho_w * rho_a)


def format_report(report):
    """The report as a text table (multiplications per image, in millions)."""
    head = (f"{'layer':<34} {'kind':<9} {'shape':<16} {'rho_w':>6} {'rho_a':>6} "
            f"{'spatial M':>10} {'winograd M':>10} {'sparse M':>9} {'reduction':>9}")
    lines = [head, "-" * len(head)]
    for r in report.layers:
        lines.append(
            f"{r.name[:34]:<34} {r.kind:<9} {r.shape:<16} {r.weight_density:6.3f} "
            f"{r.activation_density:6.3f} {r.dense_spatial / 1e6:10.3f} "
            f"{r.dense_winograd / 1e6:10.3f} {r.sparse / 1e6:9.3f} {r.reduction:8.1f}x")
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<34} {'':<9} {'':<16} {'':>6} {'':>6} {report.total_dense_spatial / 1e6:10.3f} "
        f"{report.total_dense_winograd / 1e6:10.3f} {report.total_sparse / 1e6:9.3f} "
        f"{report.reduction:8.1f}x")
    lines.append(f"Winograd layers alone: {report.winograd_reduction:.1f}x fewer multiplications "
                 "than dense spatial convolution.")
    timed = [r for r in report.layers if r.seconds]
    if timed:
        lines.append("")
        lines.append(_format_times(timed))
    return "\n".join(lines)


def _format_times(rows):
    head = (f"{'layer':<34} {'sparse M':>9} {'sparse ms':>10} {'dense ms':>9} {'Conv2D ms':>10} "
            f"{'sparse/Conv2D':>13} {'count ratio':>11}")
    lines = ["Measured time per batch (median of interleaved runs):", head, "-" * len(head)]
    for r in rows:
        t = r.seconds
        lines.append(
            f"{r.name[:34]:<34} {r.sparse / 1e6:9.3f} {t['sparse'] * 1e3:10.2f} {t['dense'] * 1e3:9.2f} "
            f"{t['conv2d'] * 1e3:10.2f} {t['sparse'] / t['conv2d']:12.2f}x "
            f"{r.sparse / r.dense_spatial:10.2f}x")
    total = {k: sum(r.seconds[k] for r in rows) for k in ("sparse", "dense", "conv2d")}
    counted = sum(r.sparse for r in rows) / sum(r.dense_spatial for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':<34} {sum(r.sparse for r in rows) / 1e6:9.3f} {total['sparse'] * 1e3:10.2f} "
                 f"{total['dense'] * 1e3:9.2f} {total['conv2d'] * 1e3:10.2f} "
                 f"{total['sparse'] / total['conv2d']:12.2f}x {counted:10.2f}x")
    lines.append("count ratio: the sparse layer's multiplications over the dense spatial convolution's; "
                 "sparse/Conv2D: the same ratio in time.")
    return "\n".join(lines)


def plot_densities(report, path):
    """Save a PNG bar chart of each Winograd layer's weight and activation density.

    Needs matplotlib (``pip install matplotlib``).
    """
    plt = pyplot("plot_densities")
    rows = report.winograd_layers
    positions = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.8 * len(rows) + 2), 4))
    ax.bar(positions - 0.2, [r.weight_density for r in rows], 0.4, label="weights (Winograd domain)")
    ax.bar(positions + 0.2, [r.activation_density for r in rows], 0.4,
           label="activations relu(B^T d B)")
    ax.set_xticks(positions, [r.name for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("density (non-zero fraction)")
    ax.set_title(f"Winograd-ReLU densities ({report.winograd_reduction:.1f}x fewer multiplications)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
