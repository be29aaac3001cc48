// CPU kernels for the decode step: a step reads every weight once for a few rows of activations, so its
// speed is the rate at which these loops stream weights from memory.
//
// - linear_rows: y_i = x @ W_i.T for a few rows of x and one or more weights at once (q, k, v in one call),
//   for fp32, bf16, int8 (+ per-row scale) and int4 (+ per-group scale) weights. Each thread cuts its rows
//   into a few parts and walks them side by side, whole rows front to back: a few sequential streams per
//   core (measured faster than one, and than neighbouring rows), with several independent accumulators so
//   the loop waits on memory, not on the previous multiply-add.
// - decode_block: a whole transformer block for one new token per sequence, one call per layer: RMS norms,
//   q/k/v in one linear_rows pass, then (decode_attention) RoPE, QK-norm and scale, the key/value written
//   into the cache in place, attention over that sequence's visible keys (sliding window, grouped KV
//   heads), the MLP and both residuals.
// - rms_norm: for the few rows outside the blocks (the final norm of a decode step).
//
// With AVX-512 (bf16 and VNNI where the CPU has them) or AVX2 (+FMA, F16C: most laptops, older servers) the
// inner loops use intrinsics, written once over a vector type of either width; elsewhere, portable loops
// the compiler vectorises. Build: nanochat_py/kernels/__init__.py (-O3 -march=native, at `make`).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// NANOCHAT_PORTABLE: no intrinsics; NANOCHAT_NO_AVX512: the AVX2 code even where AVX-512 is there (the
// tests build all three, so every path is tested on an AVX-512 machine)
#if defined(__AVX512F__) && defined(__AVX512BW__) && !defined(NANOCHAT_PORTABLE) && !defined(NANOCHAT_NO_AVX512)
#define NANOCHAT_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(NANOCHAT_PORTABLE)
#define NANOCHAT_AVX2 1
#endif
#if defined(NANOCHAT_AVX512) || defined(NANOCHAT_AVX2)
#define NANOCHAT_SIMD 1
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kMaxRows = 8;  // rows of x per pass over a weight tile (more rows: several passes per tile)
// how far ahead in its stream a loop prefetches weights: the slower loops (several rows of x) two rows, one
// row of x 2 KB (bf16 on a Xeon: 27 -> 30 GB/s on 2 cores; fp32 the same with or without)
constexpr int64_t kPrefetchRows = 2;
constexpr int64_t kPrefetchBytes = 2048;

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) { return c10::BFloat16(f).x; }

// element i of an fp32 or bf16 array, as fp32; and back
template <typename T>
inline float load(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, float>) return p[i];
  else return bf16_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
}

template <typename T>
inline void put(T* p, int64_t i, float v) {
  if constexpr (std::is_same_v<T, float>) p[i] = v;
  else reinterpret_cast<uint16_t*>(p)[i] = float_to_bf16(v);
}

// x as the weights' kernels want it: fp32, bf16, int16 with one scale per row (int8 weights), or int8 in
// groups of 32 with one scale each (int4 weights, as llama.cpp's q8_0 activations for its Q4_0 weights).
struct Activations {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<int16_t> i16;
  std::vector<float> i16_scale;
  // int4: x in int8, with one scale per group of 32 and the group's offset, -8 x the sum of its 32 values
  // (the weights are stored as q + 8 in 0..15: the offset takes the 8 back out)
  std::vector<int8_t> i8;
  std::vector<float> i8_scale;
  std::vector<int32_t> i8_offset;
};

constexpr int64_t kInt4Group = 32;  // int4 weights: one scale per 32 inputs of a row
// int4 weights come in blocks of 8 rows (quantize.pack_int4): for each group, 128 bytes, 4 bytes of each row
// in turn (a row's 16 bytes as in llama.cpp's Q4_0: byte t holds input t in its low nibble and input 16 + t
// in its high one), so that one 32-byte vector holds 4 bytes of each row; then the block's 8 scales
constexpr int64_t kInt4Rows = 8;
constexpr int64_t kInt4GroupBytes = kInt4Rows * kInt4Group / 2;

// row i's 16 bytes of a block's group (the kInt4GroupBytes at `group`), back in Q4_0's order
inline void int4_row_bytes(const uint8_t* group, int64_t i, uint8_t (&bytes)[kInt4Group / 2]) {
  for (int64_t j = 0; j < 4; j++) std::memcpy(bytes + 4 * j, group + j * 4 * kInt4Rows + 4 * i, 4);
}

// Row m of x as fp32: a pointer into x itself, or bf16 widened into `buf`
const float* row_f32(const at::Tensor& x, int64_t m, std::vector<float>& buf) {
  const int64_t K = x.size(1);
  if (x.scalar_type() == at::kFloat) return x.data_ptr<float>() + m * K;
  const uint16_t* h = reinterpret_cast<const uint16_t*>(x.data_ptr()) + m * K;
  buf.resize(K);
  for (int64_t k = 0; k < K; k++) buf[k] = bf16_to_float(h[k]);
  return buf.data();
}

// int4 weights' activations, one row: int8 in groups of 32, each with its scale and offset (Activations).
// `at` is the row's first index.
void quantize_groups_row(const float* v, int64_t K, int64_t at, Activations& a) {
  for (int64_t g = 0; g < K; g += kInt4Group) {
    int8_t* q = a.i8.data() + at + g;
#ifdef NANOCHAT_AVX512
    // the same arithmetic as the portable loop below, 16 at a time (a step quantises every product's input)
    const __m512 first = _mm512_loadu_ps(v + g), second = _mm512_loadu_ps(v + g + kInt4Group / 2);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(first), _mm512_abs_ps(second)));
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    const __m512 step = _mm512_set1_ps(scale);
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(first, step), kNearest))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + kInt4Group / 2),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(second, step), kNearest))));
#elif defined(NANOCHAT_AVX2)
    // the same, 8 at a time: four vectors of int32 packed (in order) to 32 int8
    __m256 part[4], amax8 = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int i = 0; i < 4; i++) {
      part[i] = _mm256_loadu_ps(v + g + 8 * i);
      amax8 = _mm256_max_ps(amax8, _mm256_andnot_ps(sign, part[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    const __m256 step = _mm256_set1_ps(scale);
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i q32[4];
    for (int i = 0; i < 4; i++) q32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(part[i], step), kNearest));
    for (int half = 0; half < 2; half++) {  // packs works within 128-bit lanes: the permute puts them back in order
      const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[2 * half], q32[2 * half + 1]), 0xD8);
      const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + half * kInt4Group / 2), bytes);
    }
