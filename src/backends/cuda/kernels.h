// Launchers of the CUDA kernels, one per Backend op. Pointers are device memory; every launcher
// enqueues on `stream` and checks the launch. Shapes were checked by the caller (cuda_backend.cpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>

#include <cuda_runtime.h>

#include "core/dtype.h"

namespace redhare::cuda {

// The weight and KV element types the kernels are compiled for.
enum class Elem : int { kF32, kF16, kBF16 };

// out[t, :] = table[id(t), :] with id(t) = ids[t], or drawn[from[t]] where from is given and
// from[t] >= 0 (an overlapped decode step's tokens of the previous draw, still on the device).
void launch_embedding(const void* table, Elem type, const int32_t* ids, int64_t tokens,
                      int64_t hidden, float* out, cudaStream_t stream, const int32_t* from = nullptr,
                      const int32_t* drawn = nullptr);
// residual == nullptr: out = rms_norm(x). Otherwise residual += x first, then out = rms_norm(residual).
void launch_rms_norm(float* residual, const float* x, const float* weight, float eps, int64_t rows,
                     int64_t n, float* out, cudaStream_t stream);
// The same, out in `out_type`: f32, or each f32 result rounded to bf16/f16 (bitwise launch_rms_norm
// then launch_narrow), the input of a tensor-core product.
void launch_rms_norm_to(float* residual, const float* x, const float* weight, float eps, int64_t rows, int64_t n,
                        void* out, Elem out_type, cudaStream_t stream);
void launch_head_rms_norm(float* x, int64_t rows, int64_t cols, int64_t first_col,
                          int64_t num_heads, int64_t head_dim, const float* weight, float eps,
                          cudaStream_t stream);
// Up to this many rows a product is a decode matrix-vector kernel (f32 activations, weights
// streamed once); more rows go to the tiled kernels or, in tensor-core mode, cuBLASLt.
constexpr int64_t kGemvMaxRows = 4;
void launch_linear(const float* x, const void* w, Elem w_type, const float* bias, int64_t M,
                   int64_t N, int64_t K, float* out, cudaStream_t stream);
// Decode products stage normalized activations (M x K floats) in shared memory up to this size.
constexpr int64_t kGemvMaxStagedBytes = 96 * 1024;
// Lets `kernel` take kGemvMaxStagedBytes of dynamic shared memory (past 48 KiB a kernel must opt
// in); the attribute is set once per kernel and device.
void allow_staged_shared_memory(const void* kernel);
// The same for any size: `kernel` may take `bytes` of dynamic shared memory (set once per kernel
// and device, the first call's size holding).
void allow_shared_memory(const void* kernel, int bytes);
// compute()'s value for `key` on the current device, computed the first time it is asked for
// there. A kernel's attributes (cudaFuncSetAttribute) belong to the device current when they are
// set: a process driving two GPUs sets them on each, and what depends on them is per device too.
// compute() may itself ask for other keys (never its own: each key serves one purpose).
int per_device_value(const void* key, const std::function<int()>& compute);
// Runs setup() the first time it is asked for `key` on the current device (per_device_value).
void once_per_device(const void* key, const std::function<void()>& setup);
// The current device (cudaGetDevice, checked).
int current_device();
// The dynamic shared memory one block may opt into on the current device
// (cudaDevAttrMaxSharedMemoryPerBlockOptin: about 227 KB on Hopper, 163 KB on A100, 99 KB on
// sm_86/sm_89 GPUs). Kernels whose shared memory would not fit take a smaller variant or another
// path. Tests lower it (0 restores the device's own) to run those variants on any GPU.
int max_block_smem();
void set_max_block_smem_for_tests(int bytes);
// The device's own limit, whatever a test set: for kernel attributes set once per process, which
// must not keep a lowered limit after the test restores it.
int device_block_smem();
// An attribute of the current device, read once per device (launch decisions ask on every call).
int device_attribute(cudaDeviceAttr attr);
// Multiprocessors of the current device.
int sm_count();
// A feature switch for sm_90+ kernels: on where the current device has compute capability 9.0 or
// later and the environment variable env_name is not "0" (read once into `state`, which starts
// at -1; the setter stores 0 or 1).
bool hopper_switch_on(std::atomic<int>& state, const char* env_name);
// Whether launch_pdl (pdl.cuh) asks for programmatic dependent launch on the current device:
// compute capability 9.0 or later, and not turned off (REDHARE_PDL=0 in the environment, or
// set_pdl_enabled(false), which the benchmark and tests use to compare).
bool pdl_enabled();
void set_pdl_enabled(bool on);
// Backend::fused_linear's modes (LinearOut), as the kernels see them.
enum class LinearMode : int { kStore = 0, kAccumulate = 1, kSiluMul = 2 };
// The decode product with its norm (norm_w, may be null) and epilogue folded in, for M <=
// kGemvMaxRows. False when the shape does not suit the fused kernel (nothing was launched): the
// caller composes the plain ops instead. w is [N, K]; kSiluMul writes [M, N / 2].
bool launch_fused_gemv(const float* x, const float* norm_w, float eps, const void* w, Elem w_type,
                       const float* bias, int64_t M, int64_t N, int64_t K, LinearMode mode, float* out,
                       cudaStream_t stream);
// The batch-1 decode product on sm_90+ (kernels_gemv_bulk.cu): weights copied into shared memory
// by the copy engine, ahead of the activations. launch_gemv takes it first for one activation row
// and bf16/f16 weights of the row widths it is compiled for; false when it declines (nothing
// launched). REDHARE_BULK_GEMV=0 in the environment, or set_bulk_gemv_enabled(false), turns it
// off (the benchmark and tests compare).
bool launch_bulk_gemv(const float* x, const float* norm_w, float eps, const void* w, Elem w_type, const float* bias,
                      int64_t M, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream);
bool bulk_gemv_enabled();
void set_bulk_gemv_enabled(bool on);
// The ring order of consecutive bulk-copy products (kernels_gemv_bulk.cu): a product's ring on an
// SM fills once the previous product's producer there has issued its last copy. On by default;
// REDHARE_RING_ORDER=0 or set_bulk_ring_order_enabled(false) turns it off (benchmarks, tests).
// Only the time at which copies are issued changes, never a result.
bool bulk_ring_order_enabled();
void set_bulk_ring_order_enabled(bool on);
// The same kernel on block-scaled FP8 weights (kF8B128 in the device layout with its 128 x 128
// block table: fp8_blocks_to_device_layout returned true): activations in f32 (not rounded to
// bf16 as launch_fp8_decode's tensor cores need), weights exact, f32 sums, each 16-value piece's
// sum times its block scale; the norm's 1 / rms applied to each column's sum. False when it
// declines.
bool launch_bulk_gemv_fp8(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                          int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream);
// Whether the backend gives a one-row FP8 product of N x K weights to launch_bulk_gemv_fp8: its
// width is compiled and N, K >= 4096 (measured: smaller models' steps are faster without it).
bool bulk_gemv_fp8_preferred(int64_t N, int64_t K, bool silu);
// Whether the bulk-copy kernel is compiled for rows of K elements of elem_bytes (2: bf16/f16, 1:
// FP8; SwiGLU: silu).
bool bulk_gemv_width(int64_t K, int64_t elem_bytes, bool silu);
// The value bytes (2, or 1 for FP8) of the last decode product launched on this thread since
// reset_last_gemv() where it ran the bulk-copy kernel, else 0 (the backend resets it at each
// product; attention asks).
int last_bulk_gemv_bytes();
void reset_last_gemv();
// The next bulk-copy launch on this thread follows an attention kernel: it takes the large block
// footprint (kernels_gemv_bulk.cu), and the launches after it alternate from there.
void bulk_gemv_after_attention();
// Block-quantized (GGUF) weights, f32 activations and output (kernels_quant.cu). Rows hold K / block
// values in whole blocks; the pointer must be 16-byte aligned and kBlockPadBytes past its end must be
// readable (the kernels load whole aligned words around unaligned fields).
constexpr int64_t kBlockPadBytes = 16;
// From this many output rows the decode kernel gives each warp four weight rows (see
// kernels_quant.cu); the tests cover both sides.
constexpr int64_t kQuantGemvWideRows = 8192;
bool quant_kernel_supported(DType t);
void launch_quant_linear(const float* x, const void* w, DType w_type, const float* bias, int64_t M,
                         int64_t N, int64_t K, float* out, cudaStream_t stream);
// Products on kF8B128 weights: up to kFp8GemvMaxRows rows in exact mode the FP8 decode kernel
// (CUDA cores, exact f32, each weight byte read once for all rows), which tensor-core mode keeps
// for kGemvMaxRows rows only where launch_fp8_decode (below) declines; more rows in tensor-core
// mode the W8A16 kernel (launch_fp8_mma) below kFp8WidenRows and, from there, the weights widened to bf16 per call for cuBLASLt (launch_fp8_to_bf16), which
// measured faster at 256 rows and more (H200; see kernels_fp8_mma.cu).
constexpr int64_t kFp8GemvMaxRows = 8;
constexpr int64_t kFp8WidenRows = 128;
// fused_linear's decode product on kF8B128 weights (norm, residual add, SiLU folded in as for the
// plain types), M <= kFp8GemvMaxRows; false when the shape does not suit it (nothing launched).
bool launch_fused_fp8_gemv(const float* x, const float* norm_w, float eps, const void* w, const float* bias,
                           int64_t M, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream);
// Tensor-core mode's decode product on kF8B128 weights (kernels_fp8_decode.cu), up to
// kFp8DecodeMaxRows rows: the W8A16 numerics of launch_fp8_mma (activations, RMS-normalized when
// norm_w is set, rounded to bf16; weights exact; f32 sums, one rounding per 128-value block) in
// one kernel that streams the weights into mma.sync fragments; bias and the fused_linear modes in
// its epilogue. False when the shape does not suit it (nothing launched: the activations' f16
// copy must fit in shared memory, x and w 16-byte aligned); the caller takes fp8_gemv_kernel.
constexpr int64_t kFp8DecodeMaxRows = 4;
bool launch_fp8_decode(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                       int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream);
// The tensor-core product on kF8B128 weights (kernels_fp8_mma.cu): activations (RMS-normalized
// when norm_w is set) rounded to bf16, weights exact, f32 accumulation, bias and the fused_linear
// modes in the epilogue. plan_fp8_mma sizes the scratch (staged activations and their row factors,
// split-K partials) that the caller allocates and passes to launch_fp8_mma with the same M, N, K.
// K % 128 == 0; kSiluMul needs an even N and writes [M, N / 2].
struct Fp8MmaPlan {
  int splits = 1, tiles_per_split = 0;
  int64_t scratch_bytes = 0;
};
Fp8MmaPlan plan_fp8_mma(int64_t M, int64_t N, int64_t K);
void launch_fp8_mma(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                    int64_t N, int64_t K, LinearMode mode, float* out, void* scratch, const Fp8MmaPlan& plan,
                    cudaStream_t stream);
// W8A8 runs on cuBLASLt (LtGemm::run_fp8, Hopper); its activations come from
// launch_fp8_quantize_activations (kernels_fp8_mma.cu): x [M, K] f32, RMS-normalized when norm_w
// is set, quantized per row and 128-value block to e4m3 with an f32 scale (amax / 448) into
// q [rows, K] and s [K / 128, rows] (cuBLASLt's VEC128_32F layout); rows M..rows-1 are zeros.
// Rows of at least kW8A8AutoRows take W8A8 under infer.raise_lower_bit_float_to=auto.
constexpr int64_t kW8A8AutoRows = 16;
// From this many rows W8A8 products on block-scaled weights take the 128 x 128 block table (H100,
// cuBLASLt alone: 4096 x 28672 x 4096 in 801 us against 980 with per-row scales; at 64 rows the
// per-row scales were as fast or faster).
constexpr int64_t kW8A8BlockRows = 256;
void launch_fp8_quantize_activations(const float* x, const float* norm_w, float eps, int64_t M, int64_t rows,
                                     int64_t K, void* q, float* s, cudaStream_t stream);
// kF8B128 [N, K] as the host keeps it (144-byte blocks, core/dtype.h) to its device layout
// (fp8_device.cuh: e4m3 bytes [N, K], then f32 scales [K / 128, N]), and back; host memory, both
// dtype_bytes(kF8B128, N * K) long. CudaBackend::upload and to_host convert with these. Where each
// 128-row group shares its scales (block-scaled checkpoints), the device layout also holds them
// once per 128 x 128 block after the scale table ([ceil(N / 128), K / 128], cuBLASLt's
// BLK128x128_32F layout), and fp8_blocks_to_device_layout returns true.
bool fp8_blocks_to_device_layout(const void* blocks, int64_t N, int64_t K, void* out);
void fp8_device_layout_to_blocks(const void* device_layout, int64_t N, int64_t K, void* out);
// kF8B128 weights [N, K] (device layout) widened to bf16 (each value as the reference dequantizes
// it, then rounded to bf16), for cuBLASLt at kFp8WidenRows rows and more (W8A16).
void launch_fp8_to_bf16(const void* w, int64_t N, int64_t K, void* out, cudaStream_t stream);
// out[t, :] = dequantized table row ids[t] (bitwise the CPU reference's values).
void launch_quant_embedding(const void* table, DType type, const int32_t* ids, int64_t tokens,
                            int64_t hidden, float* out, cudaStream_t stream, const int32_t* from = nullptr,
                            const int32_t* drawn = nullptr);
void launch_silu_mul(const float* gate_up, int64_t tokens, int64_t inter, float* out,
                     cudaStream_t stream);
// The same, out in `out_type` (f32, or rounded to bf16/f16 as launch_narrow rounds).
void launch_silu_mul_to(const float* gate_up, int64_t tokens, int64_t inter, void* out, Elem out_type,
                        cudaStream_t stream);
void launch_rope(float* x, int64_t tokens, int64_t cols, int64_t num_heads, int64_t head_dim,
                 const int32_t* positions, const float* inv_freq, cudaStream_t stream);
// out[i] = x[i] rounded to nearest even in `type` (bf16 or f16); x 16-byte aligned.
void launch_narrow(const float* x, int64_t n, void* out, Elem type, cudaStream_t stream);
// Stream-ordered scratch of the multi-block argmax: (value, index) candidates per (row, block) and
// zeroed per-row counters, each launch leaving them zero. Empty: one block per row.
struct ArgmaxScratch {
  float* values = nullptr;
  int32_t* indices = nullptr;
  int64_t pairs = 0;
  int32_t* counters = nullptr;
  int64_t counters_count = 0;
};
// A graph's own greedy draw (CudaBackend::graph_capture_draw), staged with each replay's inputs:
// the rows to draw (0: none), whether the tokens also go to `out` (the drawn ids an overlapped
// step reads), and the device's address of the pinned memory they go to.
struct GraphDrawCtrl {
  int32_t rows;
  int32_t to_out;
  uint64_t host_out;
};
static_assert(sizeof(GraphDrawCtrl) == 16, "GraphDrawCtrl is one 16-byte word of the staged inputs");
// out[r] = index of the first maximum of row r of x [rows, n]; also to host_out[r] where given
// (pinned host memory, written through the device's mapping: no copy back to queue after it).
// With ctrl (device memory, read when the kernel runs) only rows below ctrl->rows are drawn, to
// out where ctrl->to_out, and to ctrl->host_out in place of host_out.
void launch_argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* out, cudaStream_t stream,
                        const ArgmaxScratch& scratch = {}, int32_t* host_out = nullptr,
                        const GraphDrawCtrl* ctrl = nullptr);
