// TensorFlow graph/eager front door: the fused CPU kernels as TensorFlow ops.
//
// TensorFlow is not a build dependency: the few functions of its stable C API
// used here (tensorflow/c/ops.h, kernels.h, tf_tensor.h, tf_status.h) are
// declared below by their C signatures and looked up with dlsym in the
// libtensorflow_framework that Python already loaded. The attributes carry
// the tile geometry, which the Python side computes once per call site; the
// batch is read from the input at run time, so one op serves any batch size
// (model.fit traces with an unknown one). Every shape is checked again here
// and a bad one fails the op with InvalidArgument, so it reaches Python as an
// exception; so does running out of memory (ResourceExhausted).
#include "graph_ops.h"

#include <dlfcn.h>

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "swcnn/conv.h"
#include "swcnn/sparse_conv.h"

extern "C" {
struct TF_Status;
struct TF_Tensor;
struct TF_OpKernelConstruction;
struct TF_OpKernelContext;
struct TF_KernelBuilder;
struct TF_OpDefinitionBuilder;
struct TF_ShapeInferenceContext;
struct TF_ShapeHandle;
}

namespace swcnn::tensorflow {
namespace {

// TF_DataType and TF_Code values used here (fixed by the C API).
constexpr int kFloat = 1, kInt32 = 3;
constexpr int kOk = 0, kInvalidArgument = 3, kResourceExhausted = 8, kInternal = 13;

// The C API functions, resolved once by `load`.
struct Api {
  TF_Status* (*NewStatus)();
  void (*DeleteStatus)(TF_Status*);
  void (*SetStatus)(TF_Status*, int, const char*);
  int (*GetCode)(const TF_Status*);
  const char* (*Message)(const TF_Status*);
  TF_OpDefinitionBuilder* (*NewOpDefinitionBuilder)(const char*);
  void (*AddInput)(TF_OpDefinitionBuilder*, const char*);
  void (*AddOutput)(TF_OpDefinitionBuilder*, const char*);
  void (*AddAttr)(TF_OpDefinitionBuilder*, const char*);
  void (*SetShapeFunction)(TF_OpDefinitionBuilder*,
                           void (*)(TF_ShapeInferenceContext*, TF_Status*));
  void (*RegisterOpDefinition)(TF_OpDefinitionBuilder*, TF_Status*);
  TF_ShapeHandle* (*NewShapeHandle)();
  void (*DeleteShapeHandle)(TF_ShapeHandle*);
  void (*GetShapeInput)(TF_ShapeInferenceContext*, int, TF_ShapeHandle*, TF_Status*);
  void (*SetShapeOutput)(TF_ShapeInferenceContext*, int, TF_ShapeHandle*, TF_Status*);
  void (*SetUnknownShape)(TF_ShapeInferenceContext*, TF_Status*);
  TF_KernelBuilder* (*NewKernelBuilder)(const char*, const char*,
                                        void* (*)(TF_OpKernelConstruction*),
                                        void (*)(void*, TF_OpKernelContext*),
                                        void (*)(void*));
  void (*RegisterKernelBuilder)(const char*, TF_KernelBuilder*, TF_Status*);
  void (*GetAttrInt64)(TF_OpKernelConstruction*, const char*, int64_t*, TF_Status*);
  void (*ConstructionFailure)(TF_OpKernelConstruction*, TF_Status*);
  void (*GetInput)(TF_OpKernelContext*, int, TF_Tensor**, TF_Status*);
  TF_Tensor* (*AllocateOutput)(TF_OpKernelContext*, int, int, const int64_t*, int, size_t,
                               TF_Status*);
  void (*ContextFailure)(TF_OpKernelContext*, TF_Status*);
  int (*NumDims)(const TF_Tensor*);
  int64_t (*Dim)(const TF_Tensor*, int);
  int (*TensorType)(const TF_Tensor*);
  void* (*TensorData)(const TF_Tensor*);
  void (*DeleteTensor)(TF_Tensor*);
};

Api api;

// Resolves every function of `api` in `handle`; the name of the first missing
// one, or empty.
std::string load(void* handle) {
  std::string missing;
  auto find = [&](auto& slot, const char* name) {
    void* symbol = dlsym(handle, name);
    if (symbol == nullptr && missing.empty()) missing = name;
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(symbol);
  };
  find(api.NewStatus, "TF_NewStatus");
  find(api.DeleteStatus, "TF_DeleteStatus");
  find(api.SetStatus, "TF_SetStatus");
  find(api.GetCode, "TF_GetCode");
  find(api.Message, "TF_Message");
  find(api.NewOpDefinitionBuilder, "TF_NewOpDefinitionBuilder");
  find(api.AddInput, "TF_OpDefinitionBuilderAddInput");
  find(api.AddOutput, "TF_OpDefinitionBuilderAddOutput");
  find(api.AddAttr, "TF_OpDefinitionBuilderAddAttr");
  find(api.SetShapeFunction, "TF_OpDefinitionBuilderSetShapeInferenceFunction");
  find(api.RegisterOpDefinition, "TF_RegisterOpDefinition");
  find(api.NewShapeHandle, "TF_NewShapeHandle");
  find(api.DeleteShapeHandle, "TF_DeleteShapeHandle");
  find(api.GetShapeInput, "TF_ShapeInferenceContextGetInput");
  find(api.SetShapeOutput, "TF_ShapeInferenceContextSetOutput");
  find(api.SetUnknownShape, "TF_ShapeInferenceContextSetUnknownShape");
  find(api.NewKernelBuilder, "TF_NewKernelBuilder");
  find(api.RegisterKernelBuilder, "TF_RegisterKernelBuilder");
  find(api.GetAttrInt64, "TF_OpKernelConstruction_GetAttrInt64");
  find(api.ConstructionFailure, "TF_OpKernelConstruction_Failure");
  find(api.GetInput, "TF_GetInput");
  find(api.AllocateOutput, "TF_AllocateOutput");
  find(api.ContextFailure, "TF_OpKernelContext_Failure");
  find(api.NumDims, "TF_NumDims");
  find(api.Dim, "TF_Dim");
  find(api.TensorType, "TF_TensorType");
  find(api.TensorData, "TF_TensorData");
  find(api.DeleteTensor, "TF_DeleteTensor");
  return missing;
}

// A TF_Status that frees itself.
class Status {
 public:
  Status() : status_(api.NewStatus()) {}
  ~Status() { api.DeleteStatus(status_); }
  Status(const Status&) = delete;
  Status& operator=(const Status&) = delete;
  TF_Status* get() const { return status_; }
  bool ok() const { return api.GetCode(status_) == kOk; }
  void set(int code, const std::string& message) { api.SetStatus(status_, code, message.c_str()); }