#else
    float amax = 0.f;
    for (int64_t i = g; i < g + kInt4Group; i++) amax = std::max(amax, std::fabs(v[i]));
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    for (int64_t i = 0; i < kInt4Group; i++) q[i] = static_cast<int8_t>(std::nearbyint(v[g + i] / scale));
#endif
    int32_t sum = 0;
    for (int64_t i = 0; i < kInt4Group; i++) sum += q[i];
    a.i8_scale[(at + g) / kInt4Group] = scale;
    a.i8_offset[(at + g) / kInt4Group] = -8 * sum;
  }
}

// int8 weights' activations, one row: int16 with one scale
void quantize_row_i16(const float* v, int64_t K, float qmax, int16_t* out, float& scale_out) {
  float amax = 0.f;
#pragma omp simd reduction(max : amax)
  for (int64_t k = 0; k < K; k++) amax = std::max(amax, std::fabs(v[k]));
  const float scale = amax > 0.f ? amax / qmax : 1.f;
  scale_out = scale;
#pragma omp simd
  for (int64_t k = 0; k < K; k++) out[k] = static_cast<int16_t>(std::nearbyint(v[k] / scale));
}

Activations prepare(const at::Tensor& x_in, at::ScalarType weight_type) {
  const at::Tensor x = x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), n = M * K;
  const bool is_f32 = x.scalar_type() == at::kFloat;
  const float* f = is_f32 ? x.data_ptr<float>() : nullptr;
  const uint16_t* h = is_f32 ? nullptr : reinterpret_cast<const uint16_t*>(x.data_ptr());
  Activations a;
  if (weight_type == at::kFloat) {
    a.f32.resize(n);
    for (int64_t i = 0; i < n; i++) a.f32[i] = is_f32 ? f[i] : bf16_to_float(h[i]);
  } else if (weight_type == at::kBFloat16) {
    a.bf16.resize(n);
    for (int64_t i = 0; i < n; i++) a.bf16[i] = is_f32 ? float_to_bf16(f[i]) : h[i];
  } else if (weight_type == at::kByte) {
    a.i8.resize(n);
    a.i8_scale.resize(n / kInt4Group);
    a.i8_offset.resize(n / kInt4Group);
    // rows in parallel: a server's batch of 16 rows spent more time here than in a small product
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      std::vector<float> buf;
      for (int64_t m = m0; m < m1; m++) quantize_groups_row(row_f32(x, m, buf), K, m * K, a);
    });
  } else {
    // int16 keeps ~4.5 significant digits, far finer than the int8 weights: the product's error is the
    // weights'. An int32 lane sums at most ceil(K / 16) products of |w| <= 127 and |x| <= qmax.
    const float qmax = static_cast<float>(std::min<int64_t>(32767, INT32_MAX / (127 * ((K + 15) / 16))));
    a.i16.resize(n);
    a.i16_scale.resize(M);
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      std::vector<float> buf;
      for (int64_t m = m0; m < m1; m++) quantize_row_i16(row_f32(x, m, buf), K, qmax, a.i16.data() + m * K, a.i16_scale[m]);
    });
  }
  return a;
}

// ---- R weight rows against M rows of x: out[r][m] = sum_k w[r, k] * x[m, k] ------------------------------
// One weight type = how a chunk of weights is loaded and multiplied into an accumulator. Several
// independent accumulators (U) keep the loop waiting on memory rather than on the previous multiply-add;
// several weight rows at a time (R), each from its own stream (weight_rows), keep more reads in flight, and
// with several rows of x they cut the reloads of x per weight byte.

template <int M>
constexpr int rows_at_once() { return M <= 2 ? 4 : 2; }
template <int M>
constexpr int unroll() { return M == 1 ? 4 : (M == 2 ? 2 : 1); }

#ifdef NANOCHAT_SIMD

// ---- one vector of the machine's width: 16 fp32 (AVX-512) or 8 (AVX2); the loops below are written once
// against these helpers

#ifdef NANOCHAT_AVX512
using VecF = __m512;
using VecI = __m512i;
constexpr int kLanes = 16;  // fp32 (or int32) per vector
inline VecF vzero() { return _mm512_setzero_ps(); }
inline VecI vzero_i() { return _mm512_setzero_si512(); }
inline VecF vset(float v) { return _mm512_set1_ps(v); }
inline VecF vload(const float* p) { return _mm512_loadu_ps(p); }
inline VecI vload_i(const void* p) { return _mm512_loadu_si512(p); }
inline void vstore(float* p, VecF v) { _mm512_storeu_ps(p, v); }
inline VecF vfmadd(VecF a, VecF b, VecF acc) { return _mm512_fmadd_ps(a, b, acc); }
inline VecF vadd(VecF a, VecF b) { return _mm512_add_ps(a, b); }
inline VecF vdiv(VecF a, VecF b) { return _mm512_div_ps(a, b); }
inline VecI vadd_i(VecI a, VecI b) { return _mm512_add_epi32(a, b); }
inline float vsum(VecF v) { return _mm512_reduce_add_ps(v); }
inline float vsum_i(VecI v) { return static_cast<float>(_mm512_reduce_add_epi32(v)); }
// kLanes bf16 values widened to fp32 (a bf16 is the top half of an fp32)
inline VecF vload_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
// 2 * kLanes int8 values widened to int16
inline VecI vload_i8_as_i16(const int8_t* p) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// acc + the pairwise products of int16 lanes, summed in int32
inline VecI vdot_i16(VecI acc, VecI a, VecI b) {
#ifdef __AVX512VNNI__
  return _mm512_dpwssd_epi32(acc, a, b);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}