// The first kernel of a replayed graph: copies words [0, n16) (16 bytes each) of pinned host
// buffer (counter[0] & 1) (`pinned`: the device's address of buffer 0, buffer 1 `stride16` words
// on) to dst, then counts the replay in counter[0] (counter: two zeroed words of device memory).
// The host stages replay k's inputs in buffer k & 1 while replay k - 1 runs.
void launch_stage_in(const void* pinned, int64_t stride16, int64_t n16, void* dst, uint32_t* counter,
                     cudaStream_t stream);
void launch_add(float* out, const float* x, int64_t n, cudaStream_t stream);
// out from a product's f32 sums p [rows, N] as fused_linear's `mode` writes it, rounded as the
// decode kernels' epilogues round (device_util.cuh): p + bias stored or added into out, or SiLU
// (out [rows, N / 2] = silu(gate + bias) * (up + bias), gate and up the two halves of p's rows).
void launch_product_epilogue(const float* p, const float* bias, int64_t rows, int64_t N, LinearMode mode, float* out,
                             cudaStream_t stream);

// Sampling (kernels_sampling.cu): one row's draw as the kernels read it (RowSampling, with its
// penalty list as a range of the group's packed arrays).
struct SampleRowDev {
  float temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty;
  int32_t top_k, logprobs;
  int32_t pen_begin, pen_end;
  int32_t sort_row;  // this row's place among the group's rows that draw at random; -1: greedy
  int32_t pad;
  uint64_t seed, step;
};
struct SampleResultDev {
  int32_t token;
  float logprob;
  float lse;  // log-sum-exp of the raw row, with logprobs
  int32_t pad;
};
// Penalties, greedy token and log-sum-exp per row; sort keys and ids for rows with sort_row >= 0
// (work: [rows, V] f32 scratch; keys/ids: [sorted rows, V]).
void launch_sample_prepare(const float* logits, int64_t V, const SampleRowDev* rows, int64_t num_rows,
                           const int32_t* pen_tokens, const int32_t* pen_counts, float* work, uint64_t* keys,
                           int32_t* ids, SampleResultDev* result, cudaStream_t stream);
