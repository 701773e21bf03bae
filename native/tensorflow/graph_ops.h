// TensorFlow ops for graph and eager mode: the fused CPU kernels as ordinary
// TensorFlow ops (SwcnnConvForward, SwcnnConvBackward,
// SwcnnSparseConvForward), registered through TensorFlow's stable C API
// (tensorflow/c/ops.h and kernels.h) in the TensorFlow already loaded by
// Python. Unlike the XLA custom calls they take a batch of any size at run
// time and report errors as TensorFlow errors (Python exceptions).
#pragma once

#include <string>
#include <vector>

namespace swcnn::tensorflow {

// The op names registered by register_graph_ops.
std::vector<std::string> graph_op_names();

// Registers the ops and their CPU kernels once per process, resolving the C
// API with dlsym in `library` (libtensorflow_framework.so.2, already loaded).
// Returns an empty string on success (also on later calls), else what went
// wrong (then nothing was registered).
std::string register_graph_ops(const std::string& library);

}  // namespace swcnn::tensorflow
