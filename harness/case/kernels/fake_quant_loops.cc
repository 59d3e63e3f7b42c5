// See fake_quant_loops.h. Built with -DQATBENCH_ISA=<namespace> and that ISA's -m flag. No other header
// than the intrinsics and <cstdint>, and everything but the three entry points has internal linkage, so
// no inline function compiled for a wider ISA can be picked by the linker for the generic build.
#include <cstdint>

#include "fake_quant_loops.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace qatbench {
namespace QATBENCH_ISA {
namespace {

#if defined(__AVX512F__)
using V = __m512;
using NanMask = __mmask16;
constexpr int kWidth = 16;
inline V Load(const float* p) { return _mm512_loadu_ps(p); }
inline void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V Set(float f) { return _mm512_set1_ps(f); }
inline V Min(V a, V b) { return _mm512_min_ps(a, b); }  // x86 min/max: b when either is NaN
inline V Max(V a, V b) { return _mm512_max_ps(a, b); }
inline V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V OneIfInside(V x, V lo, V hi) {
  const __mmask16 inside = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, hi, _CMP_LE_OQ);
  return _mm512_maskz_mov_ps(inside, _mm512_set1_ps(1.0f));
}
inline V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V Add(V a, V b) { return _mm512_add_ps(a, b); }
inline V Floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
inline V Bits(__mmask16 lanes) { return _mm512_castsi512_ps(_mm512_maskz_set1_epi32(lanes, -1)); }
inline V And(V a, V b) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))); }
inline V Or(V a, V b) { return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))); }
inline V IsNan(V x) { return Bits(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)); }
inline V Inside(V x, V lo, V hi) {
  return Bits(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, hi, _CMP_LE_OQ));
}
inline NanMask NoNan() { return 0; }
inline NanMask AddNan(NanMask seen, V x) { return seen | _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q); }
inline bool AnyNan(NanMask seen) { return seen != 0; }
inline void Spill(float* out, V v) { _mm512_storeu_ps(out, v); }
#elif defined(__AVX2__)
using V = __m256;
using NanMask = __m256;
constexpr int kWidth = 8;
inline V Load(const float* p) { return _mm256_loadu_ps(p); }
inline void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V Set(float f) { return _mm256_set1_ps(f); }
inline V Min(V a, V b) { return _mm256_min_ps(a, b); }
inline V Max(V a, V b) { return _mm256_max_ps(a, b); }
inline V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V OneIfInside(V x, V lo, V hi) {
  const V inside = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LE_OQ));
  return _mm256_and_ps(inside, _mm256_set1_ps(1.0f));
}
inline V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V Add(V a, V b) { return _mm256_add_ps(a, b); }
inline V Floor(V a) { return _mm256_floor_ps(a); }
inline V And(V a, V b) { return _mm256_and_ps(a, b); }
inline V Or(V a, V b) { return _mm256_or_ps(a, b); }
inline V IsNan(V x) { return _mm256_cmp_ps(x, x, _CMP_UNORD_Q); }
inline V Inside(V x, V lo, V hi) { return _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LE_OQ)); }
inline NanMask NoNan() { return _mm256_setzero_ps(); }
inline NanMask AddNan(NanMask seen, V x) { return _mm256_or_ps(seen, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
inline bool AnyNan(NanMask seen) { return _mm256_movemask_ps(seen) != 0; }
inline void Spill(float* out, V v) { _mm256_storeu_ps(out, v); }
#elif defined(__SSE2__)
using V = __m128;
using NanMask = __m128;
constexpr int kWidth = 4;
inline V Load(const float* p) { return _mm_loadu_ps(p); }
inline void Store(float* p, V v) { _mm_storeu_ps(p, v); }
inline V Set(float f) { return _mm_set1_ps(f); }
inline V Min(V a, V b) { return _mm_min_ps(a, b); }
inline V Max(V a, V b) { return _mm_max_ps(a, b); }
inline V Mul(V a, V b) { return _mm_mul_ps(a, b); }
inline V OneIfInside(V x, V lo, V hi) {
  return _mm_and_ps(_mm_and_ps(_mm_cmpge_ps(x, lo), _mm_cmple_ps(x, hi)), _mm_set1_ps(1.0f));
}
inline V Sub(V a, V b) { return _mm_sub_ps(a, b); }
inline V Add(V a, V b) { return _mm_add_ps(a, b); }
inline V Floor(V a) {  // SSE2 has no floor instruction
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, a);
  for (float& lane : lanes) lane = __builtin_floorf(lane);
  return _mm_load_ps(lanes);
}
inline V And(V a, V b) { return _mm_and_ps(a, b); }
inline V Or(V a, V b) { return _mm_or_ps(a, b); }
inline V IsNan(V x) { return _mm_cmpunord_ps(x, x); }
inline V Inside(V x, V lo, V hi) { return _mm_and_ps(_mm_cmpge_ps(x, lo), _mm_cmple_ps(x, hi)); }
inline NanMask NoNan() { return _mm_setzero_ps(); }
inline NanMask AddNan(NanMask seen, V x) { return _mm_or_ps(seen, _mm_cmpunord_ps(x, x)); }
inline bool AnyNan(NanMask seen) { return _mm_movemask_ps(seen) != 0; }
inline void Spill(float* out, V v) { _mm_storeu_ps(out, v); }
#else
#define QATBENCH_SCALAR_ONLY 1
constexpr int kWidth = 1;
#endif

// The scalar forms, for tails and CPUs without these ISAs. Like x86's min/max and Eigen's pmin/pmax (which
// swap their arguments so that the tensor's NaN wins), clamping keeps x when x is NaN.
inline bool AllBits(float mask) { return __builtin_bit_cast(uint32_t, mask) != 0; }

inline float ChannelFakeQuantOne(float x, float low, float high, float inv_scale, float quant_zero, float scale) {
  const float upper = high < x ? high : x;
  const float clamped = low > upper ? low : upper;
  return __builtin_floorf((clamped - low) * inv_scale - quant_zero + 0.5f) * scale;
}

}  // namespace

