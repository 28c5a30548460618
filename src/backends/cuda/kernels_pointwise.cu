// Row-wise and element-wise kernels: embedding, RMSNorm variants, SiLU-and-multiply, RoPE, add,
// row gather. Each is memory bound and simple; they are written to round like the CPU reference
// (cpu::ref in backends/cpu/ref_ops.cpp): norms sum squares in double, and products that the CPU
// computes unfused are spelled with __fmul_rn/__fadd_rn so nvcc cannot contract them into FMAs.
#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

// A decode step normalizes a single row: more threads per row means fewer dependent loads each.
constexpr int kRowThreads = 512;

unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, int64_t{1} << 20));
}

template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table, const int32_t* __restrict__ ids,
                                 int64_t hidden, float* __restrict__ out, const int32_t* __restrict__ from,
                                 const int32_t* __restrict__ drawn) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const T* row = table + static_cast<int64_t>(lookup_id(ids, from, drawn, blockIdx.x)) * hidden;
  float* o = out + static_cast<int64_t>(blockIdx.x) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = to_f32(row[i]);
}

// Four values at once: float4 in, one 16/8-byte store out.
template <typename T>
__device__ __forceinline__ void store4(T* __restrict__ p, float a, float b, float c, float d);
template <>
__device__ __forceinline__ void store4<float>(float* __restrict__ p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* __restrict__ p, float a, float b, float c,
                                                      float d) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 v;
  v.x = *reinterpret_cast<const uint32_t*>(&lo);
  v.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = v;
}
template <>
__device__ __forceinline__ void store4<__half>(__half* __restrict__ p, float a, float b, float c, float d) {
  const __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
  uint2 v;
  v.x = *reinterpret_cast<const uint32_t*>(&lo);
  v.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = v;
}

// One block per row. With `residual`, the row is residual + x, written back before the norm. The
// output is f32, or rounded to a 16-bit type for a tensor-core product (the value narrow_kernel
// would make of the f32 result). vec: n % 4 == 0 and every row 16-byte aligned, so each thread
// takes four neighbouring values at a time.
template <typename OutT>
__global__ void rms_norm_kernel(float* __restrict__ residual, const float* __restrict__ x,
                                const float* __restrict__ weight, float eps, int64_t n, bool vec,
                                OutT* __restrict__ out) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  const float* src = x + base;
  double ss = 0;
  if (vec) {
    const int64_t step = 4 * static_cast<int64_t>(blockDim.x);
    if (residual) {
      float* r = residual + base;
      for (int64_t i = 4 * threadIdx.x; i < n; i += step) {
        const float4 a = *reinterpret_cast<const float4*>(r + i), b = *reinterpret_cast<const float4*>(src + i);
        const float4 v = make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
        *reinterpret_cast<float4*>(r + i) = v;
        ss += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
              static_cast<double>(v.w) * v.w;
      }
      src = r;  // each thread reads back only the elements it wrote itself
    } else {
      for (int64_t i = 4 * threadIdx.x; i < n; i += step) {
        const float4 v = *reinterpret_cast<const float4*>(src + i);
        ss += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
              static_cast<double>(v.w) * v.w;
      }
    }
    ss = block_sum(ss);
    const float inv = rms_inverse(ss, n, eps);
    for (int64_t i = 4 * threadIdx.x; i < n; i += step) {
      const float4 y = scale4(*reinterpret_cast<const float4*>(src + i), *reinterpret_cast<const float4*>(weight + i), inv);
      store4<OutT>(out + base + i, y.x, y.y, y.z, y.w);
    }
    return;
  }
  if (residual) {
    float* r = residual + base;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      float v = __fadd_rn(r[i], src[i]);
      r[i] = v;
      ss += static_cast<double>(v) * v;
    }
    src = r;
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(src[i]) * src[i];
  }
  ss = block_sum(ss);
  const float inv = rms_inverse(ss, n, eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    out[base + i] = from_f32<OutT>(__fmul_rn(weight[i], __fmul_rn(src[i], inv)));
}

