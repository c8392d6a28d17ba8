// omniloom's CPU kernels for decode steps, all fp32 activations, row by row so that a row's result
// never depends on what else is in the batch.
//
// skinny_linear: y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias) with few rows M.
// At decode time M is the number of sequences in the step (1–64), so the cost is streaming W from
// memory once. W may be fp32, bf16, fp16 or int8 (one fp32 scale per output row); it is widened
// to fp32 in registers (AVX-512 where the machine has it, else AVX2/F16C) and activations and
// accumulation stay fp32. Output rows are
// split across PyTorch's intra-op threads. With few rows each group of weight rows is used
// straight from memory; with more rows it is widened once into a small fp32 buffer that then
// stays in L1 while every activation row passes over it. int8 weights with per-row scales
// take int8 activations instead (blocks of 32 with their own scale, integer dot products).
//
// rms_norm: y = x / sqrt(mean(x²) + eps) · weight per row; rope_: rotary embedding in place.
// silu_mul: silu(gate) · up. LayerStack: all of the above for a whole step in one call.
// paged_attention: each query row against its own context's keys and values, read in place
// from the paged pool through its slot list (no gather into a padded batch).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define OMNILOOM_AVX2 1
#if defined(__AVX512F__)
#define OMNILOOM_AVX512 1
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define OMNILOOM_VNNI 1
#endif
#endif
#endif

namespace {

// skinny_linear's register tile: kRows weight rows × up to kTileRows activation rows, one vector
// accumulator each (24 of AVX-512's 32 registers, 12 of AVX2's 16). Activation rows beyond
// kTileRows go through the tile again, so up to kTileRows rows read W straight from memory.
#ifdef OMNILOOM_AVX512
constexpr int64_t kRows = 6;
constexpr int kTileRows = 4;
#else
constexpr int64_t kRows = 4;
constexpr int kTileRows = 3;
#endif
constexpr int64_t kQ8Rows = 4;  // int8 weight rows per group of the int8 × int8 path

inline float widen(float v) { return v; }
inline float widen(at::BFloat16 v) { return static_cast<float>(v); }
inline float widen(at::Half v) { return static_cast<float>(v); }
inline float widen(int8_t v) { return static_cast<float>(v); }

#ifdef OMNILOOM_AVX2
inline __m256 widen8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 widen8(const at::BFloat16* w) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 widen8(const at::Half* w) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}
inline __m256 widen8(const int8_t* w) {
  __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// The widest vectors this machine has, for skinny_linear's dot products: kWidth fp32 lanes.
#if defined(OMNILOOM_AVX512)
using Vec = __m512;
constexpr int64_t kWidth = 16;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* x) { return _mm512_loadu_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vset1(float v) { return _mm512_set1_ps(v); }
inline void vstore(float* out, Vec v) { _mm512_storeu_ps(out, v); }
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec vwiden(const float* w) { return _mm512_loadu_ps(w); }
inline Vec vwiden(const at::BFloat16* w) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec vwiden(const at::Half* w) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}
inline Vec vwiden(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}
#elif defined(OMNILOOM_AVX2)
using Vec = __m256;
constexpr int64_t kWidth = 8;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* x) { return _mm256_loadu_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vset1(float v) { return _mm256_set1_ps(v); }
inline void vstore(float* out, Vec v) { _mm256_storeu_ps(out, v); }
inline float vsum(Vec v) { return hsum(v); }
template <typename T>
inline Vec vwiden(const T* w) { return widen8(w); }
#endif

// The bytes of weights (from the group two ahead) that one tile prefetches, spread evenly over
// its steps. The tiles of a group share that group's sweep, so memory sees a steady stream
// rather than a burst in the first tile and silence in the others.
struct Sweep {
  const char* from = nullptr;
  int64_t bytes = 0;
};

#ifdef OMNILOOM_AVX2
// Tile t of `tiles`' share of the sweep over a group of `group_bytes` starting at `ahead`.
inline Sweep tile_share(bool prefetch, const char* ahead, int64_t group_bytes, int64_t t,
                        int64_t tiles) {
  if (!prefetch) return Sweep{};
  const int64_t begin = group_bytes * t / tiles;
  return Sweep{ahead + begin, group_bytes * (t + 1) / tiles - begin};
}

// Prefetches the part of the sweep that falls to step s of a tile's `steps`.
inline void sweep_step(Sweep sweep, int64_t s, int64_t steps) {
  if (!sweep.bytes) return;
  const int64_t end = sweep.bytes * (s + 1) / steps;
  for (int64_t b = (sweep.bytes * s / steps) & ~int64_t{63}; b < end; b += 64)
    _mm_prefetch(sweep.from + b, _MM_HINT_T0);
}

// dots[r * kRows + j] = x[r] · w[j] for R activation rows and kRows full weight rows; R is a
// compile-time constant so the R × kRows accumulators stay in registers.
template <typename T, int R>
void dot_block(const float* x, int64_t k, const T* w, float* dots, Sweep sweep) {
  // Narrow weights take several vectors per row per pass, so each pass reads 32+ bytes per row.
  constexpr int kVectors = sizeof(T) >= 4 ? 1 : 4 / static_cast<int>(sizeof(T));
  constexpr int64_t kStep = kWidth * kVectors;
  const int64_t k_wide = k - k % kStep, k_vec = k - k % kWidth, steps = k_wide / kStep;
  Vec acc[R][kRows];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int j = 0; j < kRows; ++j) acc[r][j] = vzero();
  // One vector step at column i; every path sums the vector steps in increasing i, then the
  // scalar tail, so the order (and the bits) never depend on the weight type or batch size.
  auto step = [&](int64_t i) {
    Vec wv[kRows];
#pragma GCC unroll 6
    for (int j = 0; j < kRows; ++j) wv[j] = vwiden(w + j * k + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Vec xv = vload(x + r * k + i);
#pragma GCC unroll 6
      for (int j = 0; j < kRows; ++j) acc[r][j] = vfma(wv[j], xv, acc[r][j]);
    }
  };
  for (int64_t i0 = 0, s = 0; i0 < k_wide; i0 += kStep, ++s) {
    sweep_step(sweep, s, steps);
#pragma GCC unroll 4
    for (int u = 0; u < kVectors; ++u) step(i0 + kWidth * u);
  }
  for (int64_t i = k_wide; i < k_vec; i += kWidth) step(i);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kRows; ++j) {
      float s = vsum(acc[r][j]);
      for (int64_t i = k_vec; i < k; ++i) s += widen(w[j * k + i]) * x[r * k + i];
      dots[r * kRows + j] = s;
    }
}

