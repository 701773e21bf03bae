"""The paper's comparison on Fashion-MNIST: three convolution variants pruned through the same densities.

(a) ``spatial``: ``Conv2D`` pruned in the spatial domain, ReLU before it;
(b) ``winograd_native``: Winograd-domain kernel pruned there, ReLU before the
layer (spatial); (c) ``winograd_relu``: the paper's, ReLU after the input
transform (docs/design.md, section 1). Each is trained dense with one recipe,
then its residual-branch 3x3 convolutions (the paper's pruned layers) are
pruned by magnitude to each density in turn, with fine-tuning at every stage;
each stage reports test accuracy, the weight density ``rho_w``, the measured
density ``rho_a`` of what the layers multiply (their input for (a), the
transformed tiles for (b) and (c)) and the multiplication reduction of those
layers against dense spatial convolution. Every stage is a resumable phase of
``training.RunDirectory`` (one folder per variant).

Example:
    >>> from keras_swcnn.applications import comparison
    >>> rows = comparison.compare_variants(width=16, run_dir="compare")  # doctest: +SKIP
    >>> print(comparison.format_markdown(rows))  # doctest: +SKIP
    >>> comparison.plot(rows, "comparison.png")  # doctest: +SKIP
"""

import dataclasses
import os
import time

import keras

from keras_swcnn import analysis, pruning
from keras_swcnn._plotting import pyplot
from keras_swcnn.applications import training

#: The three variants, as ``ResNet18`` arguments, in the paper's order.
VARIANTS = {
    "spatial": dict(conv="spatial"),
    "winograd_native": dict(conv="winograd", winograd_activation=None),
    "winograd_relu": dict(conv="winograd", winograd_activation="relu"),
}
DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05)
#: The recipe of the comparison run in docs/results.md (short: three variants x six phases).
RECIPE = training.Recipe(epochs=3, optimizer="sgd", learning_rate=0.05, warmup_epochs=0.5,
                         final_fraction=0.0, augment=True, prune_learning_rate=0.2)


@dataclasses.dataclass
class Stage:
    """One variant at one density: its test accuracy and multiplication accounting."""

    variant: str
    target_density: float  # 1.0: dense
    accuracy: float
    weight_density: float  # of the pruned layers, weighted by their dense multiplications
    activation_density: float  # likewise
    multiplications: float  # per image, pruned layers, both densities applied
    dense_spatial: float  # the same layers as dense spatial convolutions
    seconds: float

    @property
    def reduction(self):
        return self.dense_spatial / self.multiplications if self.multiplications else float("inf")


def _stage(variant, target, model, x_test, y_test, activation_samples, seconds):
    report = analysis.multiplication_report(model, x_test[:activation_samples])
    rows = [r for r in report.layers if training.is_pruned_conv(r)]
    own = [r.dense_winograd for r in rows]  # the layer's own dense count (spatial for Conv2D)
    total = sum(own)
    return Stage(variant=variant, target_density=target, accuracy=training.accuracy(model, x_test, y_test),
                 weight_density=sum(r.weight_density * n for r, n in zip(rows, own)) / total,
                 activation_density=sum(r.activation_density * n for r, n in zip(rows, own)) / total,
                 multiplications=sum(r.sparse for r in rows),
                 dense_spatial=sum(r.dense_spatial for r in rows), seconds=seconds)


def _prune_stage(model, density, data, recipe, stage_epochs, run, verbose):
    pruned = pruning.prune_low_magnitude(
        model, pruning.ConstantSparsity(1.0 - density, begin_step=1, frequency=100),
        filter_fn=training.is_pruned_conv)
    training.fit_phase(pruned, f"prune_{density:g}", data, recipe, stage_epochs,
                       recipe.learning_rate * recipe.prune_learning_rate, run,
                       callbacks=[pruning.UpdatePruningStep()], verbose=verbose)
    return pruning.strip_pruning(pruned)