// the even and odd bf16 of 2 * kLanes, as fp32
inline VecF veven_bf16(VecI v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); }
inline VecF vodd_bf16(VecI v) { return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)))); }
#else  // AVX2 with FMA and F16C
using VecF = __m256;
using VecI = __m256i;
constexpr int kLanes = 8;
inline VecF vzero() { return _mm256_setzero_ps(); }
inline VecI vzero_i() { return _mm256_setzero_si256(); }
inline VecF vset(float v) { return _mm256_set1_ps(v); }
inline VecF vload(const float* p) { return _mm256_loadu_ps(p); }
inline VecI vload_i(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void vstore(float* p, VecF v) { _mm256_storeu_ps(p, v); }
inline VecF vfmadd(VecF a, VecF b, VecF acc) { return _mm256_fmadd_ps(a, b, acc); }
inline VecF vadd(VecF a, VecF b) { return _mm256_add_ps(a, b); }
inline VecF vdiv(VecF a, VecF b) { return _mm256_div_ps(a, b); }
inline VecI vadd_i(VecI a, VecI b) { return _mm256_add_epi32(a, b); }
inline float vsum(VecF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline float vsum_i(VecI v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  return static_cast<float>(_mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1))));
}
inline VecF vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline VecI vload_i8_as_i16(const int8_t* p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline VecI vdot_i16(VecI acc, VecI a, VecI b) {
#ifdef __AVXVNNI__
  return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}
inline VecF veven_bf16(VecI v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
inline VecF vodd_bf16(VecI v) { return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u)))); }
#endif

// x[i..i+kLanes) of an fp32 or bf16 array, as fp32
template <typename T>
inline VecF vload_as_float(const T* p) {
  if constexpr (std::is_same_v<T, float>) return vload(p);
  else return vload_bf16(reinterpret_cast<const uint16_t*>(p));
}

struct F32 {
  using W = float;
  using X = float;
  using Acc = VecF;
  static constexpr int kStep = kLanes;
  static Acc zero() { return vzero(); }
  static VecF load_w(const W* w) { return vload(w); }
  static Acc madd(Acc acc, VecF w, const X* x) { return vfmadd(w, vload(x), acc); }
  static Acc add(Acc a, Acc b) { return vadd(a, b); }
  static float reduce(Acc a) { return vsum(a); }
};

struct BF16 {
  using W = uint16_t;
  using X = uint16_t;
  using Acc = VecF;
  static constexpr int kStep = 2 * kLanes;
  static Acc zero() { return vzero(); }
  static VecI load_w(const W* w) { return vload_i(w); }
#ifdef __AVX512BF16__
  static Acc madd(Acc acc, VecI w, const X* x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)vload_i(x)); }
#else
  // no native bf16 dot product: widen the even and the odd halves to fp32
  static Acc madd(Acc acc, VecI w, const X* x) {
    const VecI xv = vload_i(x);
    return vfmadd(vodd_bf16(w), vodd_bf16(xv), vfmadd(veven_bf16(w), veven_bf16(xv), acc));
  }
#endif
  static Acc add(Acc a, Acc b) { return vadd(a, b); }
  static float reduce(Acc a) { return vsum(a); }
};

// int8 weights widened to int16, times int16 activations, summed exactly in int32 (`prepare` bounds the
// activations so that no lane can overflow)
struct I8 {
  using W = int8_t;
  using X = int16_t;
  using Acc = VecI;
  static constexpr int kStep = 2 * kLanes;
  static Acc zero() { return vzero_i(); }
  static VecI load_w(const W* w) { return vload_i8_as_i16(w); }
  static Acc madd(Acc acc, VecI w, const X* x) { return vdot_i16(acc, w, vload_i(x)); }
  static Acc add(Acc a, Acc b) { return vadd_i(a, b); }
  static float reduce(Acc a) { return vsum_i(a); }
};

// weight row r starts at w + r * stride
template <class T, int M, int R>
void dot(const typename T::W* w, int64_t stride, const typename T::X* x, int64_t K, float (&out)[R][M]) {
  constexpr int U = unroll<M>(), S = T::kStep;
  typename T::Acc acc[R][M][U];
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++)
      for (int u = 0; u < U; u++) acc[r][m][u] = T::zero();
  int64_t k = 0;
  for (; k + S * U <= K; k += S * U)
    for (int u = 0; u < U; u++)
      for (int r = 0; r < R; r++) {
        const typename T::W* wk = w + r * stride + k + S * u;
        // the hardware prefetcher alone leaves bandwidth unused: hint a little way ahead in the stream
        if constexpr (M > 1) _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchRows * K), _MM_HINT_T0);
        else _mm_prefetch(reinterpret_cast<const char*>(wk) + kPrefetchBytes, _MM_HINT_T0);
        const auto wv = T::load_w(wk);
        for (int m = 0; m < M; m++) acc[r][m][u] = T::madd(acc[r][m][u], wv, x + m * K + k + S * u);
      }
  for (; k < K; k += S)
    for (int r = 0; r < R; r++) {
      const auto wv = T::load_w(w + r * stride + k);
      for (int m = 0; m < M; m++) acc[r][m][0] = T::madd(acc[r][m][0], wv, x + m * K + k);
    }
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++) {
      for (int u = 1; u < U; u++) acc[r][m][0] = T::add(acc[r][m][0], acc[r][m][u]);
      out[r][m] = T::reduce(acc[r][m][0]);
    }
}

// ---- int4: eight weight rows at a time (a block, quantize.pack_int4), in 256-bit vectors on either ISA ----
// Lane r of each vector is row r of the block: per group of 32 inputs, four vectors of 4 bytes a row, each
// unpacked by an AND and a shift into the rows' low nibbles (inputs 4j..4j+3) and high ones (16 + 4j..),
// multiplied by those four x values broadcast to every lane and summed within the lane. So a block's group
// ends as eight sums in one vector: no horizontal sums, x loaded once for eight rows, and the eight scales
// applied with one multiply. On a 2-core AVX2 AMD EPYC this read weights at the memory's speed (28-35 GB/s),
// where one row at a time was compute-bound at 19-25 GB/s.

