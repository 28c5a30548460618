// The f32-activation matrix kernel, written once over a SIMD traits type `S` and compiled once per
// instruction set (linear_avx512.cpp, linear_avx2.cpp). Included only by those files: everything
// here sits in their anonymous namespaces so no ISA-specific code is shared with generic code.
//
// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for rows n in [n0, n1).
// Small M (decode): two weight rows at a time, converted to f32 in registers and multiplied with
// up to 4 activation rows, so each thread streams its rows from memory exactly once. Larger M (prefill):
// the 4 rows are converted once into an f32 scratch tile that stays in L1/L2 and is reused for
// every group of 4 activation rows.

template <class S, class WLoad, int MR>
inline void tile_4xMR(const typename WLoad::elem* w0, const typename WLoad::elem* w1,
                      const typename WLoad::elem* w2, const typename WLoad::elem* w3,
                      const float* x, int64_t ldx, int64_t K, float out[4][4]) {
  typename S::vec acc[MR][4];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = S::zero();
  const int64_t kv = K - K % S::kWidth;
  for (int64_t k = 0; k < kv; k += S::kWidth) {
    typename S::vec wv[4] = {WLoad::load(w0 + k), WLoad::load(w1 + k), WLoad::load(w2 + k),
                             WLoad::load(w3 + k)};
    for (int m = 0; m < MR; ++m) {
      typename S::vec xv = S::load(x + m * ldx + k);
      for (int r = 0; r < 4; ++r) acc[m][r] = S::fma(xv, wv[r], acc[m][r]);
    }
  }
  const typename WLoad::elem* ws[4] = {w0, w1, w2, w3};
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < 4; ++r) {
      float s = S::reduce(acc[m][r]);
      for (int64_t k = kv; k < K; ++k) s += x[m * ldx + k] * WLoad::scalar(ws[r][k]);
      out[m][r] = s;
    }
}