def compare_variants(width=16, recipe=RECIPE, densities=DENSITIES, stage_epochs=1.0,
                     variants=tuple(VARIANTS), train_samples=None, test_samples=None, run_dir=None,
                     resume=False, activation_samples=256, verbose=2, log=print):
    """Train each variant dense, then prune it through ``densities``; one ``Stage`` per phase.

    Args:
        width: first-stage width of ``ResNet18(variant="small")`` (the paper: 64).
        recipe: the dense training recipe (its ``prune_*`` fields: the stages'
            learning rate; its ``prune_densities`` are not used).
        densities: weight densities of the pruning stages, decreasing.
        stage_epochs: epochs of pruning + fine-tuning per stage (may be fractional).
        variants: names from ``VARIANTS``.
        run_dir: folder for the runs (one sub-folder per variant); None: no checkpoints.
        resume: continue the runs in ``run_dir``.
        activation_samples: test images on which ``rho_a`` is measured.

    Returns:
        A list of ``Stage``: per variant the dense model, then each density.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown variants {unknown}; choose from {tuple(VARIANTS)}.")
    densities = tuple(float(d) for d in densities)
    if any(a <= b for a, b in zip(densities, densities[1:])) or not all(0 < d < 1 for d in densities):
        raise ValueError(f"densities must strictly decrease within (0, 1), got {densities}.")
    if run_dir:
        training.RunDirectory(run_dir, resume)  # refuses a folder holding a run unless resumed
    data, test = training.load_fashion_mnist(train_samples, test_samples)
    stages = []
    for variant in variants:
        start = time.perf_counter()
        keras.utils.set_random_seed(recipe.seed)
        settings = dict(recipe=recipe.as_dict(), width=width, densities=densities, stage_epochs=stage_epochs,
                        train_samples=train_samples, test_samples=test_samples,
                        activation_samples=activation_samples)
        run = (training.RunDirectory(os.path.join(run_dir, variant), resume=True, settings=settings)
               if run_dir else None)
        model = training.build_model(width, **VARIANTS[variant])
        training.dense_phase(model, recipe, data, test, run, validate=False, verbose=verbose, log=log)
        stages.append(_stage(variant, 1.0, model, *test, activation_samples, time.perf_counter() - start))
        for density in densities:
            start = time.perf_counter()
            phase = f"prune_{density:g}"
            if run and run.record(phase) is not None:
                run.load(phase, model)
            else:
                model = _prune_stage(model, density, data, recipe, stage_epochs, run, verbose)
                if run:
                    run.finish(phase, model, {"density": density})
            stage = _stage(variant, density, model, *test, activation_samples, time.perf_counter() - start)
            log(f"{variant} at density {density:g}: test accuracy {stage.accuracy:.4f}, "
                f"{stage.reduction:.1f}x fewer multiplications")
            stages.append(stage)
    return stages


LABELS = {"spatial": "(a) spatial pruning", "winograd_native": "(b) Winograd-native pruning",
          "winograd_relu": "(c) Winograd-ReLU pruning"}


def format_markdown(stages):
    """The comparison as a markdown table, one row per variant and density."""
    lines = ["| variant | density (target) | test accuracy | ρ_w | ρ_a | multiplications (M/image) "
             "| reduction vs dense spatial |", "|---|---|---|---|---|---|---|"]
    for s in stages:
        lines.append(f"| {LABELS[s.variant]} | {'dense' if s.target_density == 1 else f'{s.target_density:g}'} "
                     f"| {100 * s.accuracy:.2f}% | {s.weight_density:.3f} | {s.activation_density:.3f} "
                     f"| {s.multiplications / 1e6:.2f} | {s.reduction:.1f}x |")
    return "\n".join(lines)


def plot(stages, path):
    """Save a PNG of test accuracy against multiplications (log scale), one line per variant."""
    plt = pyplot("comparison.plot")

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant in dict.fromkeys(s.variant for s in stages):
        rows = [s for s in stages if s.variant == variant]
        ax.plot([s.multiplications / 1e6 for s in rows], [100 * s.accuracy for s in rows], "o-",
                label=LABELS[variant])
    ax.set_xscale("log")
    ax.set_xlabel("multiplications per image in the pruned 3x3 layers (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST, ResNet-18 (small): accuracy vs multiplications", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