// The last m (< R) activation rows of a group, through the tile of exactly that many rows.
template <typename T, int R>
void dot_rest(const float* x, int64_t m, int64_t k, const T* w, float* dots, Sweep sweep) {
  if constexpr (R > 0) {
    if (m == R) return dot_block<T, R>(x, k, w, dots, sweep);
    dot_rest<T, R - 1>(x, m, k, w, dots, sweep);
  }
}
#endif

// dots[r * rows + j] = x[r] · w[j] for `rows` weight rows (≤ kRows) and activation rows r < m.
template <typename T>
void dot_rows(const float* x, int64_t m, int64_t k, const T* w, int64_t rows, float* dots,
              bool prefetch) {
#ifdef OMNILOOM_AVX2
  if (rows == kRows) {
    // Every (row, weight row) pair accumulates in the same order whatever the tile, so a
    // row's result does not depend on how many rows share the call.
    // Streaming from memory, the tiles sweep the weight rows two groups ahead between them.
    const int64_t tiles = (m + kTileRows - 1) / kTileRows, bytes = kRows * k * sizeof(T);
    const char* ahead = reinterpret_cast<const char*>(w + 2 * kRows * k);
    auto sweep = [&](int64_t t) { return tile_share(prefetch, ahead, bytes, t, tiles); };
    int64_t r = 0, t = 0;
    for (; r + kTileRows <= m; r += kTileRows, ++t)
      dot_block<T, kTileRows>(x + r * k, k, w, dots + r * kRows, sweep(t));
    dot_rest<T, kTileRows - 1>(x + r * k, m - r, k, w, dots + r * kRows, sweep(t));
    return;
  }
#endif
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t r = 0; r < m; ++r) {
      float s = 0.f;
      for (int64_t i = 0; i < k; ++i) s += widen(w[j * k + i]) * x[r * k + i];
      dots[r * rows + j] = s;
    }
}