size_t sample_sort_temp_bytes(int64_t items, int64_t sorted_rows);
void launch_sample_sort(void* temp, size_t temp_bytes, const uint64_t* keys_in, uint64_t* keys_out,
                        const int32_t* ids_in, int32_t* ids_out, int64_t items, int64_t sorted_rows,
                        cudaStream_t stream);
// The random draw of every row with sort_row >= 0, from its sorted keys and ids; weights
// ([sorted rows, V]) and chunk_sums ([sorted rows, sample_weight_chunks(V)]) are scratch.
int64_t sample_weight_chunks(int64_t V);
void launch_sample_pick(int64_t V, const SampleRowDev* rows, int64_t num_rows, const uint64_t* keys,
                        const int32_t* ids, double* weights, double* chunk_sums, SampleResultDev* result,
                        cudaStream_t stream);
// The drawn token's logprob and up to max_top best logprobs ([rows, max_top]) for rows that ask.
void launch_sample_logprobs(const float* logits, int64_t V, const SampleRowDev* rows, int64_t num_rows, int max_top,
                            SampleResultDev* result, int32_t* top_ids, float* top_lp, cudaStream_t stream);
void launch_gather_rows(const float* x, const int32_t* rows, int64_t num_rows, int64_t cols,
                        float* out, cudaStream_t stream);