// sum(u * x) of four unsigned x signed bytes per int32 lane, for one group: VNNI's dot product where the
// CPU has it; else pairs summed in int16 (no saturation: 8 calls a group, 8 * 2 * 15 * 127 = 30480 < 32767)
// and widened once at the end
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
inline __m256i i4_add(__m256i acc, __m256i u, __m256i x) {
#ifdef __AVX512VNNI__
  return _mm256_dpbusd_epi32(acc, u, x);
#else
  return _mm256_dpbusd_avx_epi32(acc, u, x);
#endif
}
inline __m256i i4_total(__m256i acc) { return acc; }
#else
inline __m256i i4_add(__m256i acc, __m256i u, __m256i x) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, x)); }
inline __m256i i4_total(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
#endif

inline __m256i broadcast4(const int8_t* x) {  // x[0..3] in every int32 lane
  int32_t v;
  std::memcpy(&v, x, sizeof v);
  return _mm256_set1_epi32(v);
}

// R blocks (block r starts `stride` blocks after block r - 1) against rows m0..m0+M-1 of x:
// out[r][m][i] = row i of block r . x row m0 + m
template <int M, int R>
void dot_i4(const uint8_t* w, const at::Half* ws, int64_t stride, const Activations& a, int64_t m0, int64_t K,
            float (&out)[R][M][kInt4Rows]) {
  const int64_t groups = K / kInt4Group;
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  __m256 acc[R][M];
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++) acc[r][m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; g++)
    for (int r = 0; r < R; r++) {
      const uint8_t* wg = w + (r * stride * groups + g) * kInt4GroupBytes;
      _mm_prefetch(reinterpret_cast<const char*>(wg) + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(wg) + kPrefetchBytes + 64, _MM_HINT_T0);
      __m256i low[4], high[4];
      for (int j = 0; j < 4; j++) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + 32 * j));
        low[j] = _mm256_and_si256(v, nibble);
        high[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
      }
      const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + (r * stride * groups + g) * kInt4Rows)));
      for (int m = 0; m < M; m++) {
        const int64_t at = (m0 + m) * groups + g;
        const int8_t* x = a.i8.data() + at * kInt4Group;
        __m256i sums = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
          sums = i4_add(sums, low[j], broadcast4(x + 4 * j));
          sums = i4_add(sums, high[j], broadcast4(x + kInt4Group / 2 + 4 * j));
        }
        const __m256i exact = _mm256_add_epi32(i4_total(sums), _mm256_set1_epi32(a.i8_offset[at]));
        acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), _mm256_mul_ps(scales, _mm256_set1_ps(a.i8_scale[at])), acc[r][m]);
      }
    }
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++) _mm256_storeu_ps(out[r][m], acc[r][m]);
}

#else  // portable loops: `omp simd reduction` lets the compiler reorder the sums into vector lanes

struct F32 {
  using W = float;
  using X = float;
  using Sum = float;
  static float widen(float v) { return v; }
};
struct BF16 {
  using W = uint16_t;
  using X = uint16_t;
  using Sum = float;
  static float widen(uint16_t v) { return bf16_to_float(v); }
};
struct I8 {
  using W = int8_t;
  using X = int16_t;
  using Sum = int32_t;
  static int32_t widen(int32_t v) { return v; }
};

template <class T, int M, int R>
void dot(const typename T::W* w, int64_t stride, const typename T::X* x, int64_t K, float (&out)[R][M]) {
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++) {
      typename T::Sum s = 0;
      const typename T::W* wr = w + r * stride;
      const typename T::X* xm = x + m * K;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; k++) s += T::widen(wr[k]) * T::widen(xm[k]);
      out[r][m] = static_cast<float>(s);
    }
}

template <int M, int R>
void dot_i4(const uint8_t* w, const at::Half* ws, int64_t stride, const Activations& a, int64_t m0, int64_t K,
            float (&out)[R][M][kInt4Rows]) {
  const int64_t groups = K / kInt4Group;
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++)
      for (int64_t i = 0; i < kInt4Rows; i++) {
        float total = 0.f;
        for (int64_t g = 0; g < groups; g++) {
          uint8_t bytes[kInt4Group / 2];
          int4_row_bytes(w + (r * stride * groups + g) * kInt4GroupBytes, i, bytes);
          const int64_t at = (m0 + m) * groups + g;
          const int8_t* x = a.i8.data() + at * kInt4Group;
          int32_t s = 0;
          for (int64_t t = 0; t < kInt4Group / 2; t++)
            s += ((bytes[t] & 15) - 8) * x[t] + ((bytes[t] >> 4) - 8) * x[kInt4Group / 2 + t];
          total += static_cast<float>(s) * static_cast<float>(ws[(r * stride * groups + g) * kInt4Rows + i]) * a.i8_scale[at];
        }
        out[r][m][i] = total;
      }
}

#endif

// ---- linear_rows -------------------------------------------------------------------------------------------

struct Weight {
  const void* data;
  const float* scale;  // int8: one per output row
  const at::Half* group_scale;  // int4: one per 32 inputs of each row
  int64_t rows;
  void* out;  // [M, rows] in the activations' dtype
};

// rows [n0, n1) of one weight, for rows m0..m0+M-1 of x. The range is cut into R parts walked side by
// side: each core keeps R sequential streams in flight, far apart in memory. Measured on a 2-core Xeon
// (fp32, a 600 MB matrix, one row of x): one stream reads ~13 GB/s a core, four ~16 GB/s, four
// neighbouring rows at once ~15; whole batch-1 decode steps went 1.2-1.3x faster with four.
template <class T, int M, int R, typename OutT>
void weight_rows(const Weight& w, const typename T::X* x, const float* x_scale, int64_t K, int64_t m0, int64_t n0,
                 int64_t n1) {
  const auto* data = static_cast<const typename T::W*>(w.data);
  const int64_t part = (n1 - n0) / R;
  float out[R][M];
  for (int64_t i = n0; i < n0 + part; i++) {
    dot<T, M, R>(data + i * K, part * K, x + m0 * K, K, out);
    for (int r = 0; r < R; r++)
      for (int m = 0; m < M; m++) {
        const int64_t n = i + r * part;
        const float scale = w.scale ? w.scale[n] * x_scale[m0 + m] : 1.f;  // int8: weight row x activation row
        put(static_cast<OutT*>(w.out), (m0 + m) * w.rows + n, out[r][m] * scale);
      }
  }
  if constexpr (R > 1) weight_rows<T, M, 1, OutT>(w, x, x_scale, K, m0, n0 + R * part, n1);  // the rows left over
}

// int4: blocks of 8 rows (n0 and n1 are multiples of 8), R streams of blocks side by side
template <int M, int R, typename OutT>
void int4_rows(const Weight& w, const Activations& a, int64_t K, int64_t m0, int64_t n0, int64_t n1) {
  const auto* data = static_cast<const uint8_t*>(w.data);
  const int64_t b0 = n0 / kInt4Rows, b1 = n1 / kInt4Rows, part = (b1 - b0) / R, groups = K / kInt4Group;
  float out[R][M][kInt4Rows];
  for (int64_t b = b0; b < b0 + part; b++) {
    dot_i4<M, R>(data + b * groups * kInt4GroupBytes, w.group_scale + b * groups * kInt4Rows, part, a, m0, K, out);
    for (int r = 0; r < R; r++)
      for (int m = 0; m < M; m++)
        for (int64_t i = 0; i < kInt4Rows; i++)
          put(static_cast<OutT*>(w.out), (m0 + m) * w.rows + (b + r * part) * kInt4Rows + i, out[r][m][i]);
  }
  if constexpr (R > 1) int4_rows<M, 1, OutT>(w, a, K, m0, (b0 + R * part) * kInt4Rows, n1);
}