template <typename T>
void widen_rows(const T* w, int64_t count, float* out) {
  int64_t i = 0;
#ifdef OMNILOOM_AVX2
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, widen8(w + i));
#endif
  for (; i < count; ++i) out[i] = widen(w[i]);
}

template <typename T>
void skinny_linear_typed(const float* x, const T* w, const float* scales, const float* bias,
                         float* y, int64_t m, int64_t k, int64_t n) {
  const int64_t groups = (n + kRows - 1) / kRows;
  const bool buffered = !std::is_same<T, float>::value && m > kTileRows;
  at::parallel_for(0, groups, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(buffered ? kRows * k : 0);
    float dots[64 * kRows];
    for (int64_t g = begin; g < end; ++g) {
      const int64_t n0 = g * kRows, rows = std::min(kRows, n - n0);
      for (int64_t r0 = 0; r0 < m; r0 += 64) {
        const int64_t rm = std::min<int64_t>(64, m - r0);
        if (buffered) {
          if (r0 == 0) widen_rows(w + n0 * k, rows * k, buffer.data());
          dot_rows<float>(x + r0 * k, rm, k, buffer.data(), rows, dots, false);
        } else {
          dot_rows<T>(x + r0 * k, rm, k, w + n0 * k, rows, dots, r0 == 0);
        }
        for (int64_t r = 0; r < rm; ++r)
          for (int64_t j = 0; j < rows; ++j) {
            float v = dots[r * rows + j];
            if (scales) v *= scales[n0 + j];
            if (bias) v += bias[n0 + j];
            y[(r0 + r) * n + n0 + j] = v;
          }
      }
    }
  });
}

constexpr int64_t kQBlock = 32;  // activations are quantized in blocks of this many

#ifndef OMNILOOM_VNNI
// out[j] = Σ_blocks scale_x[b] · Σ_i x[i]·w_j[i] for `rows` (≤ kQ8Rows) int8 weight rows against
// one quantized activation row; each weight row keeps its own accumulator, whatever `rows` is.
void q8_dots(const int8_t* xr, const float* sr, const int8_t* w, int64_t k, int64_t rows,
             float* out) {
  const int64_t blocks = k / kQBlock;
#ifdef OMNILOOM_AVX2
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kQ8Rows];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    // the weight rows two groups ahead, swept linearly while this group is computed
    _mm_prefetch(reinterpret_cast<const char*>(w + 2 * kQ8Rows * k + b * kQ8Rows * kQBlock),
                 _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + 2 * kQ8Rows * k + b * kQ8Rows * kQBlock + 64),
                 _MM_HINT_T0);
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + b * kQBlock));
    const __m256 scale = _mm256_set1_ps(sr[b]);
    for (int64_t j = 0; j < rows; ++j) {
      const auto* wp = reinterpret_cast<const __m256i*>(w + j * k + b * kQBlock);
      const __m256i wv = _mm256_loadu_si256(wp);
      const __m256i products =
          _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
      const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
      acc[j] = _mm256_fmadd_ps(sums, scale, acc[j]);
    }
  }
  for (int64_t j = 0; j < rows; ++j) out[j] = hsum(acc[j]);
#else
  for (int64_t j = 0; j < rows; ++j) {
    float total = 0.f;
    for (int64_t b = 0; b < blocks; ++b) {
      int32_t sum = 0;
      for (int64_t i = 0; i < kQBlock; ++i) sum += w[j * k + b * kQBlock + i] * xr[b * kQBlock + i];
      total += static_cast<float>(sum) * sr[b];
    }
    out[j] = total;
  }
#endif
}

#endif

// Each block of 32 activations → int8 with scale max|x|/127 (llama.cpp's Q8_0 for activations).
void quantize_blocks(const float* x, int64_t count, int8_t* q, float* scales) {
  for (int64_t b = 0; b < count / kQBlock; ++b) {
    const float* src = x + b * kQBlock;
    float amax = 0.f;
    for (int64_t i = 0; i < kQBlock; ++i) amax = std::max(amax, std::fabs(src[i]));
    scales[b] = amax / 127.f;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    for (int64_t i = 0; i < kQBlock; ++i)
      q[b * kQBlock + i] = static_cast<int8_t>(std::lrint(src[i] * inv));
  }
}

