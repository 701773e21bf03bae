"""Training callbacks for pruning: ``UpdatePruningStep`` and ``PruningSummaries``."""

import keras

from keras_swcnn.pruning.api import pruned_layers, weight_sparsity


def _sync_state(model):
    # On JAX, fit keeps the variables outside the model between batches; a
    # sync puts them back so they can be read and assigned (and fit picks up
    # the assigned values for the next batch).
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


class UpdatePruningStep(keras.callbacks.Callback):
    """Keeps pruned weights exactly zero in the stored variables, as tfmot's callback does.

    The pruning step itself advances inside the wrapper's training ``call``
    (so it also works when fit keeps variables outside the model, as on JAX).
    This callback sets an untouched step counter (-1) to 0 when training
    begins, like tfmot, and after every batch (``every_batch=True``) and
    every epoch multiplies each pruned weight by its mask, so optimizer
    updates (momentum, weight decay) never leave non-zeros where the mask is
    zero. On JAX, re-zeroing after every batch syncs the training state each
    batch; pass ``every_batch=False`` to do it only at epoch ends (the layer
    computes with ``weight * mask`` either way).

    Example:
        >>> model.fit(x, y, callbacks=[UpdatePruningStep()])  # doctest: +SKIP
    """

    def __init__(self, every_batch=True):
        super().__init__()
        self.every_batch = every_batch
        self._layers = []

    def on_train_begin(self, logs=None):
        self._layers = pruned_layers(self.model)
        for layer in self._layers:
            if int(keras.ops.convert_to_numpy(layer.pruning_step)) == -1:
                layer.pruning_step.assign(0)

    def _rezero(self):
        if not self._layers:
            return
        _sync_state(self.model)
        for layer in self._layers:
            for weight, masked in zip(layer._pruned, layer.masked_weights()):
                weight.assign(masked)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_batch:
            self._rezero()

    def on_epoch_end(self, epoch, logs=None):
        self._rezero()


class PruningSummaries(keras.callbacks.Callback):
    """Logs each pruned layer's weight sparsity at every epoch end.

    The values go into the epoch logs (so ``History`` records them, under
    ``"<layer name>/sparsity"``) and, when ``log_dir`` is given and TensorFlow
    is installed, into TensorBoard scalars.

    Example:
        >>> history = model.fit(x, y, callbacks=[UpdatePruningStep(), PruningSummaries()])  # doctest: +SKIP
        >>> history.history["prune_low_magnitude_conv/sparsity"]  # doctest: +SKIP
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        _sync_state(self.model)
        values = {f"{layer.layer.name}/sparsity": weight_sparsity(layer)
                  for layer in pruned_layers(self.model)}
        if logs is not None:
            logs.update(values)
        if self.log_dir and values:
            self._write(epoch, values)

    def _write(self, epoch, values):
        try:
            import tensorflow as tf
        except ImportError:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=epoch)
        self._writer.flush()