// Device copies of an AttentionBatch's index arrays (see cuda_backend.cpp for the packing), plus
// two host-side counts that pick the launches. Everything that varies per decode step (contexts,
// tables, slots) lives only in device memory, so a captured CUDA graph stays valid while
// tokens, num_seqs, max_blocks and max_query_len stay the same.
struct AttentionMeta {
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs * max_blocks]
  const int32_t* slot_mapping;  // [tokens]; negative = padding token (not stored, output zeros)
  const int32_t* token_seq;     // [tokens]: the sequence each token row belongs to
  int32_t max_blocks;
  int32_t tokens;
  int32_t num_seqs = 0;
  int32_t max_query_len = 1;    // longest query chunk of the step (host-known)
  // Host-side only: the shortest query chunk (padding sequences count as 1); 0 = not known. When
  // every chunk is long enough for the flash kernel, no other kernel is launched beside it.
  int32_t min_query_len = 0;
  // Host-side only: device scratch for the partitioned kernels' partial results (the backend's,
  // kAttentionWorkspaceFloats), so a decode step allocates nothing between its kernels (a
  // stream-ordered allocation there would also break the programmatic launch chain, pdl.cuh).
  // Null, or too small for a launch: that launch allocates its own.
  float* workspace = nullptr;
  int64_t workspace_floats = 0;
  // Host-side only: zeroed arrival counters (the backend's, kAttentionCounters) with which the
  // tensor-core decode kernel merges its partitions itself; each use leaves them zero. Null or
  // too few for a launch: the combine kernel merges.
  int32_t* counters = nullptr;
  int64_t counter_count = 0;
};
// The attention workspace a backend keeps (64 MiB): the partitioned kernels slice long prefills
// so that their scratch stays within it.
constexpr int64_t kAttentionWorkspaceFloats = int64_t{16} << 20;
constexpr int64_t kAttentionCounters = 4096;