#ifdef OMNILOOM_VNNI
// VNNI's dot product takes one unsigned operand, so activations go in as q + 128 (q ^ 0x80) and
// each accumulator starts at -128·Σw over its four bytes: the int32 lanes then hold Σ q·w exactly,
// the same integers as the AVX2 path. One 64-byte chunk is two blocks of 32: lanes 0–7 belong to
// the first and 8–15 to the second, so `lane_scales` holds each lane's block scale.
template <int R>
void q8_block_vnni(const uint8_t* xu, const float* lane_scales, int64_t k, const int8_t* w,
                   float* dots, Sweep sweep) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[R][kQ8Rows];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kQ8Rows; ++j) acc[r][j] = _mm512_setzero_ps();
  // One chunk at byte i; `bytes` and `lanes` mask off the missing half of a last 32-byte block.
  auto step = [&](int64_t i, __mmask64 bytes, __mmask16 lanes) {
    __m512i wv[kQ8Rows], start[kQ8Rows];
    for (int j = 0; j < kQ8Rows; ++j) {
      wv[j] = _mm512_maskz_loadu_epi8(bytes, w + j * k + i);
      start[j] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, wv[j]));
    }
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_maskz_loadu_epi8(bytes, xu + r * k + i);
      const __m512 sv = _mm512_maskz_loadu_ps(lanes, lane_scales + r * (k / 4) + i / 4);
      for (int j = 0; j < kQ8Rows; ++j) {
        const __m512i sums = _mm512_dpbusd_epi32(start[j], xv, wv[j]);
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), sv, acc[r][j]);
      }
    }
  };
  const int64_t full = k / 64;
  for (int64_t c = 0; c < full; ++c) {
    sweep_step(sweep, c, full);
    step(c * 64, ~__mmask64{0}, __mmask16(0xFFFF));
  }
  if (k % 64) step(full * 64, (__mmask64{1} << (k % 64)) - 1, __mmask16(0x00FF));
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kQ8Rows; ++j) dots[r * kQ8Rows + j] = _mm512_reduce_add_ps(acc[r][j]);
}

template <int R>
void q8_rest_vnni(const uint8_t* xu, const float* lane_scales, int64_t m, int64_t k,
                  const int8_t* w, float* dots, Sweep sweep) {
  if constexpr (R > 0) {
    if (m == R) return q8_block_vnni<R>(xu, lane_scales, k, w, dots, sweep);
    q8_rest_vnni<R - 1>(xu, lane_scales, m, k, w, dots, sweep);
  }
}

constexpr int kQ8TileRows = 4;  // activation rows per VNNI tile: 16 accumulators

// dots[r * kQ8Rows + j] for all m activation rows against one full group of kQ8Rows weight rows,
// tile by tile, the tiles sharing the prefetch of the group two ahead.
void q8_group_vnni(const uint8_t* xu, const float* lane_scales, int64_t m, int64_t k,
                   const int8_t* w, float* dots, bool prefetch) {
  const int64_t tiles = (m + kQ8TileRows - 1) / kQ8TileRows, bytes = kQ8Rows * k;
  const char* ahead = reinterpret_cast<const char*>(w + 2 * kQ8Rows * k);
  auto sweep = [&](int64_t t) { return tile_share(prefetch, ahead, bytes, t, tiles); };
  const int64_t scale_stride = k / 4;
  int64_t r = 0, t = 0;
  for (; r + kQ8TileRows <= m; r += kQ8TileRows, ++t)
    q8_block_vnni<kQ8TileRows>(xu + r * k, lane_scales + r * scale_stride, k, w,
                               dots + r * kQ8Rows, sweep(t));
  q8_rest_vnni<kQ8TileRows - 1>(xu + r * k, lane_scales + r * scale_stride, m - r, k, w,
                                dots + r * kQ8Rows, sweep(t));
}