// Two weight rows against MR activation rows: 2 * MR independent accumulators.
//
// Every path of this kernel sums each output in the same order (lane j of one vector accumulator
// takes k = j, j + W, j + 2W, ... in turn, then the same horizontal reduction, then the scalar
// tail), so a row's result is bitwise the same whatever the batch size or tile: batching, chunked
// prefill and preemption never change a request's output.
template <class S, class WLoad, int MR>
inline void rows2_xMR(const typename WLoad::elem* w0, const typename WLoad::elem* w1,
                      const float* x, int64_t ldx, int64_t K, float out[4][4]) {
  typename S::vec a0[MR], a1[MR];
  for (int m = 0; m < MR; ++m) a0[m] = a1[m] = S::zero();
  const int64_t kv = K - K % S::kWidth;
  for (int64_t k = 0; k < kv; k += S::kWidth) {
    typename S::vec v0 = WLoad::load(w0 + k), v1 = WLoad::load(w1 + k);
    for (int m = 0; m < MR; ++m) {
      typename S::vec xv = S::load(x + m * ldx + k);
      a0[m] = S::fma(xv, v0, a0[m]);
      a1[m] = S::fma(xv, v1, a1[m]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    float s0 = S::reduce(a0[m]), s1 = S::reduce(a1[m]);
    for (int64_t k = kv; k < K; ++k) {
      s0 += x[m * ldx + k] * WLoad::scalar(w0[k]);
      s1 += x[m * ldx + k] * WLoad::scalar(w1[k]);
    }
    out[m][0] = s0;
    out[m][1] = s1;
  }
}

template <class S, class WLoad>
inline void rows2_dispatch(int mr, const typename WLoad::elem* w0, const typename WLoad::elem* w1,
                           const float* x, int64_t ldx, int64_t K, float out[4][4]) {
  switch (mr) {
    case 1: rows2_xMR<S, WLoad, 1>(w0, w1, x, ldx, K, out); break;
    case 2: rows2_xMR<S, WLoad, 2>(w0, w1, x, ldx, K, out); break;
    case 3: rows2_xMR<S, WLoad, 3>(w0, w1, x, ldx, K, out); break;
    default: rows2_xMR<S, WLoad, 4>(w0, w1, x, ldx, K, out); break;
  }
}

template <class S, class WLoad>
inline void tile_dispatch(int mr, const typename WLoad::elem* const* w, const float* x,
                          int64_t ldx, int64_t K, float out[4][4]) {
  switch (mr) {
    case 1: tile_4xMR<S, WLoad, 1>(w[0], w[1], w[2], w[3], x, ldx, K, out); break;
    case 2: tile_4xMR<S, WLoad, 2>(w[0], w[1], w[2], w[3], x, ldx, K, out); break;
    case 3: tile_4xMR<S, WLoad, 3>(w[0], w[1], w[2], w[3], x, ldx, K, out); break;
    default: tile_4xMR<S, WLoad, 4>(w[0], w[1], w[2], w[3], x, ldx, K, out); break;
  }
}

template <class S>
struct F32Load {
  using elem = float;
  static typename S::vec load(const float* p) { return S::load(p); }
  static float scalar(float v) { return v; }
  static void to_f32(const float* src, float* dst, int64_t n) {
    __builtin_memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
};

template <class S, class WLoad>
void linear_range(const typename WLoad::elem* w, const float* x, int64_t M, int64_t K, float* y,
                  int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch) {
  using WE = typename WLoad::elem;
  float out[4][4];
  if (M <= 4) {
    // Row i is paired with row i + half, so each of the two weight streams runs through memory
    // strictly in order (pairing neighbours would make each stream skip every other row).
    const int64_t half = (n1 - n0 + 1) / 2;
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = n0 + i, b = n0 + half + i;
      const bool two = b < n1;  // with an odd count the last row is paired with itself
      rows2_dispatch<S, WLoad>(static_cast<int>(M), w + a * K, w + (two ? b : a) * K, x, K, K, out);
      for (int64_t m = 0; m < M; ++m) {
        y[m * N + a] = out[m][0] + (bias ? bias[a] : 0.0f);
        if (two) y[m * N + b] = out[m][1] + (bias ? bias[b] : 0.0f);
      }
    }
    return;
  }
  for (int64_t n = n0; n < n1; n += 4) {
    const int nr = static_cast<int>(n1 - n < 4 ? n1 - n : 4);
    const WE* rows[4];
    // A partial tile repeats its last row; the duplicate results are not stored.
    for (int r = 0; r < 4; ++r) rows[r] = w + (n + (r < nr ? r : nr - 1)) * K;
    for (int r = 0; r < 4; ++r) WLoad::to_f32(rows[r], scratch + r * K, K);
    const float* srows[4] = {scratch, scratch + K, scratch + 2 * K, scratch + 3 * K};
    for (int64_t m = 0; m < M; m += 4) {
      const int mr = static_cast<int>(M - m < 4 ? M - m : 4);
      tile_dispatch<S, F32Load<S>>(mr, srows, x + m * K, K, K, out);
      for (int i = 0; i < mr; ++i)
        for (int r = 0; r < nr; ++r) y[(m + i) * N + n + r] = out[i][r] + (bias ? bias[n + r] : 0.0f);
    }
  }
}

template <class S>
void linear_range_any(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                      int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch) {
  switch (wtype) {
    case 0: linear_range<S, F32Load<S>>(static_cast<const float*>(w), x, M, K, y, N, bias, n0, n1, scratch); break;
    case 1: linear_range<S, typename S::BF16Load>(static_cast<const uint16_t*>(w), x, M, K, y, N, bias, n0, n1, scratch); break;
    default: linear_range<S, typename S::F16Load>(static_cast<const uint16_t*>(w), x, M, K, y, N, bias, n0, n1, scratch); break;
  }
}

// ---- Block-quantized weights with f32 activations ----
//
// Each weight row is dequantized into an f32 scratch row that stays in L1 (SIMD for Q8_0, Q4_0
// and Q4_1, the reference dequantization for the other types) and then multiplied exactly as f32
// weights are, so results equal the dequantized model computed in f32 (what transformers runs
// for a GGUF checkpoint) and keep the kernel's one summation order.
// The 6-bit scales and mins of a Q4_K/Q5_K block's eight sub-blocks, packed in 12 bytes.
inline void k_scales(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    mn[j] = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

template <class S>
inline void dequant_row(int qtype, const uint8_t* src, float* dst, int64_t K, DequantRowFn fallback) {
  const int64_t blocks = K / 32;
  switch (qtype) {
    case kQuantQ8_0:
      for (int64_t b = 0; b < blocks; ++b) S::dq_q8_0(src + b * 34, dst + b * 32);
      return;
    case kQuantQ4_0:
      for (int64_t b = 0; b < blocks; ++b) S::dq_q4_0(src + b * 18, dst + b * 32);
      return;
    case kQuantQ4_1:
      for (int64_t b = 0; b < blocks; ++b) S::dq_q4_1(src + b * 20, dst + b * 32);
      return;
    case kQuantQ4_K:
      for (int64_t b = 0; b < K / 256; ++b) {
        // Sub-block s: (d * scale) * q - dmin * min, the reference's operations in its order.
        const float d = S::f16(src + b * 144), dmin = S::f16(src + b * 144 + 2);
        uint8_t sc[8], mn[8];
        k_scales(src + b * 144 + 4, sc, mn);
        for (int sb = 0; sb < 8; ++sb)
          S::dq_nibbles32(src + b * 144 + 16 + 32 * (sb / 2), sb % 2, d * sc[sb], dmin * mn[sb], dst + b * 256 + 32 * sb);
      }
      return;
    default:
      fallback(src, dst, K);
  }
}

template <class S>
void linear_range_block_impl(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                             const float* x, int64_t M, int64_t K, float* y, int64_t N,
                             const float* bias, int64_t n0, int64_t n1, float* scratch) {
  const uint8_t* wb = static_cast<const uint8_t*>(w);
  float out[4][4];
  if (M <= 4) {
    for (int64_t n = n0; n < n1; n += 2) {
      const int nr = n + 1 < n1 ? 2 : 1;
      for (int r = 0; r < nr; ++r) dequant_row<S>(qtype, wb + (n + r) * row_bytes, scratch + r * K, K, fallback);
      rows2_dispatch<S, F32Load<S>>(static_cast<int>(M), scratch, scratch + (nr - 1) * K, x, K, K, out);
      for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < nr; ++r) y[m * N + n + r] = out[m][r] + (bias ? bias[n + r] : 0.0f);
    }
    return;
  }
  for (int64_t n = n0; n < n1; n += 4) {
    const int nr = static_cast<int>(n1 - n < 4 ? n1 - n : 4);
    for (int r = 0; r < 4; ++r)
      dequant_row<S>(qtype, wb + (n + (r < nr ? r : nr - 1)) * row_bytes, scratch + r * K, K, fallback);
    const float* srows[4] = {scratch, scratch + K, scratch + 2 * K, scratch + 3 * K};
    for (int64_t m = 0; m < M; m += 4) {
      const int mr = static_cast<int>(M - m < 4 ? M - m : 4);
      tile_dispatch<S, F32Load<S>>(mr, srows, x + m * K, K, K, out);
      for (int i = 0; i < mr; ++i)
        for (int r = 0; r < nr; ++r) y[(m + i) * N + n + r] = out[i][r] + (bias ? bias[n + r] : 0.0f);
    }
  }
}