// One block per (row, head), in place: the sum is complete (block_sum syncs) before any write.
__global__ void head_rms_norm_kernel(float* __restrict__ x, int64_t cols, int64_t first_col,
                                     int64_t num_heads, int64_t d, const float* __restrict__ weight,
                                     float eps) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t row = blockIdx.x / num_heads, head = blockIdx.x % num_heads;
  float* p = x + row * cols + first_col + head * d;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += static_cast<double>(p[i]) * p[i];
  ss = block_sum(ss);
  const float inv = rms_inverse(ss, d, eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) p[i] = __fmul_rn(weight[i], __fmul_rn(p[i], inv));
}

// out[t, i] = silu(gu[t, i]) * gu[t, inter + i], f32 or rounded to a 16-bit type (for the down
// product). vec: inter % 4 == 0 and both arrays 16-byte aligned: four values per thread and step.
template <typename OutT>
__global__ void silu_mul_kernel(const float* __restrict__ gu, int64_t tokens, int64_t inter, bool vec,
                                OutT* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (vec) {
    const int64_t quads = inter / 4, n = tokens * quads;
    for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += stride) {
      const int64_t t = e / quads, i = (e - t * quads) * 4;
      const float4 g = *reinterpret_cast<const float4*>(gu + t * 2 * inter + i);
      const float4 u = *reinterpret_cast<const float4*>(gu + t * 2 * inter + inter + i);
      store4<OutT>(out + t * inter + i, silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z),
                   silu_times(g.w, u.w));
    }
    return;
  }
  const int64_t n = tokens * inter;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += stride) {
    const int64_t t = e / inter, i = e % inter;
    const float g = gu[t * 2 * inter + i], u = gu[t * 2 * inter + inter + i];
    out[e] = from_f32<OutT>(silu_times(g, u));
  }
}

// One block per (token, head); a thread per rotated pair.
__global__ void rope_kernel(float* __restrict__ x, int64_t cols, int64_t num_heads,
                            int64_t head_dim, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t t = blockIdx.x / num_heads, h = blockIdx.x % num_heads, half = head_dim / 2;
  float* p = x + t * cols + h * head_dim;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    // The angle in f32 like the reference; precise sincosf because positions reach 1e5 radians.
    const float angle = __fmul_rn(pos, inv_freq[i]);
    float s, c;
    sincosf(angle, &s, &c);
    const float a = p[i], b = p[i + half];
    p[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    p[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

__global__ void add_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[e] = __fadd_rn(out[e], x[e]);
}

__global__ void product_epilogue_kernel(const float* __restrict__ p, const float* __restrict__ bias, int64_t rows,
                                        int64_t N, int mode, float* __restrict__ out) {
  const int64_t cols = mode == 2 ? N / 2 : N;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * cols;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = e / cols, o = e % cols;
    if (mode == 2) out[e] = swiglu_product(p[m * N + o], p[m * N + cols + o], bias, o, cols);
    else store_product(out + e, p[e], bias, o, mode == 1);
  }
}

__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                   int64_t cols, float* __restrict__ out) {
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * cols;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// Fewest whole warps covering n elements, up to kRowThreads.
int row_threads(int64_t n) {
  return static_cast<int>(std::min<int64_t>(kRowThreads, std::max<int64_t>(32, (n + 31) / 32 * 32)));
}

template <typename T>
__global__ void narrow_kernel(const float* __restrict__ x, int64_t n, T* __restrict__ out) {
  // Four elements per thread: one 16-byte load and one 8-byte store when aligned.
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i + 3 < n) {
    const float4 v = *reinterpret_cast<const float4*>(x + i);
    out[i] = from_f32<T>(v.x);
    out[i + 1] = from_f32<T>(v.y);
    out[i + 2] = from_f32<T>(v.z);
    out[i + 3] = from_f32<T>(v.w);
  } else {
    for (int64_t j = i; j < n; ++j) out[j] = from_f32<T>(x[j]);
  }
}

// The first largest of two (value, index) candidates: the larger value, on ties the smaller
// index — the element std::max_element would return.
__device__ __forceinline__ void take_better(float& v, int32_t& idx, float ov, int32_t oi) {
  if (first_largest_beats(ov, oi, v, idx)) {
    v = ov;
    idx = oi;
  }
}

