// TensorFlow front door: the CPU kernels behind XLA's legacy custom-call
// signature, registered into TensorFlow's own XLA at run time.
//
// TensorFlow is not a build dependency: the registry's two functions are
// looked up with dlsym in the libtensorflow_cc already loaded by Python.
// TensorFlow exports no way for such a kernel to report failure
// (XlaCustomCallStatusSetFailure is not exported), so the Python side
// validates every shape while tracing; the kernels re-validate the opaque
// string and leave the output untouched rather than crash if it is bad.
#include "cpu_custom_calls.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "swcnn/conv.h"
#include "swcnn/sparse_conv.h"
#include "swcnn/transforms.h"

// Registration passes std::string to TensorFlow by reference and looks the
// function up by its C++11-ABI mangled name: a build with the old string ABI
// would find the function and hand it a string of another layout.
#if !defined(_GLIBCXX_USE_CXX11_ABI) || !_GLIBCXX_USE_CXX11_ABI
#error "keras-swcnn's TensorFlow custom calls need libstdc++'s C++11 ABI (_GLIBCXX_USE_CXX11_ABI=1), as TensorFlow's wheels use"
#endif

namespace swcnn::tensorflow {
namespace {

// Parses exactly `count` space-separated integers from the opaque string.
bool parse(const char* opaque, size_t length, int count, int64_t* values) {
  std::string text(opaque, length);
  const char* cursor = text.c_str();
  for (int i = 0; i < count; ++i) {
    char* end = nullptr;
    values[i] = std::strtoll(cursor, &end, 10);
    if (end == cursor) return false;
    cursor = end;
  }
  while (*cursor == ' ') ++cursor;
  return *cursor == '\0';
}

// Opaque "N H W C pad_top pad_left tiles_h tiles_w relu".
bool input_shape(const char* opaque, size_t length, InputTransformShape* s, bool* relu) {
  int64_t v[9];
  if (!parse(opaque, length, 9, v)) return false;
  *s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
  *relu = v[8] != 0;
  return validate(*s).empty();
}

// Opaque "N tiles_h tiles_w K out_h out_w".
bool output_shape(const char* opaque, size_t length, OutputTransformShape* s) {
  int64_t v[6];
  if (!parse(opaque, length, 6, v)) return false;
  *s = {v[0], v[1], v[2], v[3], v[4], v[5]};
  return validate(*s).empty();
}

enum class Parsed { kUnreadable, kInvalid, kValid };

// Opaque "N H W C K pad_top pad_left tiles_h tiles_w out_h out_w relu",
// followed by `extra` more integers stored in `tail` (the sparse call's).
Parsed conv_shape(const char* opaque, size_t length, ConvShape* s, bool* relu, int extra = 0,
                  int64_t* tail = nullptr) {
  int64_t v[16];
  if (extra < 0 || 12 + extra > 16 || !parse(opaque, length, 12 + extra, v))
    return Parsed::kUnreadable;
  *s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]};
  *relu = v[11] != 0;
  std::copy_n(v + 12, extra, tail);
  return validate(*s).empty() ? Parsed::kValid : Parsed::kInvalid;
}

// The element count of a buffer whose sizes come from an opaque that did not
// validate: 0 when a size is negative or the product implausible (then the
// buffer is left alone rather than overrun).
int64_t count_of(std::initializer_list<int64_t> sizes) {
  constexpr int64_t kLimit = int64_t(1) << 40;
  int64_t count = 1;
  for (int64_t size : sizes) {
    if (size < 0 || (size > 0 && count > kLimit / size)) return 0;
    count *= size;
  }
  return count;
}

void poison(std::initializer_list<std::pair<float*, int64_t>> outputs) {
  for (const auto& [data, count] : outputs)
    std::fill_n(data, count, std::numeric_limits<float>::quiet_NaN());
}

// TensorFlow gives these kernels no error channel: a kernel that fails
// (out of scratch memory, say) fills its outputs with NaN, so the failure
// shows in the results instead of as uninitialised memory or a crash.
template <typename Fn>
void run_or_poison(Fn&& fn, std::initializer_list<std::pair<float*, int64_t>> outputs) {
  try {
    fn();
  } catch (...) {
    poison(outputs);
  }
}

extern "C" void SwcnnTfConvForward(void* out, const void** in, const char* opaque,
                                   size_t length, void* /*status*/) {
  ConvShape s;
  bool relu = false;
  const Parsed parsed = conv_shape(opaque, length, &s, &relu);
  if (parsed == Parsed::kUnreadable) return;
  float* y = static_cast<float*>(out);
  if (parsed == Parsed::kInvalid)
    return poison({{y, count_of({s.batch, s.out_h, s.out_w, s.out_channels})}});
  run_or_poison([&] {
    conv_forward_cpu(static_cast<const float*>(in[0]), static_cast<const float*>(in[1]), s,
                     relu, y);
  }, {{y, s.batch * s.out_h * s.out_w * s.out_channels}});
}

// A tuple result: `out` is the table of its two buffers (dx, du).
extern "C" void SwcnnTfConvBackward(void* out, const void** in, const char* opaque,
                                    size_t length, void* /*status*/) {
  ConvShape s;
  bool relu = false;
  const Parsed parsed = conv_shape(opaque, length, &s, &relu);
  if (parsed == Parsed::kUnreadable) return;
  float* dx = static_cast<float**>(out)[0];
  float* du = static_cast<float**>(out)[1];
  if (parsed == Parsed::kInvalid)
    return poison({{dx, count_of({s.batch, s.height, s.width, s.in_channels})},
                   {du, count_of({16, s.in_channels, s.out_channels})}});
  run_or_poison([&] {
    conv_backward_cpu(static_cast<const float*>(in[0]), static_cast<const float*>(in[1]),
                      static_cast<const float*>(in[2]), s, relu, dx, du);
  }, {{dx, s.batch * s.height * s.width * s.in_channels},
      {du, 16 * s.in_channels * s.out_channels}});
}