void skinny_linear_q8_vnni(const int8_t* qx, const float* sx, const int8_t* w,
                           const float* scales, const float* bias, float* y, int64_t m, int64_t k,
                           int64_t n) {
  std::vector<uint8_t> xu(m * k);
  for (int64_t i = 0; i < m * k; ++i) xu[i] = static_cast<uint8_t>(qx[i]) ^ 0x80;
  std::vector<float> lane_scales(m * k / 4);
  for (int64_t i = 0; i < m * k / 4; ++i) lane_scales[i] = sx[i * 4 / kQBlock];
  const int64_t groups = (n + kQ8Rows - 1) / kQ8Rows;
  at::parallel_for(0, groups, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> dots(m * kQ8Rows);
    std::vector<int8_t> padded;
    for (int64_t g = begin; g < end; ++g) {
      const int64_t n0 = g * kQ8Rows, rows = std::min(kQ8Rows, n - n0);
      const int8_t* group = w + n0 * k;
      if (rows < kQ8Rows) {  // the last, short group: zero rows make up the tile
        padded.assign(kQ8Rows * k, 0);
        std::copy(group, group + rows * k, padded.begin());
        group = padded.data();
      }
      q8_group_vnni(xu.data(), lane_scales.data(), m, k, group, dots.data(), g + 2 < groups);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < rows; ++j)
          y[r * n + n0 + j] = dots[r * kQ8Rows + j] * scales[n0 + j] + (bias ? bias[n0 + j] : 0.f);
    }
  });
}
#endif

// int8 weights times int8 activations (blocks of 32 values of a row, each with its own scale),
// summed exactly in int32 per block, then scaled in fp32. Needs k divisible by 32. Rows are
// quantized on their own, so results stay batch invariant.
void skinny_linear_q8(const float* x, const int8_t* w, const float* scales, const float* bias,
                      float* y, int64_t m, int64_t k, int64_t n) {
  const int64_t blocks = k / kQBlock;
  std::vector<int8_t> qx(m * k);
  std::vector<float> sx(m * blocks);
  quantize_blocks(x, m * k, qx.data(), sx.data());
#ifdef OMNILOOM_VNNI
  skinny_linear_q8_vnni(qx.data(), sx.data(), w, scales, bias, y, m, k, n);
#else
  const int8_t* qp = qx.data();
  const float* sp = sx.data();
  const int64_t groups = (n + kQ8Rows - 1) / kQ8Rows;
  at::parallel_for(0, groups, 8, [=](int64_t begin, int64_t end) {
    float dots[kQ8Rows];
    for (int64_t g = begin; g < end; ++g) {
      const int64_t n0 = g * kQ8Rows, rows = std::min(kQ8Rows, n - n0);
      for (int64_t r = 0; r < m; ++r) {
        q8_dots(qp + r * k, sp + r * blocks, w + n0 * k, k, rows, dots);
        for (int64_t j = 0; j < rows; ++j)
          y[r * n + n0 + j] = dots[j] * scales[n0 + j] + (bias ? bias[n0 + j] : 0.f);
      }
    }
  });
#endif
}

torch::Tensor skinny_linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> scales,
                            c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x must be (M, K) float32");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1), "weight must be (N, K)");
  x = x.contiguous();
  weight = weight.contiguous();
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  auto y = torch::empty({m, n}, x.options());
  const float* s = nullptr;
  const float* b = nullptr;
  torch::Tensor s_holder, b_holder;
  if (scales && scales->defined()) {
    s_holder = scales->to(torch::kFloat32).contiguous();
    TORCH_CHECK(s_holder.numel() == n, "one scale per output row");
    s = s_holder.data_ptr<float>();
  }
  if (bias && bias->defined()) {
    b_holder = bias->to(torch::kFloat32).contiguous();
    TORCH_CHECK(b_holder.numel() == n, "one bias per output row");
    b = b_holder.data_ptr<float>();
  }
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (weight.scalar_type()) {
    case torch::kFloat32:
      skinny_linear_typed(xp, weight.data_ptr<float>(), s, b, yp, m, k, n);
      break;
    case torch::kBFloat16:
      skinny_linear_typed(xp, weight.data_ptr<at::BFloat16>(), s, b, yp, m, k, n);
      break;
    case torch::kFloat16:
      skinny_linear_typed(xp, weight.data_ptr<at::Half>(), s, b, yp, m, k, n);
      break;
    case torch::kInt8:
      if (s && k % kQBlock == 0)
        skinny_linear_q8(xp, weight.data_ptr<int8_t>(), s, b, yp, m, k, n);
      else
        skinny_linear_typed(xp, weight.data_ptr<int8_t>(), s, b, yp, m, k, n);
      break;
    default:
      TORCH_CHECK(false, "weight dtype must be float32, bfloat16, float16 or int8");
  }
  return y;
}

