// TensorFlow (XLA legacy custom-call, API_VERSION_STATUS_RETURNING[_UNIFIED])
// entry points for the CPU ("Host") platform, and their registration in the
// XLA custom-call registry of the TensorFlow already loaded in the process.
#pragma once

#include <string>
#include <vector>

namespace swcnn::tensorflow {

// Names of the custom-call targets and their entry points.
struct CustomCallTarget {
  const char* name;
  void* function;
};
std::vector<CustomCallTarget> cpu_targets();

// Registers cpu_targets() for platform "Host" through
// xla::CustomCallTargetRegistry::Global()->Register(...), resolved with dlsym
// in `library` (libtensorflow_cc.so.2, already loaded by `import tensorflow`).
// Returns an empty string on success, else what went wrong.
std::string register_cpu_targets(const std::string& library);

}  // namespace swcnn::tensorflow