// Opaque "N H W C K pad_top pad_left tiles_h tiles_w out_h out_w relu count
// mode"; operands x, mask (int32 bits), values. A mask that does not match
// the values (checked by the kernel) poisons the output.
extern "C" void SwcnnTfSparseConvForward(void* out, const void** in, const char* opaque,
                                         size_t length, void* /*status*/) {
  ConvShape s;
  bool relu = false;
  int64_t count_and_mode[2];
  const Parsed parsed = conv_shape(opaque, length, &s, &relu, 2, count_and_mode);
  if (parsed == Parsed::kUnreadable) return;
  float* y = static_cast<float*>(out);
  const int64_t mode = count_and_mode[1];
  if (parsed == Parsed::kInvalid || mode < 0 || mode > 2)
    return poison({{y, count_of({s.batch, s.out_h, s.out_w, s.out_channels})}});
  const SparseKernel u{static_cast<const uint32_t*>(in[1]), static_cast<const float*>(in[2]),
                       count_and_mode[0]};
  run_or_poison([&] {
    sparse_conv_forward_cpu(static_cast<const float*>(in[0]), u, s, relu, y,
                            static_cast<SparseMode>(mode));
  }, {{y, s.batch * s.out_h * s.out_w * s.out_channels}});
}

extern "C" void SwcnnTfInputTransform(void* out, const void** in, const char* opaque,
                                      size_t length, void* /*status*/) {
  InputTransformShape s;
  bool relu = false;
  if (!input_shape(opaque, length, &s, &relu)) return;
  input_transform_cpu(static_cast<const float*>(in[0]), s, relu, static_cast<float*>(out));
}

extern "C" void SwcnnTfInputTransformBackward(void* out, const void** in, const char* opaque,
                                              size_t length, void* /*status*/) {
  InputTransformShape s;
  bool relu = false;
  if (!input_shape(opaque, length, &s, &relu)) return;
  input_transform_backward_cpu(static_cast<const float*>(in[0]),
                               static_cast<const float*>(in[1]), s, relu,
                               static_cast<float*>(out));
}

extern "C" void SwcnnTfOutputTransform(void* out, const void** in, const char* opaque,
                                       size_t length, void* /*status*/) {
  OutputTransformShape s;
  if (!output_shape(opaque, length, &s)) return;
  output_transform_cpu(static_cast<const float*>(in[0]), s, static_cast<float*>(out));
}

extern "C" void SwcnnTfOutputTransformBackward(void* out, const void** in, const char* opaque,
                                               size_t length, void* /*status*/) {
  OutputTransformShape s;
  if (!output_shape(opaque, length, &s)) return;
  output_transform_backward_cpu(static_cast<const float*>(in[0]), s, static_cast<float*>(out));
}

// Mangled names (Itanium ABI, libstdc++'s C++11 std::string) of
//   static CustomCallTargetRegistry* CustomCallTargetRegistry::Global();
//   void CustomCallTargetRegistry::Register(const std::string& symbol,
//                                           void* address,
//                                           const std::string& platform);
constexpr const char* kGlobal = "_ZN3xla24CustomCallTargetRegistry6GlobalEv";
constexpr const char* kRegister =
    "_ZN3xla24CustomCallTargetRegistry8RegisterERKNSt7__cxx1112basic_stringIcSt11char_"
    "traitsIcESaIcEEEPvS8_";

}  // namespace

std::vector<CustomCallTarget> cpu_targets() {
  return {
      {"swcnn_tf_input_transform", reinterpret_cast<void*>(&SwcnnTfInputTransform)},
      {"swcnn_tf_input_transform_backward",
       reinterpret_cast<void*>(&SwcnnTfInputTransformBackward)},
      {"swcnn_tf_output_transform", reinterpret_cast<void*>(&SwcnnTfOutputTransform)},
      {"swcnn_tf_output_transform_backward",
       reinterpret_cast<void*>(&SwcnnTfOutputTransformBackward)},
      {"swcnn_tf_conv_forward", reinterpret_cast<void*>(&SwcnnTfConvForward)},
      {"swcnn_tf_conv_backward", reinterpret_cast<void*>(&SwcnnTfConvBackward)},
      {"swcnn_tf_sparse_conv_forward", reinterpret_cast<void*>(&SwcnnTfSparseConvForward)},
  };
}

std::string register_cpu_targets(const std::string& library) {
  // RTLD_NOLOAD: only use a TensorFlow that Python already loaded.
  void* handle = dlopen(library.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return "TensorFlow library not loaded: " + library;
  using GlobalFn = void* (*)();
  // A non-static member function is called like a function taking `this` first.
  using RegisterFn = void (*)(void*, const std::string&, void*, const std::string&);
  auto global = reinterpret_cast<GlobalFn>(dlsym(handle, kGlobal));
  auto register_target = reinterpret_cast<RegisterFn>(dlsym(handle, kRegister));
  std::string error;
  if (global == nullptr || register_target == nullptr) {
    error = "xla::CustomCallTargetRegistry is not exported by " + library;
  } else {
    void* registry = global();
    const std::string platform = "Host";
    for (const CustomCallTarget& target : cpu_targets())
      register_target(registry, target.name, target.function, platform);
  }
  dlclose(handle);  // balances dlopen; the library stays loaded
  return error;
}

}  // namespace swcnn::tensorflow