float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float total = 0.f;
#ifdef OMNILOOM_AVX2
  Vec acc = vzero();
  for (; i + kWidth <= n; i += kWidth) acc = vfma(vload(a + i), vload(b + i), acc);
  total = vsum(acc);
#endif
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// y += p · x
void axpy(float p, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#ifdef OMNILOOM_AVX2
  const __m256 pv = _mm256_set1_ps(p);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += p * x[i];
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32,
              "rms_norm takes float32");
  x = x.contiguous();
  weight = weight.contiguous();
  const int64_t h = x.size(-1), rows = x.numel() / h;
  TORCH_CHECK(weight.numel() == h, "one weight per feature");
  auto y = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * h;
      float squares = 0.f;
      for (int64_t i = 0; i < h; ++i) squares += row[i] * row[i];
      const float inv = 1.f / std::sqrt(squares / static_cast<float>(h) + static_cast<float>(eps));
      for (int64_t i = 0; i < h; ++i) yp[r * h + i] = wp[i] * (row[i] * inv);
    }
  });
  return y;
}

// In place, rotate-half RoPE: x (T, heads, d) contiguous, cos and sin (T, d).
void rope_(torch::Tensor x, torch::Tensor cos, torch::Tensor sin) {
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == torch::kFloat32, "x: contiguous float32");
  cos = cos.to(torch::kFloat32).contiguous();
  sin = sin.to(torch::kFloat32).contiguous();
  const int64_t tokens = cos.size(0), d = cos.size(1), half = d / 2;
  TORCH_CHECK(x.numel() % (tokens * d) == 0, "x must be (tokens, heads, head_dim)");
  const int64_t heads = x.numel() / (tokens * d);
  float* xp = x.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  at::parallel_for(0, tokens, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* c = cp + t * d;
      const float* s = sp + t * d;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (t * heads + h) * d;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i + half] + a * s[i + half];
        }
      }
    }
  });
}

#ifdef OMNILOOM_AVX2
// e^x for 8 floats: 2^n · e^r with n = round(x · log2 e) and r = x − n · ln 2 (in two parts), e^r
// from Cephes' expf polynomial; within 2 ulp of std::exp over the clamped range.
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                  5.0000001201e-1f})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

// scores[j] = e^(scores[j] − best), 8 at a time where it can (which path a score takes depends
// only on its index and the context's length).
void softmax_exponentials(float* scores, int64_t length, float best) {
  int64_t j = 0;
#ifdef OMNILOOM_AVX2
  const __m256 shift = _mm256_set1_ps(best);
  for (; j + 8 <= length; j += 8)
    _mm256_storeu_ps(scores + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), shift)));
#endif
  for (; j < length; ++j) scores[j] = std::exp(scores[j] - best);
}

// scores[j] = query · keys[slots[j]] · scale for `length` slots. Four keys at a time, each with
// its own accumulator summed over i in the same order as dot(), so the bits match dot()'s.
void attention_scores(const float* query, const float* kp, const int64_t* slots, int64_t length,
                      int64_t stride, int64_t d, float scale, float* scores) {
  int64_t j = 0;
#ifdef OMNILOOM_AVX2
  if (d % kWidth == 0) {
    for (; j + 4 <= length; j += 4) {
      const float* key[4];
      Vec acc[4];
      for (int u = 0; u < 4; ++u) {
        key[u] = kp + slots[j + u] * stride;
        acc[u] = vzero();
      }
      for (int64_t i = 0; i < d; i += kWidth) {
        const Vec qv = vload(query + i);
        for (int u = 0; u < 4; ++u) acc[u] = vfma(qv, vload(key[u] + i), acc[u]);
      }
      for (int u = 0; u < 4; ++u) scores[j + u] = vsum(acc[u]) * scale;
    }
  }
#endif
  for (; j < length; ++j) scores[j] = dot(query, kp + slots[j] * stride, d) * scale;
}