struct AttentionShape {
  int32_t num_heads, num_kv_heads, head_dim, block_size;
  float scale;
  int32_t sliding_window;  // 0 = whole context
  // Prefill chunks of at least kFlashMinQuery tokens go through a tensor-core kernel that rounds
  // Q, K, P and V to bf16, or to f16 over an f16 cache (f32 accumulation and softmax). Off: every
  // query uses exact f32 math.
  bool tensor_cores = false;
  // The tensor-core decode kernel lets the next kernel in at its start (pdl.cuh). Set by the
  // backend only where that kernel is the bulk-copy product, whose blocks take their columns from
  // a counter: its rings fill while attention runs. Any other successor's blocks waiting beside
  // attention cost ~10 us per layer (H100, batch 1).
  bool let_in_successor = false;
};

// Query chunks at least this long use the tensor-core kernel when tensor_cores is on.
constexpr int32_t kFlashMinQuery = 16;

// rope_attention's rotation (Backend::rope_attention) for launch_attention: the q and k heads of
// qkv (heads [0, num_heads + num_kv_heads)) rotated by angles positions[t] * inv_freq[i] before
// attention, and the rotated k heads stored; outputs and caches bit for bit launch_rope, then
// launch_attention. The store kernel rotates qkv in place; the tensor-core decode kernel rotates
// in registers and leaves qkv unrotated (Backend::rope_attention leaves its q and k heads
// unspecified).
struct RopeInputs {
  float* qkv;                 // the rows launch_attention reads, writable
  const int32_t* positions;   // [tokens], on the device
  const float* inv_freq;      // [head_dim / 2], on the device
};
// Stores each new token's K and V (columns after the q heads of its qkv row) into its slot, then
// computes causal attention of every query over its sequence's cached keys. Padding tokens
// (negative slot) store nothing and get zero output rows. With rope inputs the q and k heads are
// rotated first: in the kernel that stores K/V (rope_store_kernel, one block per token), or, for a
// decode-only launch on the tensor-core decode kernel, inside the attention kernel itself.
void launch_attention(const float* qkv, void* k_cache, void* v_cache, Elem kv_type,
                      const AttentionMeta& meta, const AttentionShape& shape, float* out,
                      cudaStream_t stream, const RopeInputs* rope = nullptr);
// The same over an FP8 cache (e4m3 bytes with an f32 scale per token and KV head, see
// KvCacheLayer): the store quantizes, and every query runs on the exact split kernel.
void launch_attention_fp8(const float* qkv, void* k_cache, void* v_cache, float* k_scale, float* v_scale,
                          const AttentionMeta& meta, const AttentionShape& shape, float* out, cudaStream_t stream);
// Whether launch_attention with rope inputs rotates inside the tensor-core decode kernel (no store
// kernel) for a launch of this shape; reads meta's host-side fields only.
bool attention_fuses_rope(const AttentionMeta& meta, const AttentionShape& shape, Elem kv_type);

}  // namespace redhare::cuda