// Argmax over rows of n floats, gridDim.y blocks per row, each over one `slice` of it: every
// thread keeps the first maximum of its strided elements (16-byte loads where the rows allow),
// the block reduces its threads' candidates, and with more than one block per row each block
// publishes its candidate and the row's last block to arrive (a counter per row, left zero for
// the next launch) reduces them in block order.
constexpr int kArgmaxThreads = 256;
constexpr int64_t kArgmaxSlice = 4096;  // elements per block, at least (a 128k vocabulary: 32 blocks)
constexpr int kArgmaxMaxBlocks = 64;
__global__ void __launch_bounds__(kArgmaxThreads)
argmax_kernel(const float* __restrict__ x, int64_t n, int64_t slice, bool vec, int32_t* __restrict__ out,
              float* __restrict__ part_v, int32_t* __restrict__ part_i, int32_t* __restrict__ counters,
              int32_t* __restrict__ host_out, const GraphDrawCtrl* __restrict__ ctrl) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  __shared__ float best_v[kArgmaxThreads / 32];
  __shared__ int32_t best_i[kArgmaxThreads / 32];
  __shared__ bool last;
  const int64_t row_i = blockIdx.x, begin = blockIdx.y * slice, end = min(n, begin + slice);
  if (ctrl) {  // a graph's draw: every block of a row leaves, or none
    if (row_i >= ctrl->rows) return;
    if (!ctrl->to_out) out = nullptr;
    host_out = reinterpret_cast<int32_t*>(ctrl->host_out);
  }
  const float* row = x + row_i * n;
  float v = -INFINITY;
  int32_t idx = INT32_MAX;
  auto see = [&](float e, int64_t i) {
    if (e > v || idx == INT32_MAX) {
      v = e;
      idx = static_cast<int32_t>(i);
    }
  };
  if (vec) {  // begin, end and the row start are multiples of 4 elements (16 bytes)
    const float4* r4 = reinterpret_cast<const float4*>(row + begin);
    const int64_t n4 = (end - begin) / 4;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < n4; j += kArgmaxThreads) {
      const float4 e = r4[j];
      const int64_t i = begin + 4 * j;
      see(e.x, i), see(e.y, i + 1), see(e.z, i + 2), see(e.w, i + 3);
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kArgmaxThreads) see(row[i], i);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
    take_better(v, idx, ov, oi);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_v[warp] = v;
    best_i[warp] = idx;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kArgmaxThreads / 32; ++w) take_better(v, idx, best_v[w], best_i[w]);
  const int parts = static_cast<int>(gridDim.y);
  if (parts == 1) {
    if (out) out[row_i] = idx;
    if (host_out) host_out[row_i] = idx;
    return;
  }
  part_v[row_i * parts + blockIdx.y] = v;
  part_i[row_i * parts + blockIdx.y] = idx;
  __threadfence();
  last = atomicAdd(&counters[row_i], 1) == parts - 1;
  if (!last) return;
  counters[row_i] = 0;
  __threadfence();
  v = __ldcg(part_v + row_i * parts);
  idx = __ldcg(part_i + row_i * parts);
  for (int b = 1; b < parts; ++b) take_better(v, idx, __ldcg(part_v + row_i * parts + b), __ldcg(part_i + row_i * parts + b));
  if (out) out[row_i] = idx;
  if (host_out) host_out[row_i] = idx;
}

// launch_stage_in: each block copies its share of the words; the buffer is read uncached (the
// host rewrites it between replays). The last block to finish (counter[1] counts them, left
// zero) counts the replay in counter[0], after every block has read it.
constexpr int kStageInThreads = 256;
__global__ void __launch_bounds__(kStageInThreads)
stage_in_kernel(const int4* __restrict__ pinned, int64_t stride16, int64_t n16, int4* __restrict__ dst,
                uint32_t* __restrict__ counter) {
  pdl_trigger();  // the graph's next kernel may be scheduled; it waits for this one (pdl_wait)
  __shared__ uint32_t replay;
  if (threadIdx.x == 0) replay = *reinterpret_cast<volatile uint32_t*>(counter);
  __syncthreads();
  const int4* src = pinned + static_cast<int64_t>(replay & 1) * stride16;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kStageInThreads) + threadIdx.x; i < n16;
       i += static_cast<int64_t>(gridDim.x) * kStageInThreads)
    dst[i] = __ldcv(src + i);
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence();
  if (atomicAdd(&counter[1], 1u) != gridDim.x - 1) return;
  counter[1] = 0;
  counter[0] = replay + 1;
}

}  // namespace