Range ScanRange(const float* values, int64_t begin, int64_t end) {
  Range range{__builtin_inff(), -__builtin_inff(), false};
  int64_t i = begin;
#ifndef QATBENCH_SCALAR_ONLY
  if (end - begin >= 2 * kWidth) {
    V low = Set(range.low), high = Set(range.high), low2 = low, high2 = high;
    NanMask nan = NoNan(), nan2 = NoNan();
    for (; i + 2 * kWidth <= end; i += 2 * kWidth) {
      const V a = Load(values + i), b = Load(values + i + kWidth);
      low = Min(a, low);  // the accumulator is the second operand: a NaN never enters it
      high = Max(a, high);
      low2 = Min(b, low2);
      high2 = Max(b, high2);
      nan = AddNan(nan, a);
      nan2 = AddNan(nan2, b);
    }
    alignas(64) float lows[kWidth], highs[kWidth];
    Spill(lows, Min(low, low2));
    Spill(highs, Max(high, high2));
    for (int j = 0; j < kWidth; ++j) {
      range.low = lows[j] < range.low ? lows[j] : range.low;
      range.high = highs[j] > range.high ? highs[j] : range.high;
    }
    range.nan = AnyNan(nan) || AnyNan(nan2);
  }
#endif
  for (; i < end; ++i) {
    const float v = values[i];
    range.low = v < range.low ? v : range.low;  // false for NaN: NaN is tracked on its own
    range.high = v > range.high ? v : range.high;
    range.nan = range.nan || v != v;
  }
  return range;
}

void MaskGradient(const float* dy, const float* x, float* dx, int64_t begin, int64_t end, float lo, float hi) {
  int64_t i = begin;
#ifndef QATBENCH_SCALAR_ONLY
  const V low = Set(lo), high = Set(hi);
  for (; i + kWidth <= end; i += kWidth) {
    Store(dx + i, Mul(Load(dy + i), OneIfInside(Load(x + i), low, high)));
  }
#endif
  for (; i < end; ++i) {
    dx[i] = dy[i] * ((x[i] >= lo && x[i] <= hi) ? 1.0f : 0.0f);
  }
}

void ChannelRange(const float* x, int64_t channels, int64_t row_begin, int64_t row_end, float* low, float* high,
                  float* nan) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const float* values = x + row * channels;
    int64_t c = 0;
#ifndef QATBENCH_SCALAR_ONLY
    for (; c + kWidth <= channels; c += kWidth) {
      const V v = Load(values + c);
      Store(low + c, Min(v, Load(low + c)));  // the accumulator second: a NaN never enters it
      Store(high + c, Max(v, Load(high + c)));
      Store(nan + c, Or(Load(nan + c), IsNan(v)));
    }
#endif
    for (; c < channels; ++c) {
      const float v = values[c];
      low[c] = v < low[c] ? v : low[c];
      high[c] = v > high[c] ? v : high[c];
      if (v != v) nan[c] = __builtin_bit_cast(float, 0xffffffffu);
    }
  }
}

void ChannelFakeQuant(const float* x, float* y, int64_t channels, int64_t row_begin, int64_t row_end,
                      const ChannelConstants& k) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const float* in = x + row * channels;
    float* out = y + row * channels;
    int64_t c = 0;
#ifndef QATBENCH_SCALAR_ONLY
    const V half = Set(0.5f);
    for (; c + kWidth <= channels; c += kWidth) {
      const V low = Load(k.low + c);
      // Eigen's cwiseMin/cwiseMax packets are min(bound, x) and max(bound, x): x's NaN wins
      const V shifted = Sub(Max(low, Min(Load(k.high + c), Load(in + c))), low);
      const V rounded = Floor(Add(Sub(Mul(shifted, Load(k.inv_scale + c)), Load(k.quant_zero + c)), half));
      Store(out + c, And(Mul(rounded, Load(k.scale + c)), Load(k.keep + c)));
    }
#endif
    for (; c < channels; ++c) {
      const float value = ChannelFakeQuantOne(in[c], k.low[c], k.high[c], k.inv_scale[c], k.quant_zero[c], k.scale[c]);
      out[c] = AllBits(k.keep[c]) ? value : 0.0f;
    }
  }
}

void ChannelMaskGradient(const float* dy, const float* x, float* dx, int64_t channels, int64_t row_begin,
                         int64_t row_end, const ChannelConstants& k) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t offset = row * channels;
    int64_t c = 0;
#ifndef QATBENCH_SCALAR_ONLY
    for (; c + kWidth <= channels; c += kWidth) {
      const V inside = Or(Inside(Load(x + offset + c), Load(k.low + c), Load(k.high + c)), Load(k.pass + c));
      Store(dx + offset + c, And(inside, Load(dy + offset + c)));
    }
#endif
    for (; c < channels; ++c) {
      const float v = x[offset + c];
      const bool inside = (v >= k.low[c] && v <= k.high[c]) || AllBits(k.pass[c]);
      dx[offset + c] = inside ? dy[offset + c] : 0.0f;
    }
  }
}

}  // namespace QATBENCH_ISA
}  // namespace qatbench