 private:
  TF_Status* status_;
};

// The geometry attributes every op carries (set by the Python side from the
// static height and width; the batch comes from the input). relu is an int
// (0 or 1) so that one attribute reader serves them all.
struct Geometry {
  int64_t pad_top = 0, pad_left = 0, tiles_h = 0, tiles_w = 0, out_h = 0, out_w = 0;
  int64_t relu = 1;
  int64_t mode = 0;  // the sparse op's SparseMode
};

constexpr const char* kGeometryAttrs[] = {"pad_top: int", "pad_left: int", "tiles_h: int",
                                          "tiles_w: int", "out_h: int",   "out_w: int",
                                          "relu: int"};

void* create_kernel(TF_OpKernelConstruction* construction, bool sparse) {
  auto* g = new Geometry;
  std::vector<std::pair<const char*, int64_t*>> attrs = {
      {"pad_top", &g->pad_top}, {"pad_left", &g->pad_left}, {"tiles_h", &g->tiles_h},
      {"tiles_w", &g->tiles_w}, {"out_h", &g->out_h},       {"out_w", &g->out_w},
      {"relu", &g->relu}};
  if (sparse) attrs.push_back({"mode", &g->mode});
  Status status;
  for (const auto& [name, value] : attrs) {
    api.GetAttrInt64(construction, name, value, status.get());
    if (!status.ok()) {
      api.ConstructionFailure(construction, status.get());
      break;
    }
  }
  return g;
}

void* create_dense(TF_OpKernelConstruction* c) { return create_kernel(c, false); }
void* create_sparse(TF_OpKernelConstruction* c) { return create_kernel(c, true); }
void delete_kernel(void* kernel) { delete static_cast<Geometry*>(kernel); }

// The inputs of one op call, released when the call ends.
class Inputs {
 public:
  explicit Inputs(TF_OpKernelContext* context) : context_(context) {}
  ~Inputs() {
    for (TF_Tensor* tensor : tensors_) api.DeleteTensor(tensor);
  }
  Inputs(const Inputs&) = delete;
  Inputs& operator=(const Inputs&) = delete;

  // Input i, which must have `rank` dimensions and the given dtype.
  TF_Tensor* get(int i, int rank, int dtype, const char* name) {
    Status status;
    TF_Tensor* tensor = nullptr;
    api.GetInput(context_, i, &tensor, status.get());
    if (!status.ok()) throw std::runtime_error(api.Message(status.get()));
    tensors_.push_back(tensor);
    if (api.NumDims(tensor) != rank || api.TensorType(tensor) != dtype)
      throw std::invalid_argument(std::string(name) + " must be a " + std::to_string(rank) +
                                  "-D " + (dtype == kFloat ? "float32" : "int32") + " tensor");
    return tensor;
  }