void launch_embedding(const void* table, Elem type, const int32_t* ids, int64_t tokens,
                      int64_t hidden, float* out, cudaStream_t stream, const int32_t* from, const int32_t* drawn) {
  if (tokens == 0) return;
  const unsigned grid = static_cast<unsigned>(tokens);
  const int threads = row_threads(hidden);
  switch (type) {
    case Elem::kF32:
      launch_pdl("embedding_kernel", embedding_kernel<float>, dim3(grid), dim3(threads), 0, stream,
                 static_cast<const float*>(table), ids, hidden, out, from, drawn);
      break;
    case Elem::kF16:
      launch_pdl("embedding_kernel", embedding_kernel<__half>, dim3(grid), dim3(threads), 0, stream,
                 static_cast<const __half*>(table), ids, hidden, out, from, drawn);
      break;
    case Elem::kBF16:
      launch_pdl("embedding_kernel", embedding_kernel<__nv_bfloat16>, dim3(grid), dim3(threads), 0, stream,
                 static_cast<const __nv_bfloat16*>(table), ids, hidden, out, from, drawn);
      break;
  }
}

namespace {
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

void launch_rms_norm(float* residual, const float* x, const float* weight, float eps, int64_t rows,
                     int64_t n, float* out, cudaStream_t stream) {
  launch_rms_norm_to(residual, x, weight, eps, rows, n, out, Elem::kF32, stream);
}

void launch_rms_norm_to(float* residual, const float* x, const float* weight, float eps, int64_t rows, int64_t n,
                        void* out, Elem out_type, cudaStream_t stream) {
  if (rows == 0) return;
  const bool vec = n % 4 == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                   (residual == nullptr || aligned16(residual));
  // Vectorized, a thread takes four values: a quarter of the threads cover the row.
  const int threads = row_threads(vec ? (n + 3) / 4 : n);
  const dim3 grid(static_cast<unsigned>(rows));
  switch (out_type) {
    case Elem::kF32:
      launch_pdl("rms_norm_kernel", rms_norm_kernel<float>, grid, dim3(threads), 0, stream, residual, x, weight, eps,
                 n, vec, static_cast<float*>(out));
      break;
    case Elem::kBF16:
      launch_pdl("rms_norm_kernel", rms_norm_kernel<__nv_bfloat16>, grid, dim3(threads), 0, stream, residual, x,
                 weight, eps, n, vec, static_cast<__nv_bfloat16*>(out));
      break;
    case Elem::kF16:
      launch_pdl("rms_norm_kernel", rms_norm_kernel<__half>, grid, dim3(threads), 0, stream, residual, x, weight,
                 eps, n, vec, static_cast<__half*>(out));
      break;
  }
}

void launch_head_rms_norm(float* x, int64_t rows, int64_t cols, int64_t first_col,
                          int64_t num_heads, int64_t head_dim, const float* weight, float eps,
                          cudaStream_t stream) {
  if (rows == 0 || num_heads == 0) return;
  launch_pdl("head_rms_norm_kernel", head_rms_norm_kernel, dim3(static_cast<unsigned>(rows * num_heads)),
             dim3(row_threads(head_dim)), 0, stream, x, cols, first_col, num_heads, head_dim, weight, eps);
}

void launch_silu_mul(const float* gate_up, int64_t tokens, int64_t inter, float* out,
                     cudaStream_t stream) {
  launch_silu_mul_to(gate_up, tokens, inter, out, Elem::kF32, stream);
}

void launch_silu_mul_to(const float* gate_up, int64_t tokens, int64_t inter, void* out, Elem out_type,
                        cudaStream_t stream) {
  if (tokens * inter == 0) return;
  const bool vec = inter % 4 == 0 && aligned16(gate_up) && aligned16(out);
  const unsigned grid = grid_for(vec ? tokens * inter / 4 : tokens * inter, 256);
  switch (out_type) {
    case Elem::kF32:
      silu_mul_kernel<<<grid, 256, 0, stream>>>(gate_up, tokens, inter, vec, static_cast<float*>(out));
      break;
    case Elem::kBF16:
      silu_mul_kernel<<<grid, 256, 0, stream>>>(gate_up, tokens, inter, vec, static_cast<__nv_bfloat16*>(out));
      break;
    case Elem::kF16:
      silu_mul_kernel<<<grid, 256, 0, stream>>>(gate_up, tokens, inter, vec, static_cast<__half*>(out));
      break;
  }
  RH_CUDA_LAUNCHED("silu_mul_kernel");
}

void launch_rope(float* x, int64_t tokens, int64_t cols, int64_t num_heads, int64_t head_dim,
                 const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (tokens == 0 || num_heads == 0 || head_dim < 2) return;
  const int threads = static_cast<int>(std::min<int64_t>(128, std::max<int64_t>(32, (head_dim / 2 + 31) / 32 * 32)));
  launch_pdl("rope_kernel", rope_kernel, dim3(static_cast<unsigned>(tokens * num_heads)), dim3(threads), 0, stream, x,
             cols, num_heads, head_dim, positions, inv_freq);
}

void launch_narrow(const float* x, int64_t n, void* out, Elem type, cudaStream_t stream) {
  if (n == 0) return;
  RH_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0, "launch_narrow: unaligned input");
  const unsigned grid = static_cast<unsigned>((n + 4 * 256 - 1) / (4 * 256));
  switch (type) {
    case Elem::kBF16: narrow_kernel<<<grid, 256, 0, stream>>>(x, n, static_cast<__nv_bfloat16*>(out)); break;
    case Elem::kF16: narrow_kernel<<<grid, 256, 0, stream>>>(x, n, static_cast<__half*>(out)); break;
    case Elem::kF32: fail("launch_narrow: f32 is not a narrow type");
  }
  RH_CUDA_LAUNCHED("narrow_kernel");
}