template <int M, typename OutT>
void weight_rows(const Weight& w, at::ScalarType type, const Activations& a, int64_t m0, int64_t K,
                 int64_t n0, int64_t n1) {
  constexpr int R = rows_at_once<M>();
  if (type == at::kFloat) weight_rows<F32, M, R, OutT>(w, a.f32.data(), nullptr, K, m0, n0, n1);
  else if (type == at::kBFloat16) weight_rows<BF16, M, R, OutT>(w, a.bf16.data(), nullptr, K, m0, n0, n1);
  else if (type == at::kChar) weight_rows<I8, M, R, OutT>(w, a.i16.data(), a.i16_scale.data(), K, m0, n0, n1);
  else int4_rows<M, M <= 2 ? 2 : 1, OutT>(w, a, K, m0, n0, n1);  // two streams: one block keeps 8 rows busy
}

template <typename OutT>
void run_rows(int64_t M, const Weight& w, at::ScalarType type, const Activations& a, int64_t m0, int64_t K,
              int64_t n0, int64_t n1) {
  switch (M) {
    case 1: return weight_rows<1, OutT>(w, type, a, m0, K, n0, n1);
    case 2: return weight_rows<2, OutT>(w, type, a, m0, K, n0, n1);
    case 3: return weight_rows<3, OutT>(w, type, a, m0, K, n0, n1);
    case 4: return weight_rows<4, OutT>(w, type, a, m0, K, n0, n1);
    case 5: return weight_rows<5, OutT>(w, type, a, m0, K, n0, n1);
    case 6: return weight_rows<6, OutT>(w, type, a, m0, K, n0, n1);
    case 7: return weight_rows<7, OutT>(w, type, a, m0, K, n0, n1);
    default: return weight_rows<8, OutT>(w, type, a, m0, K, n0, n1);
  }
}

// Weight rows per tile when x has more rows than one pass takes: a tile stays in the L1 cache while every
// block of kMaxRows rows of x runs over it, so memory sends each weight once per call, not once per block.
// An even number of units (int4: blocks of 8 rows; else rows).
int64_t tile_rows(int64_t row_bytes, int64_t unit) {
  return unit * std::max<int64_t>(2, (16384 / (row_bytes * unit)) & ~int64_t{1});
}

// rows [n0, n1) of one weight for all M rows of x
template <typename OutT>
void all_rows(int64_t M, int64_t tile, const Weight& w, at::ScalarType type, const Activations& a, int64_t K,
              int64_t n0, int64_t n1) {
  if (M <= kMaxRows) return run_rows<OutT>(M, w, type, a, 0, K, n0, n1);
  for (int64_t t = n0; t < n1; t += tile)
    for (int64_t m0 = 0; m0 < M; m0 += kMaxRows)
      run_rows<OutT>(std::min(kMaxRows, M - m0), w, type, a, m0, K, t, std::min(t + tile, n1));
}

std::vector<at::Tensor> linear_rows(const at::Tensor& x, at::TensorList weights, at::ArrayRef<c10::optional<at::Tensor>> scales) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu(), "linear_rows: x must be a 2-D CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "linear_rows: x must be fp32 or bf16");
  TORCH_CHECK(!weights.empty() && weights.size() == scales.size(), "linear_rows: one scale (or None) per weight");
  const int64_t M = x.size(0), K = x.size(1);
  const at::ScalarType type = weights[0].scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16 || type == at::kChar || type == at::kByte,
              "linear_rows: weights must be fp32, bf16, int8 or int4 (packed in uint8)");
  TORCH_CHECK(K % 32 == 0, "linear_rows: the input width must be a multiple of 32");
  const int64_t columns = type == at::kByte ? K / 2 : K;  // int4: two to a byte
  const int64_t unit = type == at::kByte ? kInt4Rows : 1;  // int4: rows in blocks of 8
  std::vector<at::Tensor> outs;
  std::vector<Weight> ws;
  std::vector<int64_t> first_row{0};  // weights laid end to end: global row r is in weight i iff first_row[i] <= r
  for (size_t i = 0; i < weights.size(); i++) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK(w.scalar_type() == type && w.dim() == 2 && w.size(1) == columns && w.is_contiguous() && w.device().is_cpu(),
                "linear_rows: every weight must be a contiguous CPU [N, ", columns, "] tensor of one dtype");
    const float* s = nullptr;
    const at::Half* gs = nullptr;
    if (type == at::kChar) {
      TORCH_CHECK(scales[i].has_value() && scales[i]->scalar_type() == at::kFloat && scales[i]->numel() == w.size(0) &&
                      scales[i]->is_contiguous(), "linear_rows: int8 weights need a contiguous fp32 scale per row");
      s = scales[i]->data_ptr<float>();
    } else if (type == at::kByte) {
      TORCH_CHECK(w.size(0) % kInt4Rows == 0, "linear_rows: int4 weights come in blocks of 8 rows (quantize.pack_int4), not ", w.size(0));
      TORCH_CHECK(scales[i].has_value() && scales[i]->scalar_type() == at::kHalf &&
                      scales[i]->numel() == w.size(0) * (K / kInt4Group) && scales[i]->is_contiguous(),
                  "linear_rows: int4 weights need a contiguous fp16 scale per 32 inputs of each row");
      gs = scales[i]->data_ptr<at::Half>();
    }
    outs.push_back(at::empty({M, w.size(0)}, x.options()));
    ws.push_back({w.data_ptr(), s, gs, w.size(0), outs.back().data_ptr()});
    first_row.push_back(first_row.back() + w.size(0));
  }
  const Activations a = prepare(x, type);
  const bool out_f32 = x.scalar_type() == at::kFloat;
  const int64_t tile = tile_rows(columns * at::elementSize(type), unit);
  at::parallel_for(0, first_row.back() / unit, 64 / unit, [&](int64_t u0, int64_t u1) {
    const int64_t r0 = u0 * unit, r1 = u1 * unit;
    for (size_t i = 0; i < ws.size(); i++) {
      const int64_t n0 = std::max(r0, first_row[i]) - first_row[i], n1 = std::min(r1, first_row[i + 1]) - first_row[i];
      if (n0 >= n1) continue;
      if (out_f32) all_rows<float>(M, tile, ws[i], type, a, K, n0, n1);
      else all_rows<c10::BFloat16>(M, tile, ws[i], type, a, K, n0, n1);
    }
  });
  return outs;
}

