// CPU kernels for the training step of tfmot's fake-quants: the per-tensor moving-average quantizer of
// every activation, and the per-channel last-value quantizer of every conv kernel. Each computes exactly
// what TensorFlow's op computes, with less memory traffic and the CPU's widest vectors (fake_quant_loops.cc). Built and loaded by harness/case/native_kernels.py;
// tests/test_native_kernels.py compares them with TensorFlow's ops bit for bit.
//
// QatbenchMinMax: reduce_min and reduce_max of one tensor in one pass (TensorFlow reads it twice).
//   NaN propagates as in TensorFlow's reductions; an empty tensor gives (+inf, -inf).
// QatbenchChannelMinMax: reduce_min and reduce_max over every axis but the last (a conv kernel's output
//   channels), in one pass along contiguous rows (TensorFlow's column reductions read it twice, slowly).
// QatbenchChannelFakeQuant: FakeQuantWithMinMaxVarsPerChannel's forward (TensorFlow 2.21's functor).
// QatbenchChannelFakeQuantInputGradient: its input gradient as harness/case/fakequant.py's straight-through
//   route computes it: dy where nudged_min <= x <= nudged_max, else +0 (no range gradients).
// The per-tensor forward fake-quant stays TensorFlow's op: the same loop in C++ (AVX-512) was no faster in a
// resnet20 step (4.47 against 4.50 ms of op time), since an elementwise pass here costs its memory traffic.
// QatbenchFakeQuantInputGradient: the input gradient of FakeQuantWithMinMaxVars, i.e. the first
//   output of FakeQuantWithMinMaxVarsGradient: gradient * (inside ? 1 : 0). TensorFlow's kernel also
//   reduces the gradients wrt min and max, which tfmot's non-trainable range variables throw away.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <limits>
#include <memory>
#include <vector>

#include "fake_quant_loops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/fake_quant_ops_functor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace qatbench {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;

// Elements per min/max shard, and the cost per element the elementwise kernels give the sharder: large
// enough that a shard's work outweighs the thread pool's dispatch.
constexpr int64_t kBlock = 1 << 14;
constexpr int64_t kElementCost = 4;

REGISTER_OP("QatbenchMinMax")
    .Input("inputs: float")
    .Output("min: float")
    .Output("max: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return absl::OkStatus();
    });

// The two input-gradient ops take the same inputs and attributes; only their range's shape differs.
#define QATBENCH_REGISTER_INPUT_GRADIENT(name)        \
  REGISTER_OP(name)                                   \
      .Input("gradients: float")                      \
      .Input("inputs: float")                         \
      .Input("min: float")                            \
      .Input("max: float")                            \
      .Attr("num_bits: int = 8")                      \
      .Attr("narrow_range: bool = false")             \
      .Output("backprops: float")                     \
      .SetShapeFn([](InferenceContext* c) {           \
        c->set_output(0, c->input(0));                \
        return absl::OkStatus();                      \
      })

QATBENCH_REGISTER_INPUT_GRADIENT("QatbenchFakeQuantInputGradient");
QATBENCH_REGISTER_INPUT_GRADIENT("QatbenchChannelFakeQuantInputGradient");

REGISTER_OP("QatbenchChannelMinMax")
    .Input("inputs: float")
    .Output("min: float")
    .Output("max: float")
    .SetShapeFn([](InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &input));
      c->set_output(0, c->Vector(c->Dim(input, -1)));
      c->set_output(1, c->Vector(c->Dim(input, -1)));
      return absl::OkStatus();
    });