void launch_argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* out, cudaStream_t stream,
                        const ArgmaxScratch& scratch, int32_t* host_out, const GraphDrawCtrl* ctrl) {
  if (rows == 0) return;
  // Blocks per row: one per kArgmaxSlice elements (a multiple of 4, so 16-byte loads stay aligned
  // in every slice), up to kArgmaxMaxBlocks, where the scratch holds every row's candidates.
  int64_t parts = std::clamp<int64_t>((n + kArgmaxSlice - 1) / kArgmaxSlice, 1, kArgmaxMaxBlocks);
  if (rows > scratch.counters_count || rows * parts > scratch.pairs || scratch.counters == nullptr) parts = 1;
  int64_t slice = (n + parts - 1) / parts;
  slice = (slice + 3) / 4 * 4;
  const bool vec = n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  launch_pdl("argmax_kernel", argmax_kernel, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(parts)),
             dim3(kArgmaxThreads), 0, stream, x, n, slice, vec, out, scratch.values, scratch.indices,
             scratch.counters, host_out, ctrl);
}

void launch_stage_in(const void* pinned, int64_t stride16, int64_t n16, void* dst, uint32_t* counter,
                     cudaStream_t stream) {
  RH_CHECK(reinterpret_cast<uintptr_t>(pinned) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0 &&
               n16 > 0 && n16 <= stride16,
           "launch_stage_in: unaligned buffers or ", n16, " words of ", stride16);
  // One word per thread where it takes at most 64 blocks: a single thread's loads over PCIe wait
  // for each other.
  const int64_t blocks = std::min<int64_t>((n16 + kStageInThreads - 1) / kStageInThreads, 64);
  stage_in_kernel<<<static_cast<unsigned>(blocks), kStageInThreads, 0, stream>>>(
      static_cast<const int4*>(pinned), stride16, n16, static_cast<int4*>(dst), counter);
  RH_CUDA_LAUNCHED("stage_in_kernel");
}

void launch_add(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, x, n);
  RH_CUDA_LAUNCHED("add_kernel");
}

void launch_product_epilogue(const float* p, const float* bias, int64_t rows, int64_t N, LinearMode mode, float* out,
                             cudaStream_t stream) {
  const int64_t n = rows * (mode == LinearMode::kSiluMul ? N / 2 : N);
  if (n == 0) return;
  product_epilogue_kernel<<<grid_for(n, 256), 256, 0, stream>>>(p, bias, rows, N, static_cast<int>(mode), out);
  RH_CUDA_LAUNCHED("product_epilogue_kernel");
}

void launch_gather_rows(const float* x, const int32_t* rows, int64_t num_rows, int64_t cols,
                        float* out, cudaStream_t stream) {
  if (num_rows == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(num_rows), row_threads(cols), 0, stream>>>(x, rows, cols, out);
  RH_CUDA_LAUNCHED("gather_rows_kernel");
}

}  // namespace redhare::cuda
