"""tfmot end to end on the tf_keras WinogradReLUConv2D (run as a subprocess: importing tfmot
switches TensorFlow to legacy Keras for the whole process). Prints OK lines; exits non-zero on failure."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from keras_swcnn.integrations.tfmot import WinogradReLUConv2D, copy_weights  # noqa: E402
from numpy_reference import conv, rel_error  # noqa: E402

sparsity = tfmot.sparsity.keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude,
)
rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32))
x = rng.standard_normal((24, 8, 7, 4)).astype("float32")
y = rng.standard_normal((24, 3)).astype("float32")


def model(implementation):
    tf_keras.utils.set_random_seed(3)
    return tf_keras.Sequential([
        tf_keras.Input((8, 7, 4)),
        WinogradReLUConv2D(8, implementation=implementation, name="w1"),
        tf_keras.layers.BatchNormalization(),
        WinogradReLUConv2D(8, padding="valid", use_bias=True, implementation=implementation, name="w2"),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(3),
    ])


# 1. The layer computes keras-swcnn's function (native and reference agree with numpy).
for implementation in ("native", "reference"):
    layer = model(implementation).get_layer("w1")
    u = layer.kernel.numpy()
    assert rel_error(layer(x).numpy(), conv(x, u)) < 1e-5, implementation
print("OK forward matches numpy (native and reference)")

# 2. tfmot's prune_low_magnitude -> fit with UpdatePruningStep -> target sparsity -> strip.
base = model("auto")
pruned = sparsity.prune_low_magnitude(
    base, pruning_schedule=sparsity.ConstantSparsity(0.75, begin_step=0, frequency=2))
pruned.compile("adam", "mse")
pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
checked = 0
for wrapper in pruned.layers:
    if isinstance(wrapper, PruneLowMagnitude) and isinstance(wrapper.layer, WinogradReLUConv2D):
        checked += 1
        kernel = wrapper.layer.kernel.numpy()
        n = kernel.size
        assert (kernel == 0).sum() == n - round(n * 0.25), ((kernel == 0).sum(), n)
assert checked == 2, checked
stripped = sparsity.strip_pruning(pruned)
assert not any(isinstance(l, PruneLowMagnitude) for l in stripped.layers)
np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
print("OK tfmot prune_low_magnitude / UpdatePruningStep / strip_pruning (75% of each Winograd kernel)")

# 3. 2:4 structured sparsity, grouped along input channels.
pruned = sparsity.prune_low_magnitude(model("auto"), sparsity_m_by_n=(2, 4))
pruned.compile("adam", "mse")
pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
stripped = sparsity.strip_pruning(pruned)
for name in ("w1", "w2"):
    kernel = stripped.get_layer(name).kernel.numpy()  # (4, 4, C_in=4 or 8, C_out)
    groups = np.moveaxis(kernel, 2, -1).reshape(-1, kernel.shape[2] // 4, 4)
    assert np.all((groups == 0).sum(-1) >= 2), name
print("OK sparsity_m_by_n=(2, 4) along input channels")

# 4. Weights convert to and from the Keras 3 layer in one call, same outputs.
import keras  # noqa: E402
from keras_swcnn.layers import WinogradReLUConv2D as Keras3Layer  # noqa: E402

source = stripped.get_layer("w2")
twin = Keras3Layer(8, padding="valid", use_bias=True)
twin.build((None, 8, 7, 8))
copy_weights(source, twin)
x2 = rng.standard_normal((2, 8, 7, 8)).astype("float32")
np.testing.assert_allclose(keras.ops.convert_to_numpy(twin(x2)), source(x2).numpy(), rtol=1e-5, atol=1e-5)
back = WinogradReLUConv2D(8, padding="valid", use_bias=True)
back.build((None, 8, 7, 8))
copy_weights(twin, back)
np.testing.assert_array_equal(back.kernel.numpy(), source.kernel.numpy())
print("OK weights convert between tf_keras and Keras 3")

# 5. The stripped model converts with TFLiteConverter (the tfmot deployment path: "auto" is the
#    portable lowering while the converter traces) and runs in the interpreter.
import tensorflow as tf  # noqa: E402

from keras_swcnn.export import litert_outputs  # noqa: E402

flatbuffer = tf.lite.TFLiteConverter.from_keras_model(stripped).convert()
assert rel_error(litert_outputs(flatbuffer, x), stripped.predict(x, verbose=0)) < 1e-5
print("OK TFLiteConverter: the stripped model runs in the TFLite interpreter")

# 6. The twin checks its arguments with the Keras 3 layer's rules (one home for them).
assert WinogradReLUConv2D(4, padding="SAME").padding == "same"
for bad, message in (({"padding": "full"}, "padding must be"), ({"filters": 0}, "filters must be"),
                     ({"filters": True}, "filters must be"),
                     ({"implementation": "fast"}, "implementation must be"),
                     ({"winograd_activation": "gelu"}, "winograd_activation must be")):
    try:
        WinogradReLUConv2D(**{"filters": 4, **bad})
    except ValueError as error:
        assert message in str(error), error
    else:
        raise AssertionError(f"accepted {bad}")
print("OK the twin checks its arguments with the Keras 3 layer's rules")