// out = Σ_j weights[j] · values[slots[j]], accumulated in increasing j as repeated axpy() calls
// would (same bits), but with 64 outputs at a time held in registers across all j.
void weighted_values(const float* weights, const float* vp, const int64_t* slots, int64_t length,
                     int64_t stride, int64_t d, float* out) {
  int64_t i0 = 0;
#ifdef OMNILOOM_AVX2
  constexpr int kVectors = 64 / kWidth;
  for (; i0 + 64 <= d; i0 += 64) {
    Vec acc[kVectors];
    for (int u = 0; u < kVectors; ++u) acc[u] = vzero();
    for (int64_t j = 0; j < length; ++j) {
      const float* v = vp + slots[j] * stride + i0;
      const Vec p = vset1(weights[j]);
      for (int u = 0; u < kVectors; ++u) acc[u] = vfma(p, vload(v + kWidth * u), acc[u]);
    }
    for (int u = 0; u < kVectors; ++u) vstore(out + i0 + kWidth * u, acc[u]);
  }
#endif
  for (int64_t i = i0; i < d; ++i) out[i] = 0.f;  // the tail that the 64-wide chunks did not write
  for (int64_t j = 0; j < length; ++j) axpy(weights[j], vp + slots[j] * stride + i0, out + i0, d - i0);
}

// q (D, heads, d); keys and values (slots, kv_heads, d); slots (D, L) with the first lengths[i]
// entries of row i valid. Returns softmax(q·kᵀ · scale) · v per sequence and head, (D, heads, d).
// Work items are (sequence, kv head) pairs: the query heads sharing a kv head (GQA) read its keys
// and values while they are in L1.
torch::Tensor paged_attention(torch::Tensor q, torch::Tensor keys, torch::Tensor values,
                                     torch::Tensor slots, torch::Tensor lengths, double scale) {
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 && keys.scalar_type() == torch::kFloat32 &&
                  values.scalar_type() == torch::kFloat32,
              "paged_attention takes float32");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous(), "the pool must be contiguous");
  q = q.contiguous();
  slots = slots.to(torch::kInt64).contiguous();
  lengths = lengths.to(torch::kInt64).contiguous();
  const int64_t seqs = q.size(0), heads = q.size(1), d = q.size(2);
  const int64_t kv_heads = keys.size(1), group = heads / kv_heads, width = slots.size(1);
  TORCH_CHECK(heads % kv_heads == 0 && keys.size(2) == d, "head shapes do not match");
  auto out = torch::empty_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);
  const int64_t stride = kv_heads * d;
  at::parallel_for(0, seqs * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t seq = item / kv_heads, kv = item % kv_heads, length = lp[seq];
      const int64_t* row_slots = sp + seq * width;
      scores.resize(length);
      for (int64_t head = kv * group; head < (kv + 1) * group; ++head) {
        const int64_t at = (seq * heads + head) * d;
        attention_scores(qp + at, kp + kv * d, row_slots, length, stride, d, fscale, scores.data());
        float best = -INFINITY;
        for (int64_t j = 0; j < length; ++j) best = std::max(best, scores[j]);
        softmax_exponentials(scores.data(), length, best);
        float total = 0.f;
        for (int64_t j = 0; j < length; ++j) total += scores[j];
        for (int64_t j = 0; j < length; ++j) scores[j] /= total;
        weighted_values(scores.data(), vp + kv * d, row_slots, length, stride, d, op + at);
      }
    }
  });
  return out;
}

// silu(gate) · up, elementwise. Row by row, so which path (8-wide or scalar tail) an element
// takes depends only on its column, never on how many rows share the call.
torch::Tensor silu_mul(torch::Tensor gate, torch::Tensor up) {
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.scalar_type() == torch::kFloat32 &&
                  up.scalar_type() == torch::kFloat32,
              "silu_mul takes two float32 tensors of one shape");
  gate = gate.contiguous();
  up = up.contiguous();
  auto out = torch::empty_like(gate);
  const int64_t cols = gate.dim() ? gate.size(-1) : 1, rows = cols ? gate.numel() / cols : 0;
  const float* gp = gate.data_ptr<float>();
  const float* up_p = up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* g = gp + r * cols;
      const float* u = up_p + r * cols;
      float* o = op + r * cols;
      int64_t i = 0;
