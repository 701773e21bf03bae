"""Training curves from the CSV logs of a run's phases (``keras.callbacks.CSVLogger`` files).

Example:
    >>> plot_training_curves(["run/dense.csv", "run/prune.csv"], "curves.png")  # doctest: +SKIP
"""

import csv
import os

from keras_swcnn._plotting import pyplot


def read_log(path):
    """The epochs of one CSV log as dicts of floats (NA -> None), one per epoch.

    A resumed phase may log an epoch twice (interrupted between the log and
    the checkpoint); the later line wins. Cells a line lacks are None.

    Example:
        >>> read_log("run/dense.csv")[-1]["val_accuracy"]  # doctest: +SKIP
        0.9123
    """
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {key: (None if value in (None, "", "NA") else float(value))
                      for key, value in row.items() if key is not None}
            rows[int(values["epoch"])] = values
    return [rows[epoch] for epoch in sorted(rows)]


def plot_training_curves(log_paths, path, title="Training curves"):
    """Save a PNG of loss and accuracy per epoch, the phases one after another.

    Args:
        log_paths: CSV logs in phase order (missing files are skipped).
        path: the PNG to write.
    """
    plt = pyplot("plot_training_curves")

    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    offset = 0
    for log_path in log_paths:
        if not os.path.exists(log_path):
            continue
        rows = read_log(log_path)
        if not rows:
            continue
        phase = os.path.splitext(os.path.basename(log_path))[0]
        epochs = [offset + i + 1 for i in range(len(rows))]
        for ax, key in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
            ax.plot(epochs, [r.get(key) for r in rows], "o-", ms=3, label=f"{phase} train")
            if any(r.get(f"val_{key}") is not None for r in rows):
                ax.plot(epochs, [r.get(f"val_{key}") for r in rows], "s--", ms=3, label=f"{phase} test")
            if offset:
                ax.axvline(offset + 0.5, color="grey", lw=0.8, ls=":")
        offset += len(rows)
    for ax, label in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