// ---- dequantize: a quantised matrix as fp32 or bf16, for products over many rows (prefill), where one
// matrix-matrix product on the whole matrix beats the row kernels' passes of 8 rows and their unpacking

template <typename OutT>
void dequantize_int8(const int8_t* q, const float* s, OutT* o, int64_t N, int64_t K) {
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++)
#pragma omp simd
      for (int64_t k = 0; k < K; k++) put(o, n * K + k, static_cast<float>(q[n * K + k]) * s[n]);
  });
}

template <typename OutT>
void dequantize_int4(const uint8_t* q, const at::Half* s, OutT* o, int64_t N, int64_t K) {
  const int64_t groups = K / kInt4Group;
  at::parallel_for(0, N / kInt4Rows, 2, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++)
      for (int64_t g = 0; g < groups; g++) {
        const uint8_t* group = q + (b * groups + g) * kInt4GroupBytes;
        for (int64_t i = 0; i < kInt4Rows; i++) {
          uint8_t bytes[kInt4Group / 2];
          int4_row_bytes(group, i, bytes);
          OutT* row = o + (b * kInt4Rows + i) * K + g * kInt4Group;
          const float scale = static_cast<float>(s[(b * groups + g) * kInt4Rows + i]);
#pragma omp simd
          for (int64_t t = 0; t < kInt4Group / 2; t++) {
            put(row, t, static_cast<float>((bytes[t] & 15) - 8) * scale);
            put(row, kInt4Group / 2 + t, static_cast<float>((bytes[t] >> 4) - 8) * scale);
          }
        }
      }
  });
}

at::Tensor dequantize(const at::Tensor& w, const at::Tensor& scale, at::ScalarType dtype) {
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.device().is_cpu() && scale.is_contiguous(),
              "dequantize: a contiguous 2-D CPU weight and its contiguous scales");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dequantize: to fp32 or bf16");
  const int64_t N = w.size(0);
  const bool bf16 = dtype == at::kBFloat16;
  if (w.scalar_type() == at::kChar) {
    const int64_t K = w.size(1);
    TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == N, "dequantize: int8 needs an fp32 scale per row");
    at::Tensor out = at::empty({N, K}, w.options().dtype(dtype));
    if (bf16) dequantize_int8(w.data_ptr<int8_t>(), scale.data_ptr<float>(), out.data_ptr<c10::BFloat16>(), N, K);
    else dequantize_int8(w.data_ptr<int8_t>(), scale.data_ptr<float>(), out.data_ptr<float>(), N, K);
    return out;
  }
  TORCH_CHECK(w.scalar_type() == at::kByte, "dequantize: int8, or int4 packed in uint8");
  const int64_t K = w.size(1) * 2;
  TORCH_CHECK(K % kInt4Group == 0 && N % kInt4Rows == 0 && scale.scalar_type() == at::kHalf && scale.numel() == N * (K / kInt4Group),
              "dequantize: int4 needs rows in blocks of 8, inputs in groups of 32 and an fp16 scale per 32 inputs of each row");
  at::Tensor out = at::empty({N, K}, w.options().dtype(dtype));
  if (bf16) dequantize_int4(w.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), out.data_ptr<c10::BFloat16>(), N, K);
  else dequantize_int4(w.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), out.data_ptr<float>(), N, K);
  return out;
}

// ---- rms_norm (the few rows of a decode step: torch's version costs more in dispatch than in arithmetic) ----

template <typename T>
void rms_norm_rows(const T* in, T* out, int64_t rows, int64_t C, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const T* p = in + r * C;
    float sq = 0.f;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < C; i++) sq += load(p, i) * load(p, i);
    const float inv = 1.f / std::sqrt(sq / static_cast<float>(C) + eps);
    for (int64_t i = 0; i < C; i++) put(out + r * C, i, load(p, i) * inv);
  }
}

at::Tensor rms_norm(const at::Tensor& x, double eps) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "rms_norm: x must be an fp32 or bf16 CPU tensor");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const int64_t C = in.size(-1), rows = C ? in.numel() / C : 0;
  if (in.scalar_type() == at::kFloat)
    rms_norm_rows(in.data_ptr<float>(), out.data_ptr<float>(), rows, C, static_cast<float>(eps));
  else
    rms_norm_rows(in.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), rows, C, static_cast<float>(eps));
  return out;
}

// ---- decode_attention --------------------------------------------------------------------------------------

// nanochat's RoPE (each head's halves rotated by -theta), RMS norm over the head, then the QK scale
template <typename T>
void rope_norm(const T* in, float* out, const float* cos, const float* sin, int64_t d, float eps, float scale) {
  const int64_t half = d / 2;
  float sq = 0.f;
  for (int64_t i = 0; i < half; i++) {
    const float x1 = load(in, i), x2 = load(in, i + half);
    out[i] = x1 * cos[i] + x2 * sin[i];
    out[i + half] = x1 * -sin[i] + x2 * cos[i];
  }
  for (int64_t i = 0; i < d; i++) sq += out[i] * out[i];
  const float r = 1.f / std::sqrt(sq / static_cast<float>(d) + eps);
  for (int64_t i = 0; i < d; i++) out[i] = out[i] * r * scale;
}

// One query head over its row's keys first..last (softmax(q.k * scale) . v): `out` gets the d values.
template <typename T>
void attend_head_portable(const float* q, const T* keys, const T* values, int64_t st, int64_t first, int64_t last,
                          int64_t d, float scale, float* scores, float* out) {
  float best = -INFINITY;
  for (int64_t t = first; t <= last; t++) {
    const T* key = keys + t * st;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < d; j++) s += q[j] * load(key, j);
    scores[t - first] = s * scale;
    best = std::max(best, scores[t - first]);
  }
  float total = 0.f;
  std::fill(out, out + d, 0.f);
  for (int64_t t = first; t <= last; t++) {
    const float p = std::exp(scores[t - first] - best);
    total += p;
    const T* value = values + t * st;
#pragma omp simd
    for (int64_t j = 0; j < d; j++) out[j] += p * load(value, j);
  }
  for (int64_t j = 0; j < d; j++) out[j] /= total;
}