REGISTER_OP("QatbenchChannelFakeQuant")
    .Input("inputs: float")
    .Input("min: float")
    .Input("max: float")
    .Attr("num_bits: int = 8")
    .Attr("narrow_range: bool = false")
    .Output("outputs: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

// The loops for this CPU: AVX-512 or AVX2 where present, else the generic (SSE2 on x86-64) build.
// QATBENCH_NATIVE_ISA=generic|avx2|avx512 picks one (if the CPU has it), so tests cover all three.
struct Loops {
  Range (*scan_range)(const float*, int64_t, int64_t);
  void (*mask_gradient)(const float*, const float*, float*, int64_t, int64_t, float, float);
  void (*channel_range)(const float*, int64_t, int64_t, int64_t, float*, float*, float*);
  void (*channel_fake_quant)(const float*, float*, int64_t, int64_t, int64_t, const ChannelConstants&);
  void (*channel_mask_gradient)(const float*, const float*, float*, int64_t, int64_t, int64_t,
                                const ChannelConstants&);
};

#define QATBENCH_LOOPS(isa) \
  { isa::ScanRange, isa::MaskGradient, isa::ChannelRange, isa::ChannelFakeQuant, isa::ChannelMaskGradient }

static Loops PickLoops() {
#if defined(__x86_64__)
  const char* forced = std::getenv("QATBENCH_NATIVE_ISA");
  const std::string want = forced ? forced : "";
  __builtin_cpu_init();
  if ((want.empty() || want == "avx512") && __builtin_cpu_supports("avx512f")) {
    return QATBENCH_LOOPS(avx512);
  }
  if ((want.empty() || want == "avx2") && __builtin_cpu_supports("avx2")) {
    return QATBENCH_LOOPS(avx2);
  }
#endif
  return QATBENCH_LOOPS(generic);
}

static const Loops& CpuLoops() {
  static const Loops loops = PickLoops();
  return loops;
}

static void ForEachShard(OpKernelContext* context, int64_t total, int64_t cost,
                         const std::function<void(int64_t, int64_t)>& work) {
  auto workers = context->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, total, cost, work);
}

class MinMaxOp : public OpKernel {
 public:
  explicit MinMaxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const float* values = input.flat<float>().data();
    const int64_t size = input.NumElements();
    const int64_t blocks = std::max<int64_t>(1, (size + kBlock - 1) / kBlock);
    std::vector<Range> partial(blocks);
    ForEachShard(context, blocks, kBlock, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        partial[b] = CpuLoops().scan_range(values, b * kBlock, std::min(size, (b + 1) * kBlock));
      }
    });
    Range total{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), false};
    for (const Range& range : partial) {
      total.low = std::min(total.low, range.low);
      total.high = std::max(total.high, range.high);
      total.nan = total.nan || range.nan;
    }
    if (total.nan) {
      total.low = total.high = std::numeric_limits<float>::quiet_NaN();
    }
    Tensor* low = nullptr;
    Tensor* high = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &low));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({}), &high));
    low->scalar<float>()() = total.low;
    high->scalar<float>()() = total.high;
  }
};

// A kernel with fake-quant attributes: the integer range [quant_min, quant_max] they give.
class QuantRangeKernel : public OpKernel {
 public:
  explicit QuantRangeKernel(OpKernelConstruction* context) : OpKernel(context) {
    int num_bits;
    bool narrow_range;
    OP_REQUIRES_OK(context, context->GetAttr("num_bits", &num_bits));
    OP_REQUIRES_OK(context, context->GetAttr("narrow_range", &narrow_range));
    OP_REQUIRES(context, num_bits >= 2 && num_bits <= 16,
                absl::InvalidArgumentError("num_bits must be between 2 and 16, inclusive"));
    quant_min_ = narrow_range ? 1 : 0;
    quant_max_ = (1 << num_bits) - 1;
  }

 protected:
  int quant_min_;
  int quant_max_;
};

class FakeQuantInputGradientOp : public QuantRangeKernel {
 public:
  using QuantRangeKernel::QuantRangeKernel;

  // The clamping range from TensorFlow's own Nudge(); false if min == max == 0, where TensorFlow's kernel
  // passes every gradient through
  bool ReadRange(OpKernelContext* context, int min_input, float* nudged_min, float* nudged_max) {
    const Tensor& min_tensor = context->input(min_input);
    const Tensor& max_tensor = context->input(min_input + 1);
    if (min_tensor.NumElements() != 1 || max_tensor.NumElements() != 1) {
      context->SetStatus(absl::InvalidArgumentError("min and max must be scalars"));
      return false;
    }
    const float min_value = min_tensor.flat<float>()(0);
    const float max_value = max_tensor.flat<float>()(0);
    if (min_value == 0.0f && max_value == 0.0f) return false;
    float scale, inv_scale;
    tensorflow::Nudge(min_value, max_value, quant_min_, quant_max_, nudged_min, nudged_max, &scale, &inv_scale);
    return true;
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& gradients = context->input(0);
    const Tensor& inputs = context->input(1);
    OP_REQUIRES(context, gradients.shape() == inputs.shape(),
                absl::InvalidArgumentError("gradients and inputs must have the same shape"));
    float nudged_min = 0.0f, nudged_max = 0.0f;
    const bool quantize = ReadRange(context, 2, &nudged_min, &nudged_max);
    if (!context->status().ok()) return;
    Tensor* backprops = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, inputs.shape(), &backprops));
    const float* dy = gradients.flat<float>().data();
    const float* x = inputs.flat<float>().data();
    float* dx = backprops->flat<float>().data();
    ForEachShard(context, inputs.NumElements(), kElementCost, [&](int64_t begin, int64_t end) {
      if (quantize) {
        CpuLoops().mask_gradient(dy, x, dx, begin, end, nudged_min, nudged_max);
      } else if (dx != dy) {
        std::copy(dy + begin, dy + end, dx + begin);
      }
    });
  }
};