#ifdef OMNILOOM_AVX2
      const __m256 one = _mm256_set1_ps(1.f);
      for (; i + 8 <= cols; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
      }
#endif
      for (; i < cols; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    }
  });
  return out;
}

// The decoder stack for steps with no adapter on: the same kernels as the layer-by-layer path,
// called from C++ with no Python between them.
class LayerStack {
 public:
  // Per layer: input norm, q, k, v, o, post-attention norm, gate, up, down; each projection as
  // (weight, scales, bias) with empty tensors for absent scales or bias.
  LayerStack(std::vector<std::vector<torch::Tensor>> layers, double eps, int64_t heads,
              int64_t kv_heads, int64_t head_dim)
      : layers_(std::move(layers)), eps_(eps), heads_(heads), kv_heads_(kv_heads),
        head_dim_(head_dim) {
    for (const auto& layer : layers_) TORCH_CHECK(layer.size() == 23, "23 tensors per layer");
  }

  // x (D, hidden) embeddings; cos/sin (D, head_dim); keys/values (layers, slots, kv_heads, d);
  // write_slots (D,) where each new key/value goes; slots (D, L) and lengths (D,) the contexts.
  torch::Tensor forward(torch::Tensor x, torch::Tensor cos, torch::Tensor sin, torch::Tensor keys,
                        torch::Tensor values, torch::Tensor write_slots, torch::Tensor slots,
                        torch::Tensor lengths) {
    const int64_t d = x.size(0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    for (size_t i = 0; i < layers_.size(); ++i) {
      const auto& w = layers_[i];
      auto h = rms_norm(x, w[0], eps_);
      auto q = project(h, w, 1);
      auto k = project(h, w, 4);
      auto v = project(h, w, 7);
      rope_(q, cos, sin);
      rope_(k, cos, sin);
      auto layer_keys = keys[i];
      auto layer_values = values[i];
      layer_keys.index_copy_(0, write_slots, k.view({d, kv_heads_, head_dim_}));
      layer_values.index_copy_(0, write_slots, v.view({d, kv_heads_, head_dim_}));
      auto attn = paged_attention(q.view({d, heads_, head_dim_}), layer_keys, layer_values,
                                         slots, lengths, scale);
      x = x + project(attn.view({d, heads_ * head_dim_}), w, 10);
      h = rms_norm(x, w[13], eps_);
      x = x + project(silu_mul(project(h, w, 14), project(h, w, 17)), w, 20);
    }
    return x;
  }

 private:
  static c10::optional<torch::Tensor> present(const torch::Tensor& t) {
    return t.numel() ? c10::optional<torch::Tensor>(t) : c10::nullopt;
  }
  torch::Tensor project(const torch::Tensor& x, const std::vector<torch::Tensor>& w, size_t at) {
    return skinny_linear(x, w[at], present(w[at + 1]), present(w[at + 2]));
  }

  std::vector<std::vector<torch::Tensor>> layers_;
  double eps_;
  int64_t heads_, kv_heads_, head_dim_;
};

bool vectorized() {
#ifdef OMNILOOM_AVX2
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The long-running calls let go of the GIL so the HTTP thread can stream meanwhile.
  using release = py::call_guard<py::gil_scoped_release>;
  m.def("skinny_linear", &skinny_linear, "y = x @ W.T * scales + bias for few rows of x",
        py::arg("x"), py::arg("weight"), py::arg("scales") = py::none(), py::arg("bias") = py::none(),
        release());
  m.def("rms_norm", &rms_norm, "x / sqrt(mean(x^2) + eps) * weight per row");
  m.def("rope_", &rope_, "rotate-half rotary embedding, in place");
  m.def("paged_attention", &paged_attention,
        "each query row attending over its own slots of the paged KV pool", release());
  m.def("silu_mul", &silu_mul, "silu(gate) * up");
  py::class_<LayerStack>(m, "LayerStack")
      .def(py::init<std::vector<std::vector<torch::Tensor>>, double, int64_t, int64_t, int64_t>())
      .def("forward", &LayerStack::forward, release());
  m.def("vectorized", &vectorized, "whether the AVX2/FMA/F16C path was compiled in");
}
