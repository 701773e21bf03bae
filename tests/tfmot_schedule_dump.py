"""Run in a subprocess (importing tfmot switches TensorFlow to legacy Keras):
print tfmot's (should_prune, sparsity) for the schedule cases given as JSON on stdin."""

import json
import sys

import numpy as np
import tensorflow_model_optimization as tfmot

cases = json.load(sys.stdin)
out = []
for name, kwargs, steps in cases:
    schedule = getattr(tfmot.sparsity.keras, name)(**kwargs)
    rows = []
    for step in steps:
        should_prune, sparsity = schedule(np.int64(step))
        rows.append([bool(should_prune.numpy()), float(np.float32(sparsity.numpy()))])
    out.append(rows)
json.dump(out, sys.stdout)