#ifdef NANOCHAT_SIMD
// The same for d = kLanes * C: the query and the running sum of values stay in registers (the portable
// loop reloads and stores its sum for every key), and four keys' scores are summed side by side.
template <typename T, int C>
void attend_head_simd(const float* q, const T* keys, const T* values, int64_t st, int64_t first, int64_t last,
                      float scale, float* scores, float* out) {
  VecF qc[C];
  for (int c = 0; c < C; c++) qc[c] = vload(q + kLanes * c);
  float best = -INFINITY;
  int64_t t = first;
  for (; t + 4 <= last + 1; t += 4) {
    VecF s[4] = {vzero(), vzero(), vzero(), vzero()};
    for (int c = 0; c < C; c++)
      for (int i = 0; i < 4; i++) s[i] = vfmadd(qc[c], vload_as_float(keys + (t + i) * st + kLanes * c), s[i]);
    for (int i = 0; i < 4; i++) {
      scores[t + i - first] = vsum(s[i]) * scale;
      best = std::max(best, scores[t + i - first]);
    }
  }
  for (; t <= last; t++) {
    VecF s = vzero();
    for (int c = 0; c < C; c++) s = vfmadd(qc[c], vload_as_float(keys + t * st + kLanes * c), s);
    scores[t - first] = vsum(s) * scale;
    best = std::max(best, scores[t - first]);
  }
  VecF acc[C];
  for (int c = 0; c < C; c++) acc[c] = vzero();
  float total = 0.f;
  for (t = first; t <= last; t++) {
    const float p = std::exp(scores[t - first] - best);
    total += p;
    const VecF pv = vset(p);
    for (int c = 0; c < C; c++) acc[c] = vfmadd(pv, vload_as_float(values + t * st + kLanes * c), acc[c]);
  }
  const VecF totals = vset(total);
  for (int c = 0; c < C; c++) vstore(out + kLanes * c, vdiv(acc[c], totals));
}
#endif

template <typename T>
void attend_head(const float* q, const T* keys, const T* values, int64_t st, int64_t first, int64_t last, int64_t d,
                 float scale, float* scores, float* out) {
#ifdef NANOCHAT_SIMD
  switch (d) {  // nanochat's heads are 128 wide; the tests' small models use the others
    case 32: return attend_head_simd<T, 32 / kLanes>(q, keys, values, st, first, last, scale, scores, out);
    case 64: return attend_head_simd<T, 64 / kLanes>(q, keys, values, st, first, last, scale, scores, out);
    case 128: return attend_head_simd<T, 128 / kLanes>(q, keys, values, st, first, last, scale, scores, out);
    case 256: return attend_head_simd<T, 256 / kLanes>(q, keys, values, st, first, last, scale, scores, out);
  }
#endif
  attend_head_portable(q, keys, values, st, first, last, d, scale, scores, out);
}

// T: q, k, v and the output; C: the cache (bf16 under fp32 activations for quantised models)
template <typename T, typename C>
at::Tensor attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& cache_k,
                          at::Tensor& cache_v, const at::Tensor& positions, int64_t window, const at::Tensor& cos,
                          const at::Tensor& sin, double eps, double qk_scale) {
  const int64_t B = cache_k.size(0), G = cache_k.size(1), cap = cache_k.size(2), d = cache_k.size(3);
  const int64_t H = q.size(1) / d, group = H / G, half = d / 2;
  const int64_t* pos = positions.data_ptr<int64_t>();
  const float* cos_p = cos.data_ptr<float>();
  const float* sin_p = sin.data_ptr<float>();
  C* ck = cache_k.data_ptr<C>();
  C* cv = cache_v.data_ptr<C>();
  const int64_t sb = cache_k.stride(0), sg = cache_k.stride(1), st = cache_k.stride(2);
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  for (int64_t b = 0; b < B; b++) TORCH_CHECK(pos[b] >= 0 && pos[b] < cap, "decode_attention: position ", pos[b], " is outside the cache (capacity ", cap, ")");

  // one task per (row, kv head): write the new key (rotated, normed, scaled) and value into the cache, then
  // let each query head of the group attend to the row's visible keys, first..pos
  at::Tensor y = at::empty({B, H * d}, q.options());
  T* yp = y.data_ptr<T>();
  const float softmax_scale = 1.f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, B * G, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> qv(d), acc(d), scores;
    for (int64_t i = i0; i < i1; i++) {
      const int64_t b = i / G, g = i % G;
      const int64_t last = pos[b], first = window >= 0 ? std::max<int64_t>(0, last - window) : 0;
      const float* cos_at = cos_p + last * half;
      const float* sin_at = sin_p + last * half;
      C* keys = ck + b * sb + g * sg;
      C* values = cv + b * sb + g * sg;
      rope_norm(kp + b * k.stride(0) + g * d, acc.data(), cos_at, sin_at, d, static_cast<float>(eps),
                static_cast<float>(qk_scale));
      for (int64_t j = 0; j < d; j++) {
        put(keys + last * st, j, acc[j]);
        put(values + last * st, j, load(vp + b * v.stride(0) + g * d, j));
      }
      scores.resize(last - first + 1);
      for (int64_t h = g * group; h < (g + 1) * group; h++) {
        rope_norm(qp + b * q.stride(0) + h * d, qv.data(), cos_at, sin_at, d, static_cast<float>(eps),
                  static_cast<float>(qk_scale));
        attend_head(qv.data(), keys, values, st, first, last, d, softmax_scale, scores.data(), acc.data());
        for (int64_t j = 0; j < d; j++) put(yp + b * H * d + h * d, j, acc[j]);
      }
    }
  });
  return y;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor cache_k,
                            at::Tensor cache_v, const at::Tensor& positions, int64_t window, const at::Tensor& cos,
                            const at::Tensor& sin, double eps, double qk_scale) {
  TORCH_CHECK(cache_k.dim() == 4 && cache_k.stride(3) == 1 && cache_v.strides() == cache_k.strides(),
              "decode_attention: caches must be [B, kv_heads, capacity, head_dim] with contiguous heads");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
                  cache_v.scalar_type() == cache_k.scalar_type() &&
                  (cache_k.scalar_type() == q.scalar_type() || cache_k.scalar_type() == at::kBFloat16),
              "decode_attention: q, k and v share one dtype, and the caches hold it or bf16");
  TORCH_CHECK(q.stride(1) == 1 && k.stride(1) == 1 && v.stride(1) == 1, "decode_attention: q, k, v rows must be contiguous");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.numel() == cache_k.size(0), "decode_attention: one int64 position per row");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() && cos.size(1) * 2 == cache_k.size(3),
              "decode_attention: cos/sin must be contiguous fp32 [positions, head_dim / 2] tables");
  TORCH_CHECK(cos.size(0) >= cache_k.size(2), "decode_attention: the RoPE table is shorter than the cache");
  const bool bf16_cache = cache_k.scalar_type() == at::kBFloat16;
  if (q.scalar_type() == at::kFloat && bf16_cache)
    return attention_impl<float, c10::BFloat16>(q, k, v, cache_k, cache_v, positions, window, cos, sin, eps, qk_scale);
  if (q.scalar_type() == at::kFloat)
    return attention_impl<float, float>(q, k, v, cache_k, cache_v, positions, window, cos, sin, eps, qk_scale);
  TORCH_CHECK(q.scalar_type() == at::kBFloat16, "decode_attention: fp32 or bf16 only");
  return attention_impl<c10::BFloat16, c10::BFloat16>(q, k, v, cache_k, cache_v, positions, window, cos, sin, eps, qk_scale);
}

