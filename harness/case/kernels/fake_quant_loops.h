// The loops of qatbench's activation fake-quant kernels, compiled once per x86 vector ISA (fake_quant_loops.cc
// with -mavx512f, -mavx2, and without: SSE2) into the namespaces below; fake_quant_activation.cc picks one
// at run time from the CPU. Every version computes the same values (IEEE min, max, compares and one
// multiplication are exact), so the vector width changes only the speed.
#ifndef QATBENCH_FAKE_QUANT_LOOPS_H_
#define QATBENCH_FAKE_QUANT_LOOPS_H_

#include <cstdint>

namespace qatbench {

struct Range {
  float low;
  float high;
  bool nan;
};

// Per-channel constants of a [rows, channels] weight matrix (channels last, like tfmot's kernels), one
// float per channel each. From TensorFlow's Nudge(): the clamping range, 1/scale, the quantized zero and
// the scale; keep: all bits set, or 0 for a channel whose min == max == 0 (TensorFlow outputs 0 there and
// passes its gradient through); pass: all bits set for such a channel, else 0.
struct ChannelConstants {
  const float* low;
  const float* high;
  const float* inv_scale;
  const float* quant_zero;
  const float* scale;
  const float* keep;
  const float* pass;
};

// ChannelRange: per-channel min and max of rows [row_begin, row_end), folded into low/high (and NaN seen
// into nan, all bits set) which the caller initialises. ChannelFakeQuant: TensorFlow 2.21's per-channel
// FakeQuantWithMinMaxVarsPerChannel forward. ChannelMaskGradient: dy where nudged_min <= x <= nudged_max
// (or pass), else +0, as harness/case/fakequant.py's straight-through gradient.
#define QATBENCH_DECLARE_LOOPS(isa)                                                                    \
  namespace isa {                                                                                      \
  Range ScanRange(const float* values, int64_t begin, int64_t end);                                    \
  void MaskGradient(const float* dy, const float* x, float* dx, int64_t begin, int64_t end, float lo,  \
                    float hi);                                                                         \
  void ChannelRange(const float* x, int64_t channels, int64_t row_begin, int64_t row_end, float* low,  \
                    float* high, float* nan);                                                          \
  void ChannelFakeQuant(const float* x, float* y, int64_t channels, int64_t row_begin, int64_t row_end, \
                        const ChannelConstants& k);                                                    \
  void ChannelMaskGradient(const float* dy, const float* x, float* dx, int64_t channels,               \
                           int64_t row_begin, int64_t row_end, const ChannelConstants& k);             \
  }

QATBENCH_DECLARE_LOOPS(generic)
#if defined(__x86_64__)
QATBENCH_DECLARE_LOOPS(avx2)
QATBENCH_DECLARE_LOOPS(avx512)
#endif

}  // namespace qatbench

#endif  // QATBENCH_FAKE_QUANT_LOOPS_H_
