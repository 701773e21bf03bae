"""Data augmentation for Fashion-MNIST training, deterministic per (seed, epoch, batch).

Three transforms, each drawn per image (numpy, so every Keras backend feeds
the same batches):

- **random crop**: the image zero-padded by ``pad`` pixels on every side, then a
  window of the original size at a random offset (a shift of up to ``pad``);
- **horizontal flip** with probability 1/2 (Fashion-MNIST's classes are
  left-right symmetric: a mirrored shoe is still a shoe);
- **random erasing** (Zhong et al., 2017) with probability ``erase_probability``:
  a rectangle of 2%-40% of the image area, aspect ratio 0.3-3.3, filled with
  uniform noise.

``AugmentedBatches`` is the ``keras.utils.PyDataset`` that ``fit`` reads: the
order of an epoch and every random draw of a batch come from
``numpy.random.default_rng((seed, epoch[, batch]))``, so a run resumed from a
checkpoint at epoch ``e`` sees exactly the batches an uninterrupted run sees.
The epoch is set by ``fit`` itself through the callback ``batches.epoch_callback()``.

Example:
    >>> import numpy as np
    >>> x = np.random.rand(10, 28, 28, 1).astype("float32")
    >>> augment_images(x, np.random.default_rng(0)).shape
    (10, 28, 28, 1)
    >>> batches = AugmentedBatches(x, np.arange(10), batch_size=4, seed=0)
    >>> len(batches), batches[0][0].shape
    (3, (4, 28, 28, 1))
"""

import math

import numpy as np
import keras

#: Random erasing's rectangle: fraction of the image area and aspect-ratio range.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)


def _check_images(x):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"Images must be a (batch, height, width, channels) array, got shape {x.shape}.")
    return x


def random_crop(x, rng, pad):
    """Each image shifted by up to ``pad`` pixels (zero fill): a crop of the zero-padded image."""
    n, h, w, _ = x.shape
    if pad == 0:
        return x.copy()
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = rng.integers(0, 2 * pad + 1, n)
    left = rng.integers(0, 2 * pad + 1, n)
    rows = top[:, None, None] + np.arange(h)[None, :, None]
    cols = left[:, None, None] + np.arange(w)[None, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(x, rng):
    """Each image mirrored left-right with probability 1/2."""
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


def random_erasing(x, rng, probability):
    """A random rectangle of each chosen image replaced by uniform noise in [0, 1)."""
    n, h, w, c = x.shape
    area = rng.uniform(*ERASE_AREA, n) * h * w
    aspect = np.exp(rng.uniform(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]), n))
    height = np.clip(np.round(np.sqrt(area * aspect)), 1, h).astype(int)
    width = np.clip(np.round(np.sqrt(area / aspect)), 1, w).astype(int)
    top = (rng.random(n) * (h - height + 1)).astype(int)
    left = (rng.random(n) * (w - width + 1)).astype(int)
    chosen = rng.random(n) < probability
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + height)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + width)[:, None, None])
              & chosen[:, None, None])
    noise = rng.random(x.shape, dtype=np.float32).astype(x.dtype)
    return np.where(inside[..., None], noise, x)


def augment_images(x, rng, pad=2, flip=True, erase_probability=0.5):
    """Random crop, flip and erasing of a batch of NHWC images in [0, 1].

    Args:
        x: images, shape (batch, height, width, channels).
        rng: a ``numpy.random.Generator``: the only source of randomness.
        pad: largest shift of the random crop, in pixels (0: no crop).
        flip: mirror half of the images left-right.
        erase_probability: fraction of images that get a random erasing (0: none).
    """
    x = random_crop(_check_images(x), rng, int(pad))
    if flip:
        x = random_flip(x, rng)
    if erase_probability:
        x = random_erasing(x, rng, erase_probability)
    return x


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, augmented batches of ``(x, y)`` for ``fit``, reproducible per epoch.

    Pass ``batches.epoch_callback()`` in ``fit``'s callbacks: it tells the
    dataset which epoch is starting (``initial_epoch`` included, so a resumed
    run replays the same epoch). With ``augment=False`` the batches are only
    shuffled. ``seed`` is an int or a tuple of ints; ``steps`` caps the
    batches of an epoch (each epoch then sees another random part of the data).

    Example:
        >>> import numpy as np
        >>> batches = AugmentedBatches(np.zeros((6, 28, 28, 1), "float32"), np.arange(6), 4, seed=1)
        >>> model.fit(batches, epochs=2, callbacks=[batches.epoch_callback()])  # doctest: +SKIP
    """

    def __init__(self, x, y, batch_size, seed=0, augment=True, pad=2, flip=True,
                 erase_probability=0.5, steps=None, **kwargs):
        super().__init__(**kwargs)
        self.x = _check_images(x)
        self.y = np.asarray(y)
        if len(self.x) != len(self.y) or not len(self.x):
            raise ValueError(f"x and y must hold the same, non-zero number of samples; got "
                             f"{len(self.x)} and {len(self.y)}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.seed = tuple(int(s) for s in np.atleast_1d(seed))
        self.steps = math.ceil(len(self.x) / self.batch_size)
        if steps is not None:
            if int(steps) < 1:
                raise ValueError(f"steps must be a positive integer, got {steps!r}.")
            self.steps = min(self.steps, int(steps))
        self.augment = augment
        self.options = dict(pad=pad, flip=flip, erase_probability=erase_probability)
        self.epoch = 0
        self._order = None

    def __len__(self):
        return self.steps

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self._order = None

    def _epoch_order(self):
        if self._order is None:
            self._order = np.random.default_rng(self.seed + (self.epoch,)).permutation(len(self.x))
        return self._order

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} out of range for {len(self)} batches.")
        rows = self._epoch_order()[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.x[rows]
        if self.augment:
            x = augment_images(x, np.random.default_rng(self.seed + (self.epoch, index)), **self.options)
        return x, self.y[rows]

    def epoch_callback(self):
        """A callback that sets this dataset's epoch at the start of each ``fit`` epoch."""
        return _EpochSync(self)


class _EpochSync(keras.callbacks.Callback):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