// A [rows, channels] view of a weight tensor whose last axis holds the channels.
struct ChannelMatrix {
  int64_t rows;
  int64_t channels;
};

static bool ChannelsOf(OpKernelContext* context, const Tensor& inputs, ChannelMatrix* matrix) {
  if (inputs.dims() < 2) {
    context->SetStatus(absl::InvalidArgumentError("per-channel inputs must have rank 2 or more"));
    return false;
  }
  matrix->channels = inputs.dim_size(inputs.dims() - 1);
  matrix->rows = matrix->channels == 0 ? 0 : inputs.NumElements() / matrix->channels;
  return true;
}

// The sharder's cost of one row.
static int64_t RowCost(const ChannelMatrix& m) { return std::max<int64_t>(1, m.channels) * kElementCost; }

class ChannelMinMaxOp : public OpKernel {
 public:
  explicit ChannelMinMaxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    ChannelMatrix m;
    if (!ChannelsOf(context, inputs, &m)) return;
    const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(m.rows, (m.rows * m.channels) / kBlock));
    const int64_t rows_per_shard = m.rows == 0 ? 0 : (m.rows + shards - 1) / shards;
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> low(shards * m.channels, inf), high(shards * m.channels, -inf), nan(shards * m.channels, 0.0f);
    const float* x = inputs.flat<float>().data();
    ForEachShard(context, shards, rows_per_shard * RowCost(m), [&](int64_t first, int64_t last) {
      for (int64_t s = first; s < last; ++s) {
        const int64_t begin = s * rows_per_shard, end = std::min(m.rows, begin + rows_per_shard);
        CpuLoops().channel_range(x, m.channels, begin, end, low.data() + s * m.channels,
                                 high.data() + s * m.channels, nan.data() + s * m.channels);
      }
    });
    Tensor* min_out = nullptr;
    Tensor* max_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({m.channels}), &min_out));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({m.channels}), &max_out));
    auto out_low = min_out->flat<float>();
    auto out_high = max_out->flat<float>();
    for (int64_t c = 0; c < m.channels; ++c) {
      float lo = inf, hi = -inf;
      bool seen_nan = false;
      for (int64_t s = 0; s < shards; ++s) {
        lo = std::min(lo, low[s * m.channels + c]);
        hi = std::max(hi, high[s * m.channels + c]);
        seen_nan = seen_nan || nan[s * m.channels + c] != 0.0f;  // all bits set is a NaN: != 0 holds
      }
      out_low(c) = seen_nan ? std::numeric_limits<float>::quiet_NaN() : lo;
      out_high(c) = seen_nan ? std::numeric_limits<float>::quiet_NaN() : hi;
    }
  }
};

// The per-channel constants of ChannelConstants, computed once per call with TensorFlow's Nudge().
class ChannelConstantsTable {
 public:
  ChannelConstantsTable(const float* min, const float* max, int64_t channels, int quant_min, int quant_max)
      : channels_(channels), values_(kRows * channels, 0.0f) {
    const float all_bits = __builtin_bit_cast(float, 0xffffffffu);
    for (int64_t c = 0; c < channels; ++c) {
      if (min[c] == 0.0f && max[c] == 0.0f) {  // TensorFlow: output 0, pass the gradient
        Row(kPass)[c] = all_bits;
        continue;
      }
      float nudged_min, nudged_max, scale, inv_scale;
      tensorflow::Nudge(min[c], max[c], quant_min, quant_max, &nudged_min, &nudged_max, &scale, &inv_scale);
      Row(kLow)[c] = nudged_min;
      Row(kHigh)[c] = nudged_max;
      Row(kInvScale)[c] = inv_scale;
      Row(kQuantZero)[c] = floor(-nudged_min * inv_scale + 0.5f);  // the functor's own expression
      Row(kScale)[c] = scale;
      Row(kKeep)[c] = all_bits;
    }
  }