 private:
  TF_OpKernelContext* context_;
  std::vector<TF_Tensor*> tensors_;
};

int64_t dim(TF_Tensor* t, int i) { return api.Dim(t, i); }

template <typename T>
T* data(TF_Tensor* t) {
  return static_cast<T*>(api.TensorData(t));
}

// Output i of the given shape (owned by TensorFlow once allocated).
float* allocate(TF_OpKernelContext* context, int i, std::initializer_list<int64_t> dims) {
  std::vector<int64_t> shape(dims);
  size_t bytes = sizeof(float);
  for (int64_t d : shape) bytes *= size_t(d);
  Status status;
  TF_Tensor* tensor = api.AllocateOutput(context, i, kFloat, shape.data(), int(shape.size()),
                                         bytes, status.get());
  if (!status.ok() || tensor == nullptr) throw std::bad_alloc();
  float* result = data<float>(tensor);
  api.DeleteTensor(tensor);  // the context keeps the output alive
  return result;
}

// The convolution's shape from x [N, H, W, C], K and the attributes; throws
// std::invalid_argument naming the problem.
ConvShape conv_shape(TF_Tensor* x, int64_t k, const Geometry& g) {
  const ConvShape s{dim(x, 0),   dim(x, 1),  dim(x, 2),  dim(x, 3),  k,        g.pad_top,
                    g.pad_left, g.tiles_h, g.tiles_w, g.out_h, g.out_w};
  const std::string error = validate(s);
  if (!error.empty()) throw std::invalid_argument(error);
  return s;
}

// Runs `body(geometry, inputs)` for one call of the op whose kernel state is
// `kernel`, turning its exceptions into the op's failure status.
template <typename Fn>
void run(void* kernel, TF_OpKernelContext* context, Fn&& body) {
  Status status;
  try {
    Inputs in(context);
    body(*static_cast<const Geometry*>(kernel), in);
    return;
  } catch (const std::invalid_argument& error) {
    status.set(kInvalidArgument, std::string("keras_swcnn: ") + error.what());
  } catch (const std::bad_alloc&) {
    status.set(kResourceExhausted, "keras_swcnn: out of memory in the Winograd convolution");
  } catch (const std::exception& error) {
    status.set(kInternal, std::string("keras_swcnn: ") + error.what());
  }
  api.ContextFailure(context, status.get());
}

// The dense ops' first two inputs, x [N, H, W, C] and u [16, C, K], and the
// convolution's shape; throws std::invalid_argument naming what does not fit.
struct DenseOperands {
  TF_Tensor* x;
  TF_Tensor* u;
  ConvShape s;
};

DenseOperands dense_operands(Inputs& in, const Geometry& g) {
  TF_Tensor* x = in.get(0, 4, kFloat, "x");
  TF_Tensor* u = in.get(1, 3, kFloat, "u");
  if (dim(u, 0) != 16 || dim(u, 1) != dim(x, 3))
    throw std::invalid_argument("u must have shape [16, C, K] for the input's C");
  return {x, u, conv_shape(x, dim(u, 2), g)};
}

void compute_forward(void* kernel, TF_OpKernelContext* context) {
  run(kernel, context, [&](const Geometry& g, Inputs& in) {
    const auto [x, u, s] = dense_operands(in, g);
    float* y = allocate(context, 0, {s.batch, s.out_h, s.out_w, s.out_channels});
    conv_forward_cpu(data<float>(x), data<float>(u), s, g.relu != 0, y);
  });
}

void compute_backward(void* kernel, TF_OpKernelContext* context) {
  run(kernel, context, [&](const Geometry& g, Inputs& in) {
    const auto [x, u, s] = dense_operands(in, g);
    TF_Tensor* dy = in.get(2, 4, kFloat, "dy");
    if (dim(dy, 0) != s.batch || dim(dy, 1) != s.out_h || dim(dy, 2) != s.out_w ||
        dim(dy, 3) != s.out_channels)
      throw std::invalid_argument("dy must have shape [N, out_h, out_w, K] of the output");
    float* dx = allocate(context, 0, {s.batch, s.height, s.width, s.in_channels});
    float* du = allocate(context, 1, {16, s.in_channels, s.out_channels});
    conv_backward_cpu(data<float>(x), data<float>(u), data<float>(dy), s, g.relu != 0, dx, du);
  });
}

void compute_sparse_forward(void* kernel, TF_OpKernelContext* context) {
  run(kernel, context, [&](const Geometry& g, Inputs& in) {
    TF_Tensor* x = in.get(0, 4, kFloat, "x");
    TF_Tensor* mask = in.get(1, 3, kInt32, "mask");
    TF_Tensor* values = in.get(2, 1, kFloat, "values");
    if (dim(mask, 0) != 16 || dim(mask, 2) != sparse_mask_words(dim(x, 3)))
      throw std::invalid_argument("mask must have shape [16, K, ceil(C / 32)] for the input's C");
    if (g.mode < 0 || g.mode > 2) throw std::invalid_argument("mode must be 0, 1 or 2");
    const ConvShape s = conv_shape(x, dim(mask, 1), g);
    const SparseKernel u{data<const uint32_t>(mask), data<const float>(values), dim(values, 0)};
    float* y = allocate(context, 0, {s.batch, s.out_h, s.out_w, s.out_channels});
    sparse_conv_forward_cpu(data<float>(x), u, s, g.relu != 0, y, static_cast<SparseMode>(g.mode));
  });
}

// Shape functions. The C API cannot build a shape from attribute values, so
// the forward ops' output shape is left unknown here and set by the Python
// side, which computed it; the backward's outputs have its inputs' shapes.
void forward_shape(TF_ShapeInferenceContext* context, TF_Status* status) {
  api.SetUnknownShape(context, status);
}

void backward_shape(TF_ShapeInferenceContext* context, TF_Status* status) {
  for (int i = 0; i < 2 && api.GetCode(status) == kOk; ++i) {
    TF_ShapeHandle* shape = api.NewShapeHandle();
    api.GetShapeInput(context, i, shape, status);
    if (api.GetCode(status) == kOk) api.SetShapeOutput(context, i, shape, status);
    api.DeleteShapeHandle(shape);
  }
}

struct OpSpec {
  const char* name;
  std::vector<const char*> inputs, outputs, extra_attrs;
  void (*shape)(TF_ShapeInferenceContext*, TF_Status*);
  void* (*create)(TF_OpKernelConstruction*);
  void (*compute)(void*, TF_OpKernelContext*);
};

const std::vector<OpSpec>& op_specs() {
  static const std::vector<OpSpec> specs = {
      {"SwcnnConvForward", {"x: float", "u: float"}, {"y: float"}, {},
       forward_shape, create_dense, compute_forward},
      {"SwcnnConvBackward", {"x: float", "u: float", "dy: float"}, {"dx: float", "du: float"}, {},
       backward_shape, create_dense, compute_backward},
      {"SwcnnSparseConvForward", {"x: float", "mask: int32", "values: float"}, {"y: float"},
       {"mode: int"}, forward_shape, create_sparse, compute_sparse_forward},
  };
  return specs;
}

std::string register_all() {
  Status status;
  for (const OpSpec& spec : op_specs()) {
    TF_OpDefinitionBuilder* op = api.NewOpDefinitionBuilder(spec.name);
    for (const char* input : spec.inputs) api.AddInput(op, input);
    for (const char* output : spec.outputs) api.AddOutput(op, output);
    for (const char* attr : kGeometryAttrs) api.AddAttr(op, attr);
    for (const char* attr : spec.extra_attrs) api.AddAttr(op, attr);
    api.SetShapeFunction(op, spec.shape);
    api.RegisterOpDefinition(op, status.get());
    if (!status.ok()) return std::string("registering ") + spec.name + ": " + api.Message(status.get());
    TF_KernelBuilder* kernel =
        api.NewKernelBuilder(spec.name, "CPU", spec.create, spec.compute, &delete_kernel);
    api.RegisterKernelBuilder((std::string(spec.name) + "Cpu").c_str(), kernel, status.get());
    if (!status.ok())
      return std::string("registering the kernel of ") + spec.name + ": " +
             api.Message(status.get());
  }
  return {};
}

}  // namespace

std::vector<std::string> graph_op_names() {
  std::vector<std::string> names;
  for (const OpSpec& spec : op_specs()) names.push_back(spec.name);
  return names;
}

std::string register_graph_ops(const std::string& library) {
  // TensorFlow aborts the process when an op name is registered twice, so
  // the first attempt's outcome is final.
  static std::once_flag once;
  static std::string outcome;
  std::call_once(once, [&] {
    // RTLD_NOLOAD: only use a TensorFlow that Python already loaded.
    void* handle = dlopen(library.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) {
      outcome = "TensorFlow library not loaded: " + library;
      return;
    }
    const std::string missing = load(handle);
    // The library stays loaded (TensorFlow holds it), so the pointers stay valid.
    dlclose(handle);
    outcome = missing.empty() ? register_all() : missing + " is not exported by " + library;
  });
  return outcome;
}

}  // namespace swcnn::tensorflow