// ---- decode_block: one transformer block for one token per row, with no Python between its steps ---------
// The same arithmetic as model.Block in the activations' dtype (each product rounded to it, as F.linear
// does): x + attn(norm(x)), then x + mlp(norm(x)). Weights: c_q, c_k, c_v, c_proj, c_fc, mlp.c_proj.

// The block's elementwise steps, in place on a product's fresh output, in fp32 and rounded once as torch's
// ops round them: for rows this short torch's add, relu and square cost more in dispatch (5-9 us each, four
// a block) than in arithmetic.
template <typename F>
void each(at::Tensor& t, const at::Tensor& other, F f) {
  const at::Tensor o = other.defined() ? other.contiguous() : other;
  const int64_t n = t.numel();
  if (t.scalar_type() == at::kFloat) {
    float* p = t.data_ptr<float>();
    const float* q = o.defined() ? o.data_ptr<float>() : nullptr;
    for (int64_t i = 0; i < n; i++) p[i] = f(p[i], q ? q[i] : 0.f);
  } else {
    c10::BFloat16* p = t.data_ptr<c10::BFloat16>();
    const c10::BFloat16* q = o.defined() ? o.data_ptr<c10::BFloat16>() : nullptr;
    for (int64_t i = 0; i < n; i++) put(p, i, f(load(p, i), q ? load(q, i) : 0.f));
  }
}

void add_into(at::Tensor& t, const at::Tensor& other) {  // t += other
  TORCH_CHECK(other.scalar_type() == t.scalar_type() && other.numel() == t.numel(), "decode_block: residual shape");
  each(t, other, [](float a, float b) { return b + a; });
}

void relu_squared(at::Tensor& t) {
  each(t, at::Tensor(), [](float a, float) { return a > 0.f || a != a ? a * a : 0.f; });  // NaN stays NaN
}

at::Tensor decode_block(const at::Tensor& x, at::TensorList w, at::ArrayRef<c10::optional<at::Tensor>> scales,
                        at::Tensor cache_k, at::Tensor cache_v, const at::Tensor& positions, int64_t window,
                        const at::Tensor& cos, const at::Tensor& sin, double eps, double qk_scale,
                        const c10::optional<at::Tensor>& value_embed, const c10::optional<at::Tensor>& ve_gate,
                        double ve_gate_scale) {
  TORCH_CHECK(w.size() == 6 && scales.size() == 6, "decode_block: six weights (q, k, v, proj, fc, mlp proj), six scales");
  const int64_t B = x.size(0), G = cache_k.size(1);
  at::Tensor h = rms_norm(x, eps);
  std::vector<at::Tensor> qkv = linear_rows(h, w.slice(0, 3), scales.slice(0, 3));
  at::Tensor v = qkv[2];
  if (value_embed.has_value()) {  // value residual, gated per kv head by the first channels of the input
    TORCH_CHECK(ve_gate.has_value(), "decode_block: a value embedding needs its gate");
    at::Tensor gate = at::sigmoid(at::linear(h.narrow(1, 0, ve_gate->size(1)), *ve_gate)) * ve_gate_scale;
    v = (v.view({B, G, -1}) + gate.unsqueeze(-1) * value_embed->view({B, G, -1})).view({B, -1});
  }
  at::Tensor y = decode_attention(qkv[0], qkv[1], v, cache_k, cache_v, positions, window, cos, sin, eps, qk_scale);
  at::Tensor out = linear_rows(y, w.slice(3, 1), scales.slice(3, 1))[0];
  add_into(out, x);
  at::Tensor hidden = linear_rows(rms_norm(out, eps), w.slice(4, 1), scales.slice(4, 1))[0];
  relu_squared(hidden);
  at::Tensor result = linear_rows(hidden, w.slice(5, 1), scales.slice(5, 1))[0];
  add_into(result, out);
  return result;
}

}  // namespace

TORCH_LIBRARY(NANOCHAT_LIBRARY, m) {
  m.def("linear_rows(Tensor x, Tensor[] weights, Tensor?[] scales) -> Tensor[]");
  m.def("rms_norm(Tensor x, float eps) -> Tensor");
  m.def("dequantize(Tensor weight, Tensor scale, ScalarType dtype) -> Tensor");
  m.def("decode_block(Tensor x, Tensor[] weights, Tensor?[] scales, Tensor(a!) cache_k, Tensor(b!) cache_v, "
        "Tensor positions, int window, Tensor cos, Tensor sin, float eps, float qk_scale, Tensor? value_embed, "
        "Tensor? ve_gate, float ve_gate_scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(NANOCHAT_LIBRARY, CPU, m) {
  m.impl("linear_rows", &linear_rows);
  m.impl("rms_norm", &rms_norm);
  m.impl("dequantize", &dequantize);
  m.impl("decode_block", &decode_block);
}