  ChannelConstants View() {
    return {Row(kLow), Row(kHigh), Row(kInvScale), Row(kQuantZero), Row(kScale), Row(kKeep), Row(kPass)};
  }

 private:
  enum { kLow, kHigh, kInvScale, kQuantZero, kScale, kKeep, kPass, kRows };
  float* Row(int which) { return values_.data() + which * channels_; }

  int64_t channels_;
  std::vector<float> values_;
};

// What the per-channel fake-quant kernels share: attributes, shapes and the constants table.
class ChannelKernel : public QuantRangeKernel {
 public:
  using QuantRangeKernel::QuantRangeKernel;

 protected:
  // nullptr (and the context's status set) if the inputs do not fit
  std::unique_ptr<ChannelConstantsTable> Constants(OpKernelContext* context, const Tensor& inputs, int min_input,
                                                   ChannelMatrix* m) {
    if (!ChannelsOf(context, inputs, m)) return nullptr;
    const Tensor& min = context->input(min_input);
    const Tensor& max = context->input(min_input + 1);
    if (min.dims() != 1 || max.dims() != 1 || min.dim_size(0) != m->channels || max.dim_size(0) != m->channels) {
      context->SetStatus(absl::InvalidArgumentError("min and max must be vectors of the last dimension's size"));
      return nullptr;
    }
    return std::make_unique<ChannelConstantsTable>(min.flat<float>().data(), max.flat<float>().data(), m->channels,
                                                   quant_min_, quant_max_);
  }
};

class ChannelFakeQuantOp : public ChannelKernel {
 public:
  using ChannelKernel::ChannelKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    ChannelMatrix m;
    auto table = Constants(context, inputs, 1, &m);
    if (!table) return;
    Tensor* outputs = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, inputs.shape(), &outputs));
    const ChannelConstants k = table->View();
    const float* x = inputs.flat<float>().data();
    float* y = outputs->flat<float>().data();
    ForEachShard(context, m.rows, RowCost(m), [&](int64_t begin, int64_t end) {
      CpuLoops().channel_fake_quant(x, y, m.channels, begin, end, k);
    });
  }
};

class ChannelFakeQuantInputGradientOp : public ChannelKernel {
 public:
  using ChannelKernel::ChannelKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& gradients = context->input(0);
    const Tensor& inputs = context->input(1);
    OP_REQUIRES(context, gradients.shape() == inputs.shape(),
                absl::InvalidArgumentError("gradients and inputs must have the same shape"));
    ChannelMatrix m;
    auto table = Constants(context, inputs, 2, &m);
    if (!table) return;
    Tensor* backprops = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, inputs.shape(), &backprops));
    const ChannelConstants k = table->View();
    const float* dy = gradients.flat<float>().data();
    const float* x = inputs.flat<float>().data();
    float* dx = backprops->flat<float>().data();
    ForEachShard(context, m.rows, RowCost(m), [&](int64_t begin, int64_t end) {
      CpuLoops().channel_mask_gradient(dy, x, dx, m.channels, begin, end, k);
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("QatbenchChannelMinMax").Device(DEVICE_CPU), ChannelMinMaxOp);
REGISTER_KERNEL_BUILDER(Name("QatbenchChannelFakeQuant").Device(DEVICE_CPU), ChannelFakeQuantOp);
REGISTER_KERNEL_BUILDER(Name("QatbenchChannelFakeQuantInputGradient").Device(DEVICE_CPU),
                        ChannelFakeQuantInputGradientOp);
REGISTER_KERNEL_BUILDER(Name("QatbenchMinMax").Device(DEVICE_CPU), MinMaxOp);
REGISTER_KERNEL_BUILDER(Name("QatbenchFakeQuantInputGradient").Device(DEVICE_CPU), FakeQuantInputGradientOp);

}  // namespace qatbench
