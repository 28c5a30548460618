// The CUDA backend: memory on one device and stream, argument checks, and the host-side index
// arrays each op needs on the device; the kernels are in kernels_*.cu.
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gemm_lt.h"
#include "backends/cuda/kernels.h"

namespace redhare {
namespace {

using cuda::Elem;

// Owned by the backend and by every allocation it hands out: a tensor may outlive the backend
// object, and its stream-ordered free still needs the stream.
struct StreamContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  ~StreamContext() {
    if (!stream) return;
    cudaSetDevice(device);
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
};

// A host index array mirrored on the device. Models pass the same positions and attention
// metadata to every layer of a step, so an array equal to the last one is not copied again.
// Copies go through pinned staging: a copy from pageable memory may wait for the stream to
// drain, which would stall the queue of kernels behind it.
struct IntMirror {
  std::vector<int32_t> host;
  int32_t* dev = nullptr;
  int32_t* pinned = nullptr;
  size_t capacity = 0;
  cudaEvent_t copied = nullptr;  // recorded after the last copy out of `pinned`
};

// One upload per distinct batch: [query_start | context_lens | block_tables | slots | token seq].
void pack_attention_meta(const AttentionBatch& batch, std::vector<int32_t>& m) {
  const int64_t S = batch.num_seqs;
  m.clear();
  m.insert(m.end(), batch.query_start.begin(), batch.query_start.end());
  m.insert(m.end(), batch.context_lens.begin(), batch.context_lens.end());
  m.insert(m.end(), batch.block_tables.begin(), batch.block_tables.begin() + S * batch.max_blocks);
  m.insert(m.end(), batch.slot_mapping.begin(), batch.slot_mapping.end());
  for (int64_t s = 0; s < S; ++s)
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) m.push_back(static_cast<int32_t>(s));
}

// The checks an attention batch must pass before any kernel indexes the cache with it. A token
// with slot -1 is padding (a CUDA graph's batch filled up to its bucket): nothing is stored for it,
// and a sequence made of one padding token may have context 0.
void check_attention_batch(const AttentionBatch& batch, int64_t num_blocks, int64_t block_size) {
  const int64_t T = batch.num_tokens(), S = batch.num_seqs;
  RH_CHECK(static_cast<int64_t>(batch.query_start.size()) == S + 1 &&
               static_cast<int64_t>(batch.context_lens.size()) == S &&
               static_cast<int64_t>(batch.slot_mapping.size()) == T && batch.max_blocks >= 0 &&
               static_cast<int64_t>(batch.block_tables.size()) >= S * batch.max_blocks,
           "attention batch arrays");
  RH_CHECK(batch.query_start[0] == 0, "attention batch: query_start[0] = ", batch.query_start[0]);
  const int64_t slots = num_blocks * block_size;
  for (int32_t s : batch.slot_mapping) RH_CHECK(s >= -1 && s < slots, "slot ", s, " out of range");
  for (int64_t i = 0; i < S; ++i) {
    const int32_t q0 = batch.query_start[i], nq = batch.query_start[i + 1] - q0;
    RH_CHECK(q0 >= 0 && nq >= 0 && q0 + nq <= T, "attention batch: sequence ", i, " has query rows [", q0, ", ",
             q0 + nq, ") of ", T);
    const bool padding = nq == 1 && batch.slot_mapping[static_cast<size_t>(q0)] < 0;
    RH_CHECK(batch.context_lens[i] >= nq || (padding && batch.context_lens[i] == 0),
             "sequence ", i, " context shorter than query");
    RH_CHECK(batch.context_lens[i] <= int64_t{batch.max_blocks} * block_size, "block table too short");
    // Only the blocks holding the context are read; the rest of a row may be padding.
    for (int64_t j = 0; j < (batch.context_lens[i] + block_size - 1) / block_size; ++j) {
      const int32_t b = batch.block_tables[static_cast<size_t>(i * batch.max_blocks + j)];
      RH_CHECK(b >= 0 && b < num_blocks, "sequence ", i, ": block ", b, " out of range");
    }
  }
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaOptions& options) : options_(options) {
    const int count = cuda_device_count();
    if (device < 0 || device >= count)
      fail("CUDA device ", device, " does not exist (", count, " device(s) found)");
    ctx_ = std::make_shared<StreamContext>();
    ctx_->device = device;
    RH_CUDA(cudaSetDevice(device));
    RH_CUDA(cudaStreamCreateWithFlags(&ctx_->stream, cudaStreamNonBlocking));
    // Activations are allocated and freed every step: let the stream-ordered pool keep freed
    // memory instead of returning it to the driver at each synchronization.
    cudaMemPool_t pool;
    RH_CUDA(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = std::numeric_limits<uint64_t>::max();
    RH_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    cudaDeviceProp prop;
    RH_CUDA(cudaGetDeviceProperties(&prop, device));
    name_ = std::string("cuda:") + std::to_string(device) + " (" + prop.name + ")";
    if (options_.tensor_cores) {
      lt_ = std::make_unique<cuda::LtGemm>();
      gemv_rows_ = 1;
    }
    RH_CUDA(cudaMalloc(&attn_workspace_, sizeof(float) * cuda::kAttentionWorkspaceFloats));
    RH_CUDA(cudaMalloc(&attn_counters_, sizeof(int32_t) * cuda::kAttentionCounters));
    RH_CUDA(cudaMemset(attn_counters_, 0, sizeof(int32_t) * cuda::kAttentionCounters));
    if (lt_ && options_.raise_lower_bit_float_to != LowerBitFloat::kBf16 && cuda::fp8_w8a8_supported())
      w8a8_rows_ = options_.raise_lower_bit_float_to == LowerBitFloat::kFp8 ? 1 : cuda::kW8A8AutoRows;
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(ctx_->stream);
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    for (IntMirror* m : {&ids_, &from_, &positions_, &rows_, &attn_meta_}) {
      if (m->dev) cudaFreeAsync(m->dev, ctx_->stream);
      if (m->pinned) cudaFreeHost(m->pinned);
      if (m->copied) cudaEventDestroy(m->copied);
    }
    if (graph_inputs_.dev) cudaFree(graph_inputs_.dev);
    if (graph_inputs_.pinned) cudaFreeHost(graph_inputs_.pinned);
    for (cudaEvent_t e : stage_read_)
      if (e) cudaEventDestroy(e);
    if (stage_replays_dev_) cudaFree(stage_replays_dev_);
    if (pinned_out_) cudaFreeHost(pinned_out_);
    for (DrawSlot& d : draw_slots_) {
      if (d.pinned) cudaFreeHost(d.pinned);
      if (d.done) cudaEventDestroy(d.done);
    }
    if (drawn_ids_) cudaFree(drawn_ids_);
    if (attn_workspace_) cudaFree(attn_workspace_);
    if (attn_counters_) cudaFree(attn_counters_);
  }

  std::string name() const override { return name_; }
  Device device() const override { return Device{DeviceType::kCUDA, ctx_->device}; }

  Tensor alloc(DType dtype, Shape shape) override {
    const int64_t bytes = dtype_bytes(dtype, shape_numel(shape));
    if (bytes == 0) return Tensor(dtype, std::move(shape), nullptr, nullptr, device());
    const int64_t padded = bytes + pad_bytes(dtype);
    void* p = nullptr;
    RH_CUDA(cudaMallocAsync(&p, static_cast<size_t>(padded), ctx_->stream));
    auto owner = std::shared_ptr<void>(p, [ctx = ctx_](void* q) { cudaFreeAsync(q, ctx->stream); });
    RH_CUDA(cudaMemsetAsync(p, 0, static_cast<size_t>(padded), ctx_->stream));
    return Tensor(dtype, std::move(shape), p, std::move(owner), device());
  }

  Tensor upload(const Tensor& host) override {
    if (host.device().type == DeviceType::kCUDA) return host;
    RH_CHECK(host.is_contiguous(), "upload of a non-contiguous tensor ", host.str());
    const int64_t bytes = host.nbytes();
    if (bytes == 0) return Tensor(host.dtype(), host.shape(), nullptr, nullptr, device());
    // FP8 weights take their device layout (cuda/fp8_device.cuh) on the way.
    const void* src = host.data();
    std::vector<uint8_t> relaid;
    bool block_scaled = false;
    if (host.dtype() == DType::kF8B128) {
      const int64_t K = host.shape().back();
      relaid.resize(static_cast<size_t>(bytes));
      block_scaled = cuda::fp8_blocks_to_device_layout(host.data(), host.numel() / K, K, relaid.data());
      src = relaid.data();
    }
    void* p = nullptr;
    // Weights live as long as the model: plain cudaMalloc, outside the activation pool.
    const int64_t pad = pad_bytes(host.dtype());
    RH_CUDA(cudaMalloc(&p, static_cast<size_t>(bytes + pad)));
    if (block_scaled) block_scaled_->add(p);
    auto owner = std::shared_ptr<void>(p, [reg = block_scaled_](void* q) {
      reg->remove(q);
      cudaFree(q);
    });
    if (pad) RH_CUDA(cudaMemsetAsync(static_cast<uint8_t*>(p) + bytes, 0, static_cast<size_t>(pad), ctx_->stream));
    // Waited for: the caller may free the host tensor as soon as this returns (from pinned
    // memory the copy would still be running).
    RH_CUDA(cudaMemcpyAsync(p, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, ctx_->stream));
    RH_CUDA(cudaStreamSynchronize(ctx_->stream));
    return Tensor(host.dtype(), host.shape(), p, std::move(owner), device());
  }

  Tensor to_host(const Tensor& t) override {
    if (t.device().type != DeviceType::kCUDA) return t;
    RH_CHECK(t.is_contiguous(), "to_host of a non-contiguous tensor ", t.str());
    Tensor h = Tensor::empty(t.dtype(), t.shape());
    if (t.dtype() == DType::kF8B128 && t.numel() > 0) {  // back from the device layout
      const int64_t K = t.shape().back();
      std::vector<uint8_t> dev(static_cast<size_t>(t.nbytes()));
      copy_to_host(t, dev.data());
      cuda::fp8_device_layout_to_blocks(dev.data(), t.numel() / K, K, h.data());
      return h;
    }
    copy_to_host(t, h.data());
    return h;
  }

  // The t.nbytes() bytes of device tensor t to host memory dst, waited for.
  void copy_to_host(const Tensor& t, void* dst) {
    const size_t bytes = static_cast<size_t>(t.nbytes());
    // Small results (a decode step's logits) go through pinned staging: a pageable copy is
    // chunked through the driver's own buffer and took several times longer (0.15 ms for 0.5 MB
    // on an H100). Large ones go direct rather than pinning that much host memory.
    if (bytes > 0 && bytes <= kPinnedOutMax) {
      if (bytes > pinned_out_capacity_) {
        if (pinned_out_) RH_CUDA(cudaFreeHost(pinned_out_));
        pinned_out_ = nullptr;
        pinned_out_capacity_ = 0;
        RH_CUDA(cudaMallocHost(&pinned_out_, bytes));
        pinned_out_capacity_ = bytes;
      }
      RH_CUDA(cudaMemcpyAsync(pinned_out_, t.data(), bytes, cudaMemcpyDeviceToHost, ctx_->stream));
      RH_CUDA(cudaStreamSynchronize(ctx_->stream));
      std::memcpy(dst, pinned_out_, bytes);
      return;
    }
    if (bytes > 0) RH_CUDA(cudaMemcpyAsync(dst, t.data(), bytes, cudaMemcpyDeviceToHost, ctx_->stream));
    RH_CUDA(cudaStreamSynchronize(ctx_->stream));
  }

  int64_t free_memory_bytes() const override {
    size_t free_b = 0, total_b = 0;
    RH_CUDA(cudaSetDevice(ctx_->device));
    RH_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return static_cast<int64_t>(free_b);
  }

  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override {
    lookup(table, ids, nullptr, out);
  }

  // embedding() with the ids of rows from_draw[t] >= 0 read on the device from the latest async
  // draw's tokens (drawn_ids_, written by the draw in stream order before this kernel runs).
  void embedding_drawn(const Tensor& table, const std::vector<int32_t>& ids, const std::vector<int32_t>& from_draw,
                       Tensor& out) override {
    RH_CHECK(from_draw.size() == ids.size(), "embedding_drawn: ", from_draw.size(), " draw rows for ", ids.size(),
             " ids");
    bool any = false;
    for (int32_t r : from_draw) {
      RH_CHECK(r < latest_draw_rows_, "embedding_drawn: row ", r, " of a draw of ", latest_draw_rows_);
      any = any || r >= 0;
    }
    // A graph records the lookup through the draw rows whatever this step's are.
    if (!any && !capturing_) return lookup(table, ids, nullptr, out);
    if (!capturing_) ensure_drawn_ids(1);
    RH_CHECK(drawn_ids_, "embedding_drawn: no drawn ids to record");  // graph_stage allocates them
    lookup(table, ids, &from_draw, out);
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    check_norm(x, weight, out);
    cuda::launch_rms_norm(nullptr, x.data_as<float>(), weight.data_as<float>(), eps, x.size(0),
                          x.size(1), out.data_as<float>(), stream());
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                    Tensor& out) override {
    check_norm(residual, weight, out);
    check_f32(x, "add_rms_norm x");
    RH_CHECK(x.numel() == residual.numel(), "add_rms_norm: ", residual.str(), " + ", x.str());
    cuda::launch_rms_norm(residual.data_as<float>(), x.data_as<float>(), weight.data_as<float>(),
                          eps, residual.size(0), residual.size(1), out.data_as<float>(), stream());
  }

  void head_rms_norm(Tensor& x, int64_t head_offset, int64_t num_heads, const Tensor& weight,
                     float eps) override {
    check_f32(x, "head_rms_norm x");
    check_f32(weight, "head_rms_norm weight");
    const int64_t d = weight.numel();
    RH_CHECK(x.dim() == 2 && head_offset >= 0 && num_heads >= 0 && (head_offset + num_heads) * d <= x.size(1),
             "head_rms_norm: heads [", head_offset, ", ", head_offset + num_heads, ") of width ", d,
             " in ", x.str());
    cuda::launch_head_rms_norm(x.data_as<float>(), x.size(0), x.size(1), head_offset * d, num_heads,
                               d, weight.data_as<float>(), eps, stream());
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    cuda::reset_last_gemv();  // set again where this product takes the bulk-copy kernel
    check_f32(x, "linear x");
    check_f32(out, "linear out");
    check_on_device(w, "linear weight");
    RH_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2, "linear: ", x.str(), " x ", w.str());
    RH_CHECK(x.size(1) == w.size(1) && out.size(0) == x.size(0) && out.size(1) == w.size(0),
             "linear: ", x.str(), " @ ", w.str(), "^T -> ", out.str());
    if (bias) {
      check_f32(*bias, "linear bias");
      RH_CHECK(bias->numel() == w.size(0), "linear bias ", bias->str(), " for ", w.str());
    }
    if (fp8_tensor_core_product(x, nullptr, 0.0f, w, bias, LinearOut::kStore, out)) return;
    if (is_block_quantized(w.dtype())) {
      RH_CHECK(cuda::quant_kernel_supported(w.dtype()), "CUDA backend: linear does not support ",
               dtype_name(w.dtype()), " weights (", w.str(), ")");
      cuda::launch_quant_linear(x.data_as<float>(), w.data(), w.dtype(), bias ? bias->data_as<float>() : nullptr,
                                x.size(0), w.size(0), x.size(1), out.data_as<float>(), stream());
      return;
    }
    const Elem wt = elem_of(w, "linear");
    const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
    const float* b = bias ? bias->data_as<float>() : nullptr;
    if (tc_fused_linear(x, nullptr, 0.0f, w, bias, LinearOut::kStore, out)) return;
    cuda::launch_linear(x.data_as<float>(), w.data(), wt, b, M, N, K, out.data_as<float>(), stream());
  }

  void fused_linear(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w, const Tensor* bias,
                    LinearOut mode, Tensor& out) override {
    cuda::reset_last_gemv();  // set again where this product takes the bulk-copy kernel
    check_f32(x, "fused_linear x");
    check_f32(out, "fused_linear out");
    check_on_device(w, "fused_linear weight");
    const int64_t M = x.dim() == 2 ? x.size(0) : 0, N = w.dim() == 2 ? w.size(0) : 0, K = x.dim() == 2 ? x.size(1) : 0;
    const int64_t cols = mode == LinearOut::kSiluMul ? N / 2 : N;
    RH_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2 && w.size(1) == K && out.size(0) == M &&
                 out.size(1) == cols && (mode != LinearOut::kSiluMul || N % 2 == 0),
             "fused_linear: ", x.str(), " @ ", w.str(), "^T -> ", out.str());
    if (norm_weight) {
      check_f32(*norm_weight, "fused_linear norm weight");
      RH_CHECK(norm_weight->numel() == K, "fused_linear norm ", norm_weight->str(), " for ", x.str());
    }
    if (bias) {
      check_f32(*bias, "fused_linear bias");
      RH_CHECK(bias->numel() == N, "fused_linear bias ", bias->str(), " for ", w.str());
    }
    if (tc_fused_linear(x, norm_weight, eps, w, bias, mode, out)) return;
    if (fp8_tensor_core_product(x, norm_weight, eps, w, bias, mode, out)) return;
    // FP8 weights without the tensor-core paths (or a decode size they left): the exact kernel.
    if (w.dtype() == DType::kF8B128 && (!lt_ || M <= cuda::kGemvMaxRows) &&
        cuda::launch_fused_fp8_gemv(x.data_as<float>(), norm_weight ? norm_weight->data_as<float>() : nullptr, eps,
                                    w.data(), bias ? bias->data_as<float>() : nullptr, M, N, K,
                                    static_cast<cuda::LinearMode>(static_cast<int>(mode)), out.data_as<float>(),
                                    stream()))
      return;
    if (is_block_quantized(w.dtype()) || M > cuda::kGemvMaxRows ||
        (M > gemv_rows_ && w.dtype() != DType::kF32 && w.dtype() != DType::kF8B128)) {
      Backend::fused_linear(x, norm_weight, eps, w, bias, mode, out);
      return;
    }
    // Decode: one kernel (norm, product, epilogue) when the activations fit in shared memory.
    if (!cuda::launch_fused_gemv(x.data_as<float>(), norm_weight ? norm_weight->data_as<float>() : nullptr, eps,
                                 w.data(), elem_of(w, "fused_linear"), bias ? bias->data_as<float>() : nullptr, M, N,
                                 K, static_cast<cuda::LinearMode>(static_cast<int>(mode)), out.data_as<float>(),
                                 stream()))
      Backend::fused_linear(x, norm_weight, eps, w, bias, mode, out);
  }

  void swiglu_mlp(Tensor& residual, const Tensor& norm_weight, float eps, const Tensor& gate_up, const Tensor& down,
                  Tensor& act) override {
    check_f32(residual, "swiglu_mlp residual");
    check_f32(norm_weight, "swiglu_mlp norm weight");
    check_on_device(gate_up, "swiglu_mlp gate_up");
    check_on_device(down, "swiglu_mlp down");
    const int64_t M = residual.dim() == 2 ? residual.size(0) : 0, H = residual.dim() == 2 ? residual.size(1) : 0;
    const int64_t I = down.dim() == 2 ? down.size(1) : 0;
    RH_CHECK(residual.dim() == 2 && gate_up.dim() == 2 && down.dim() == 2 && gate_up.size(0) == 2 * I &&
                 gate_up.size(1) == H && down.size(0) == H && norm_weight.numel() == H,
             "swiglu_mlp: ", residual.str(), " through ", gate_up.str(), " and ", down.str());
    // Tensor cores: the norm writes the gate/up product's input in the weights' type, and SiLU
    // writes the down product's; both round where the composition's products would (bitwise
    // the composition), with no f32 intermediate in between.
    // FP8 weights from kFp8WidenRows rows (W8A16) are widened to bf16 for the call first.
    const Tensor gu16 = gate_up.dtype() == DType::kF8B128 ? widened_for_tensor_cores(gate_up, M) : gate_up;
    const Tensor down16 = down.dtype() == DType::kF8B128 ? widened_for_tensor_cores(down, M) : down;
    if (gu16.data() && down16.data() && takes_tensor_cores(M, gu16) && down16.dtype() == gu16.dtype() &&
        lt_->has_plan(elem_of(gu16, "swiglu_mlp"), false, M, 2 * I, H) &&
        lt_->has_plan(elem_of(down16, "swiglu_mlp"), false, M, H, I)) {
      const Elem wt = elem_of(gu16, "swiglu_mlp");
      Tensor a = alloc_uninit(gu16.dtype(), {M, H});
      cuda::launch_rms_norm_to(nullptr, residual.data_as<float>(), norm_weight.data_as<float>(), eps, M, H, a.data(), wt,
                               stream());
      Tensor p = alloc_uninit(DType::kF32, {M, 2 * I});
      RH_CHECK(lt_->run(a.data(), gu16.data(), wt, nullptr, M, 2 * I, H, p.data_as<float>(), stream()),
               "swiglu_mlp: gate/up product failed to launch");
      Tensor h = alloc_uninit(down16.dtype(), {M, I});
      cuda::launch_silu_mul_to(p.data_as<float>(), M, I, h.data(), wt, stream());
      RH_CHECK(lt_->run(h.data(), down16.data(), wt, nullptr, M, H, I, residual.data_as<float>(), stream(), true),
               "swiglu_mlp: down product failed to launch");
      return;
    }
    Backend::swiglu_mlp(residual, norm_weight, eps, gate_up, down, act);
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    check_f32(gate_up, "silu_mul in");
    check_f32(out, "silu_mul out");
    RH_CHECK(gate_up.dim() == 2 && out.dim() == 2 && gate_up.size(0) == out.size(0) &&
                 gate_up.size(1) == 2 * out.size(1),
             "silu_mul: ", gate_up.str(), " -> ", out.str());
    cuda::launch_silu_mul(gate_up.data_as<float>(), out.size(0), out.size(1), out.data_as<float>(), stream());
  }

  void rope(Tensor& x, int64_t num_heads, int64_t head_dim, const std::vector<int32_t>& positions,
            const Tensor& inv_freq) override {
    check_rope(x, num_heads, head_dim, positions, inv_freq);
    cuda::launch_rope(x.data_as<float>(), x.size(0), x.size(1), num_heads, head_dim,
                      mirror(positions_, positions), inv_freq.data_as<float>(), stream());
  }

  void add(Tensor& out, const Tensor& x) override {
    check_f32(out, "add out");
    check_f32(x, "add x");
    RH_CHECK(out.numel() == x.numel(), "add: ", out.str(), " + ", x.str());
    cuda::launch_add(out.data_as<float>(), x.data_as<float>(), out.numel(), stream());
  }

  void gather_rows(const Tensor& x, const std::vector<int32_t>& rows, Tensor& out) override {
    check_f32(x, "gather_rows x");
    check_f32(out, "gather_rows out");
    RH_CHECK(x.dim() == 2 && out.dim() == 2 && out.size(0) == static_cast<int64_t>(rows.size()) &&
                 out.size(1) == x.size(1),
             "gather_rows: ", x.str(), " -> ", out.str());
    for (int32_t r : rows) RH_CHECK(r >= 0 && r < x.size(0), "gather_rows: row ", r, " out of range");
    cuda::launch_gather_rows(x.data_as<float>(), mirror(rows_, rows), out.size(0), x.size(1),
                             out.data_as<float>(), stream());
  }

  void attention(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,
                 const AttentionParams& p, Tensor& out) override {
    attention_impl(qkv, cache, batch, p, out, nullptr);
  }

  // 16/32-bit caches: the rotation rides on the K/V store, one kernel fewer per layer, or on the
  // tensor-core decode kernel itself (cuda::launch_attention with RopeInputs); the FP8 cache
  // composes the two ops.
  void rope_attention(Tensor& qkv, const std::vector<int32_t>& positions, const Tensor& inv_freq, KvCacheLayer& cache,
                      const AttentionBatch& batch, const AttentionParams& p, Tensor& out) override {
    if (cache.k.dtype() == DType::kF8E4M3 || p.head_dim < 2 || p.head_dim % 2 != 0) {
      Backend::rope_attention(qkv, positions, inv_freq, cache, batch, p, out);
      return;
    }
    check_rope(qkv, p.num_heads + p.num_kv_heads, p.head_dim, positions, inv_freq);
    const RopeArgs rope{&qkv, &positions, &inv_freq};
    attention_impl(qkv, cache, batch, p, out, &rope);
  }

  std::vector<SampledToken> sample_rows(const Tensor& logits, const std::vector<RowSampling>& rows) override;

  // Overlapped decoding: the draw's tokens go to drawn_ids_ (read by the next step's
  // embedding_drawn) and, with its results, to a pinned slot that collect_draw() reads once the
  // slot's event has passed. The host does not wait here.
  bool overlaps_draws() const override { return true; }

  void draw_rows_async(const Tensor& logits, const std::vector<RowSampling>& rows) override {
    RH_CHECK(pending_draws_.size() < static_cast<size_t>(kMaxDrawsInFlight), "draw_rows_async: ",
             pending_draws_.size(), " draws not yet collected");
    // Slots in turn: draws are collected in order, at most kMaxDrawsInFlight waiting, so the
    // next slot's draw has been collected.
    const int slot = next_draw_slot_;
    next_draw_slot_ = (next_draw_slot_ + 1) % kMaxDrawsInFlight;
    PendingDraw d;
    if (!take_graph_draw(logits, rows, slot, true, d)) {
      ensure_drawn_ids(static_cast<int64_t>(rows.size()));
      d = issue_draw(logits, rows, true, slot);
    }
    latest_draw_rows_ = static_cast<int32_t>(rows.size());
    pending_draws_.push_back(std::move(d));
  }

  std::vector<SampledToken> collect_draw() override {
    RH_CHECK(!pending_draws_.empty(), "collect_draw: no draw to collect");
    PendingDraw d = std::move(pending_draws_.front());
    pending_draws_.pop_front();
    RH_CUDA(cudaEventSynchronize(draw_slots_[static_cast<size_t>(d.slot)].done));
    return unpack_draw(d);
  }

 private:
  // Pinned host memory a draw's results come back to, and the event recorded after their copy:
  // kMaxDrawsInFlight slots for async draws, the last one for sample_rows.
  struct DrawSlot {
    void* pinned = nullptr;
    void* mapped = nullptr;  // the device's address of `pinned`
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  // An issued draw: where its results land and how to read them.
  struct PendingDraw {
    int slot = 0;
    int64_t rows = 0;
    bool plain = false;           // tokens alone (int32 each); else SampleResultDev rows, then top lists
    int64_t top_w = 0;            // top-list width per row
    std::vector<int32_t> top_n;   // per row: logprobs wanted (-1: none)
  };
  PendingDraw issue_draw(const Tensor& logits, const std::vector<RowSampling>& rows, bool to_drawn, int slot);
  std::vector<SampledToken> unpack_draw(const PendingDraw& d) const;

  // The draw the latest replay made itself (graph_stage's GraphDraw, recorded by
  // graph_capture_draw): its logits, rows, slot and kind. Taken by the next draw when that is the
  // same one, else dropped (the draw is then made as usual, over what the replay left).
  struct GraphDrawn {
    const void* logits = nullptr;
    int64_t rows = 0;
    int slot = -1;
    bool async = false;
  };
  GraphDrawn graph_drawn_;
  bool take_graph_draw(const Tensor& logits, const std::vector<RowSampling>& rows, int slot, bool async,
                       PendingDraw& d) {
    const GraphDrawn g = graph_drawn_;
    graph_drawn_ = {};
    if (!g.logits || g.logits != logits.data() || g.rows != static_cast<int64_t>(rows.size()) || g.slot != slot ||
        g.async != async)
      return false;
    for (const RowSampling& r : rows)
      if (!r.plain_greedy()) return false;
    d = {};
    d.slot = slot;
    d.rows = g.rows;
    d.plain = true;
    d.top_n.assign(rows.size(), -1);
    return true;
  }

  // The embedding rows of `ids`, or where from_draw is given and from_draw[t] >= 0, of the
  // latest async draw's row from_draw[t] (drawn_ids_).
  void lookup(const Tensor& table, const std::vector<int32_t>& ids, const std::vector<int32_t>* from_draw,
              Tensor& out) {
    check_on_device(table, "embedding table");
    check_f32(out, "embedding out");
    const int64_t V = table.size(0), H = table.size(1), T = static_cast<int64_t>(ids.size());
    RH_CHECK(table.dim() == 2 && out.dim() == 2 && out.size(0) == T && out.size(1) == H,
             "embedding: ", table.str(), " -> ", out.str());
    for (int32_t id : ids) RH_CHECK(id >= 0 && id < V, "token id ", id, " out of range");
    const int32_t* from = from_draw ? mirror(from_, *from_draw) : nullptr;
    const int32_t* drawn = from_draw ? drawn_ids_ : nullptr;
    if (is_block_quantized(table.dtype())) {
      // A quantized table (SmolLM2's tied Q8_0 embeddings): only the looked-up rows are expanded.
      RH_CHECK(cuda::quant_kernel_supported(table.dtype()), "CUDA backend: embedding does not support ",
               dtype_name(table.dtype()), " tables (", table.str(), ")");
      cuda::launch_quant_embedding(table.data(), table.dtype(), mirror(ids_, ids), T, H, out.data_as<float>(),
                                   stream(), from, drawn);
      return;
    }
    cuda::launch_embedding(table.data(), elem_of(table, "embedding"), mirror(ids_, ids), T, H, out.data_as<float>(),
                           stream(), from, drawn);
  }

  // The argmax's candidates go through the attention workspace and counters (stream-ordered
  // scratch, free between kernels; each launch leaves the counters zero).
  cuda::ArgmaxScratch argmax_scratch() const {
    cuda::ArgmaxScratch scratch;
    scratch.pairs = cuda::kAttentionWorkspaceFloats / 2;
    scratch.values = attn_workspace_;
    scratch.indices = reinterpret_cast<int32_t*>(attn_workspace_ + scratch.pairs);
    scratch.counters = attn_counters_;
    scratch.counters_count = cuda::kAttentionCounters;
    return scratch;
  }

  // drawn_ids_ holds at least `rows` tokens. Graphs hold its address: growing it drops them.
  void ensure_drawn_ids(int64_t rows) {
    if (drawn_ids_ && rows <= drawn_capacity_) return;
    graph_clear();
    RH_CUDA(cudaStreamSynchronize(stream()));
    if (drawn_ids_) RH_CUDA(cudaFree(drawn_ids_));
    drawn_ids_ = nullptr;
    const int64_t cap = std::max<int64_t>(rows, 256);
    RH_CUDA(cudaMalloc(reinterpret_cast<void**>(&drawn_ids_), static_cast<size_t>(cap) * sizeof(int32_t)));
    RH_CUDA(cudaMemsetAsync(drawn_ids_, 0, static_cast<size_t>(cap) * sizeof(int32_t), stream()));
    drawn_capacity_ = cap;
  }

  // Slot `slot` holds at least `bytes` (it is free: its last copy was waited for).
  void* draw_slot(int slot, size_t bytes) {
    DrawSlot& d = draw_slots_[static_cast<size_t>(slot)];
    if (!d.done) RH_CUDA(cudaEventCreateWithFlags(&d.done, cudaEventDisableTiming));
    if (bytes > d.capacity) {
      if (d.pinned) RH_CUDA(cudaFreeHost(d.pinned));
      d.pinned = nullptr;
      d.capacity = 0;
      const size_t cap = std::max<size_t>(bytes, 4096);
      RH_CUDA(cudaHostAlloc(&d.pinned, cap, cudaHostAllocMapped | cudaHostAllocPortable));
      RH_CUDA(cudaHostGetDevicePointer(&d.mapped, d.pinned, 0));
      d.capacity = cap;
    }
    return d.pinned;
  }

  // rope()'s arguments (rope_attention checks the same before fusing the rotation).
  void check_rope(const Tensor& x, int64_t num_heads, int64_t head_dim, const std::vector<int32_t>& positions,
                  const Tensor& inv_freq) const {
    check_f32(x, "rope x");
    check_f32(inv_freq, "rope inv_freq");
    RH_CHECK(x.dim() == 2 && static_cast<int64_t>(positions.size()) == x.size(0) &&
                 num_heads * head_dim <= x.size(1) && inv_freq.numel() >= head_dim / 2,
             "rope: ", num_heads, " heads of ", head_dim, " over ", x.str());
  }

  // rope_attention's rotation: qkv (the same tensor as attention_impl's, mutable), positions, inv_freq.
  struct RopeArgs {
    Tensor* qkv;
    const std::vector<int32_t>* positions;
    const Tensor* inv_freq;
  };
  // attention(); with `rope` (rope_attention) the q and k heads are rotated first, in the kernel
  // that stores K/V.
  void attention_impl(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch, const AttentionParams& p,
                      Tensor& out, const RopeArgs* rope);

  cudaStream_t stream() const { return ctx_->stream; }

  // Block-quantized tensors get kBlockPadBytes of zeros past their end: the quant kernels read
  // whole aligned words around the unaligned fields of the last block.
  static int64_t pad_bytes(DType t) { return is_block_quantized(t) ? cuda::kBlockPadBytes : 0; }

  static int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }

  void check_on_device(const Tensor& t, const char* what) const {
    RH_CHECK(t.device() == device(), what, " is on ", t.device().str(), ", not ", device().str());
    RH_CHECK(t.is_contiguous(), what, " is not contiguous: ", t.str());
  }
  void check_f32(const Tensor& t, const char* what) const {
    check_on_device(t, what);
    RH_CHECK(t.dtype() == DType::kF32, what, " must be f32, is ", t.str());
  }
  void check_norm(const Tensor& x, const Tensor& weight, const Tensor& out) const {
    check_f32(x, "rms_norm x");
    check_f32(weight, "rms_norm weight");
    check_f32(out, "rms_norm out");
    RH_CHECK(x.dim() == 2 && weight.numel() == x.size(1) && out.shape() == x.shape(),
             "rms_norm: ", x.str(), " with ", weight.str(), " -> ", out.str());
  }

  static Elem elem_of(const Tensor& t, const char* op) {
    switch (t.dtype()) {
      case DType::kF32: return Elem::kF32;
      case DType::kF16: return Elem::kF16;
      case DType::kBF16: return Elem::kBF16;
      default: fail("CUDA backend: ", op, " does not support ", dtype_name(t.dtype()), " tensors (", t.str(), ")");
    }
  }

  // The device copy of `values`, copied only when it differs from the previous call's. While a
  // graph is being captured, the staged copy instead (see graph_stage).
  const int32_t* mirror(IntMirror& m, const std::vector<int32_t>& values) {
    if (values.empty()) return nullptr;
    if (capturing_) {
      IntMirror& g = graph_twin(m);
      RH_CHECK(g.dev && g.host == values, "graph capture: an op's index array differs from the staged one");
      return g.dev;
    }
    if (m.dev && m.host == values) return m.dev;
    if (!m.copied) RH_CUDA(cudaEventCreateWithFlags(&m.copied, cudaEventDisableTiming));
    // The staging buffer is rewritten below: its previous copy must have left (it normally has:
    // it was queued a whole step ago, before a synchronizing to_host).
    RH_CUDA(cudaEventSynchronize(m.copied));
    if (values.size() > m.capacity) {
      if (m.dev) RH_CUDA(cudaFreeAsync(m.dev, stream()));
      if (m.pinned) RH_CUDA(cudaFreeHost(m.pinned));
      m.dev = m.pinned = nullptr;
      m.capacity = 0;
      const size_t cap = std::max<size_t>(values.size() * 2, 256);
      RH_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&m.dev), cap * sizeof(int32_t), stream()));
      RH_CUDA(cudaMallocHost(reinterpret_cast<void**>(&m.pinned), cap * sizeof(int32_t)));
      m.capacity = cap;
    }
    m.host = values;
    std::memcpy(m.pinned, values.data(), values.size() * sizeof(int32_t));
    // Stream-ordered: kernels queued before still read the old contents.
    RH_CUDA(cudaMemcpyAsync(m.dev, m.pinned, values.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream()));
    RH_CUDA(cudaEventRecord(m.copied, stream()));
    return m.dev;
  }

  IntMirror& graph_twin(IntMirror& m) {
    if (&m == &ids_) return g_ids_;
    if (&m == &from_) return g_from_;
    if (&m == &positions_) return g_positions_;
    if (&m == &rows_) return g_rows_;
    RH_CHECK(&m == &attn_meta_, "graph_twin: unknown mirror");
    return g_meta_;
  }

  // FP8 weights a product of M rows widens to bf16 for cuBLASLt (tensor-core mode, W8A16, from
  // kFp8WidenRows rows; linear() does the same): the widened copy, else an empty tensor.
  Tensor widened_for_tensor_cores(const Tensor& w, int64_t M) {
    if (!lt_ || w.dtype() != DType::kF8B128 || M < cuda::kFp8WidenRows || M >= w8a8_rows_ || w.dim() != 2) return {};
    Tensor wide = alloc_uninit(DType::kBF16, w.shape());
    cuda::launch_fp8_to_bf16(w.data(), w.size(0), w.size(1), wide.data(), stream());
    return wide;
  }

  // Whether a product of M rows on w runs on cuBLASLt in tensor-core mode (bf16/f16 weights, more
  // rows than the decode GEMV takes).
  bool takes_tensor_cores(int64_t M, const Tensor& w) const {
    return lt_ && M > gemv_rows_ && (w.dtype() == DType::kBF16 || w.dtype() == DType::kF16);
  }

  // fused_linear and linear on cuBLASLt (takes_tensor_cores): the input rounded to w's type once, by the
  // norm kernel itself when there is a norm, then the product with the residual add as its
  // beta = 1, or SiLU-and-multiply after it. Scratch is left uninitialized (the composition's
  // alloc() zeroes its intermediates: 0.6 GB per layer of an 8B prefill of 4096 tokens). Rounds
  // as the composition does, bit for bit. False, with nothing launched, where it does not apply.
  bool tc_fused_linear(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w, const Tensor* bias,
                       LinearOut mode, Tensor& out) {
    const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
    if (!takes_tensor_cores(M, w)) return false;
    const Elem wt = elem_of(w, "fused_linear");
    if (!lt_->has_plan(wt, bias != nullptr, M, N, K)) return false;
    Tensor a = alloc_uninit(w.dtype(), {M, K});
    if (norm_weight)
      cuda::launch_rms_norm_to(nullptr, x.data_as<float>(), norm_weight->data_as<float>(), eps, M, K, a.data(), wt,
                               stream());
    else
      cuda::launch_narrow(x.data_as<float>(), M * K, a.data(), wt, stream());
    const float* b = bias ? bias->data_as<float>() : nullptr;
    if (mode == LinearOut::kSiluMul) {
      Tensor p = alloc_uninit(DType::kF32, {M, N});
      RH_CHECK(lt_->run(a.data(), w.data(), wt, b, M, N, K, p.data_as<float>(), stream()),
               "fused_linear: product failed to launch");
      cuda::launch_silu_mul(p.data_as<float>(), M, N / 2, out.data_as<float>(), stream());
      return true;
    }
    RH_CHECK(lt_->run(a.data(), w.data(), wt, b, M, N, K, out.data_as<float>(), stream(),
                      mode == LinearOut::kAccumulate),
             "fused_linear: product failed to launch");
    return true;
  }

  // linear() and fused_linear() on kF8B128 weights with the tensor-core paths (cuBLASLt present),
  // in one order for both: W8A8 on cuBLASLt from w8a8_rows_ rows; else the W8A16 decode kernel up
  // to kFp8DecodeMaxRows rows; past kGemvMaxRows the W8A16 tiles, or from kFp8WidenRows rows the
  // weights widened to bf16 for this call, then cuBLASLt as for bf16 weights (the weights cross
  // memory three times, but cuBLASLt's matrix rate outweighs that there). False: none of these
  // ran (other weights, no cuBLASLt, or a decode size the decode kernel does not take).
  bool fp8_tensor_core_product(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w,
                               const Tensor* bias, LinearOut mode, Tensor& out) {
    if (!lt_ || w.dtype() != DType::kF8B128) return false;
    const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
    if (M >= w8a8_rows_ && w8a8_product(x, norm_weight, eps, w, bias, mode, out)) return true;
    // One row on block-scaled weights: the bulk-copy kernel (sm_90+) where it is preferred.
    if (M == 1 && cuda::bulk_gemv_fp8_preferred(N, K, mode == LinearOut::kSiluMul) && block_scaled_->has(w.data()) &&
        cuda::launch_bulk_gemv_fp8(x.data_as<float>(), norm_weight ? norm_weight->data_as<float>() : nullptr, eps,
                                   w.data(), bias ? bias->data_as<float>() : nullptr, M, N, K,
                                   static_cast<cuda::LinearMode>(static_cast<int>(mode)), out.data_as<float>(),
                                   stream()))
      return true;
    if (M <= cuda::kFp8DecodeMaxRows &&
        cuda::launch_fp8_decode(x.data_as<float>(), norm_weight ? norm_weight->data_as<float>() : nullptr, eps,
                                w.data(), bias ? bias->data_as<float>() : nullptr, M, N, K,
                                static_cast<cuda::LinearMode>(static_cast<int>(mode)), out.data_as<float>(), stream()))
      return true;
    if (M <= cuda::kGemvMaxRows) return false;
    if (M < cuda::kFp8WidenRows || M >= w8a8_rows_) {
      fp8_product(x, norm_weight, eps, w, bias, mode, out);
      return true;
    }
    const Tensor wide = widened_for_tensor_cores(w, M);
    return wide.data() && tc_fused_linear(x, norm_weight, eps, wide, bias, mode, out);
  }

  // out (+)= the W8A16 product on kF8B128 weights on the tensor cores (cuda::launch_fp8_mma:
  // activations, normalized first when norm_weight is set, rounded to bf16; weights exact).
  void fp8_product(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w, const Tensor* bias,
                   LinearOut mode, Tensor& out) {
    const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
    const cuda::Fp8MmaPlan plan = cuda::plan_fp8_mma(M, N, K);
    Tensor scratch = alloc_uninit(DType::kU8, {plan.scratch_bytes});
    cuda::launch_fp8_mma(x.data_as<float>(), norm_weight ? norm_weight->data_as<float>() : nullptr, eps, w.data(),
                         bias ? bias->data_as<float>() : nullptr, M, N, K,
                         static_cast<cuda::LinearMode>(static_cast<int>(mode)), out.data_as<float>(), scratch.data(),
                         plan, stream());
  }

  // Device allocations of FP8 weights whose layout holds the 128 x 128 block table (uploaded
  // block-scaled weights; cuda::fp8_blocks_to_device_layout). Shared with their deleters, which
  // may run after the backend is gone.
  struct BlockScaledSet {
    std::mutex mu;
    std::set<const void*> ptrs;
    void add(const void* p) {
      std::lock_guard<std::mutex> lock(mu);
      ptrs.insert(p);
    }
    void remove(const void* p) {
      std::lock_guard<std::mutex> lock(mu);
      ptrs.erase(p);
    }
    bool has(const void* p) {
      std::lock_guard<std::mutex> lock(mu);
      return ptrs.count(p) > 0;
    }
  };
  std::shared_ptr<BlockScaledSet> block_scaled_ = std::make_shared<BlockScaledSet>();

  // Rows a W8A8 product that cuBLASLt refuses at its own row count is cut into: a multiple of
  // kW8A8Pad rows, then the rest padded with zero rows to kW8A8Pad (H100: 1 and 5 rows refused,
  // 8 and 64 taken).
  static constexpr int64_t kW8A8Pad = 16;

  // out (+)= the W8A8 product on cuBLASLt (LtGemm::run_fp8): the activations (normalized first when
  // norm_weight is set) quantized to e4m3 per row and 128-value block, times the e4m3 weights,
  // each block's f32 sum times both scales. Residual add as beta = 1; bias and SiLU after the
  // product (launch_product_epilogue). False, with nothing launched, where cuBLASLt has no
  // algorithm, or N is not a multiple of 4: cuBLASLt offered algorithms for N = 130 on an H100
  // whose results were 2% off (rows of the output and of the weights' scale table not 16-byte
  // aligned; 136, 200 and 300 were right); such products stay W8A16.
  bool w8a8_product(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w, const Tensor* bias,
                    LinearOut mode, Tensor& out) {
    const int64_t M = x.size(0), N = w.size(0), K = x.size(1), cols = mode == LinearOut::kSiluMul ? N / 2 : N;
    if (N % 4 != 0) return false;
    // Rows [0, head) as they are, the rest padded to kW8A8Pad, each part with a cuBLASLt algorithm;
    // the weights' block table from kW8A8BlockRows rows where they have one, else their row scales.
    int64_t head = 0, tail = 0;
    const auto split = [&](bool blocks) {
      head = lt_->has_fp8_plan(M, N, K, blocks) ? M : M / kW8A8Pad * kW8A8Pad;
      tail = M - head;
      return (head == 0 || lt_->has_fp8_plan(head, N, K, blocks)) &&
             (tail == 0 || lt_->has_fp8_plan(kW8A8Pad, N, K, blocks));
    };
    // (K / 128 a multiple of 4: with 2 and 5 blocks per row, rows of the block table not 16-byte
    // aligned, cuBLASLt's sums were wrong on an H100.)
    const bool blocks =
        M >= cuda::kW8A8BlockRows && (K / 128) % 4 == 0 && block_scaled_->has(w.data()) && split(true);
    if (!blocks && !split(false)) return false;
    const float* nw = norm_weight ? norm_weight->data_as<float>() : nullptr;
    const float* b = bias ? bias->data_as<float>() : nullptr;
    const auto lmode = static_cast<cuda::LinearMode>(static_cast<int>(mode));
    // Rows [r0, r0 + rows) of x, quantized into `padded` rows.
    const auto chunk = [&](int64_t r0, int64_t rows, int64_t padded) {
      Tensor q = alloc_uninit(DType::kU8, {padded * K});
      Tensor qs = alloc_uninit(DType::kF32, {K / 128 * padded});
      cuda::launch_fp8_quantize_activations(x.data_as<float>() + r0 * K, nw, eps, rows, padded, K, q.data(),
                                            qs.data_as<float>(), stream());
      float* dst = out.data_as<float>() + r0 * cols;
      if (!b && mode != LinearOut::kSiluMul && padded == rows) {
        RH_CHECK(lt_->run_fp8(q.data(), qs.data_as<float>(), w.data(), rows, N, K, dst, stream(),
                              mode == LinearOut::kAccumulate, blocks),
                 "W8A8 product failed to launch");
        return;
      }
      Tensor p = alloc_uninit(DType::kF32, {padded, N});
      RH_CHECK(lt_->run_fp8(q.data(), qs.data_as<float>(), w.data(), padded, N, K, p.data_as<float>(), stream(),
                            false, blocks),
               "W8A8 product failed to launch");
      if (!b && mode == LinearOut::kSiluMul) cuda::launch_silu_mul(p.data_as<float>(), rows, N / 2, dst, stream());
      else cuda::launch_product_epilogue(p.data_as<float>(), b, rows, N, lmode, dst, stream());
    };
    if (head > 0) chunk(0, head, head);
    if (tail > 0) chunk(head, tail, kW8A8Pad);
    return true;
  }

  // Device memory without the zeroing alloc() promises, for scratch that is written whole.
  Tensor alloc_uninit(DType dtype, Shape shape) {
    const int64_t bytes = dtype_bytes(dtype, shape_numel(shape));
    void* p = nullptr;
    RH_CUDA(cudaMallocAsync(&p, static_cast<size_t>(std::max<int64_t>(bytes, 16)), ctx_->stream));
    auto owner = std::shared_ptr<void>(p, [ctx = ctx_](void* q) { cudaFreeAsync(q, ctx->stream); });
    return Tensor(dtype, std::move(shape), p, std::move(owner), device());
  }

  // Graph inputs. A replay's index arrays (g_ctrl_, g_ids_, g_from_, g_positions_, g_rows_,
  // g_meta_: sections of one device block, graph_inputs_) are written by the host into one of two
  // pinned, mapped buffers (replay k's into buffer k & 1, while replay k - 1 may still run) and
  // copied to the device block by the graph's own first kernel (cuda::launch_stage_in), which
  // counts replays on the device as stage_replays_ does on the host. Before, one cudaMemcpyAsync
  // per step ahead of the graph was a stream operation of its own that the GPU waited for between
  // steps (H100, batch-1 8B FP8 decode: 15-22 us per step between a step and its graph replayed
  // back to back, with the draw after it). Captured graphs hold the sections' addresses, so
  // growing the block drops them all (they are captured again on their next use).
  static constexpr int kGraphInputs = 6;
  void stage_graph_inputs(const std::vector<int32_t>* const (&values)[kGraphInputs]) {
    IntMirror* const g[kGraphInputs] = {&g_ctrl_, &g_ids_, &g_from_, &g_positions_, &g_rows_, &g_meta_};
    bool fits = graph_inputs_.dev != nullptr;
    for (int i = 0; i < kGraphInputs; ++i) fits = fits && values[i]->size() <= g[i]->capacity;
    if (!fits) {
      graph_clear();
      RH_CUDA(cudaStreamSynchronize(stream()));
      if (graph_inputs_.dev) RH_CUDA(cudaFree(graph_inputs_.dev));
      if (graph_inputs_.pinned) RH_CUDA(cudaFreeHost(graph_inputs_.pinned));
      graph_inputs_.dev = graph_inputs_.pinned = nullptr;
      size_t total = 0;
      size_t cap[kGraphInputs];
      for (int i = 0; i < kGraphInputs; ++i) {
        // Sections of whole 16-byte words, at least 16 values, twice what is needed now.
        cap[i] = (std::max<size_t>({values[i]->size() * 2, g[i]->capacity, 16}) + 3) / 4 * 4;
        total += cap[i];
      }
      RH_CUDA(cudaMalloc(reinterpret_cast<void**>(&graph_inputs_.dev), total * sizeof(int32_t)));
      RH_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&graph_inputs_.pinned), 2 * total * sizeof(int32_t),
                            cudaHostAllocMapped | cudaHostAllocPortable));
      RH_CUDA(cudaHostGetDevicePointer(&stage_mapped_, graph_inputs_.pinned, 0));
      std::memset(graph_inputs_.pinned, 0, 2 * total * sizeof(int32_t));
      graph_inputs_.capacity = total;
      for (int i = 0, at = 0; i < kGraphInputs; at += static_cast<int>(cap[i]), ++i) {
        g[i]->dev = graph_inputs_.dev + at;
        g[i]->pinned = graph_inputs_.pinned + at;  // in buffer 0; buffer 1's is `total` values on
        g[i]->capacity = cap[i];
        g[i]->host.clear();
      }
      if (!stage_replays_dev_) {
        RH_CUDA(cudaMalloc(reinterpret_cast<void**>(&stage_replays_dev_), 2 * sizeof(uint32_t)));
        RH_CUDA(cudaMemset(stage_replays_dev_, 0, 2 * sizeof(uint32_t)));
        stage_replays_ = 0;
      }
      for (cudaEvent_t& e : stage_read_)
        if (!e) RH_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    // The buffer of the next replay; the replay before the previous one read it last.
    const size_t buf = stage_replays_ & 1;
    RH_CUDA(cudaEventSynchronize(stage_read_[buf]));
    int32_t* base = graph_inputs_.pinned + buf * graph_inputs_.capacity;
    for (int i = 0; i < kGraphInputs; ++i) {
      g[i]->host = *values[i];
      if (!values[i]->empty())
        std::memcpy(base + (g[i]->pinned - graph_inputs_.pinned), values[i]->data(), values[i]->size() * sizeof(int32_t));
    }
    staged_ = true;
  }

  // What graph_stage staged for the replay's own draw (g_ctrl_ holds it for the device).
  GraphDrawn staged_draw_;

 public:
  bool supports_graphs() const override { return options_.graphs; }

  void graph_stage(const std::vector<int32_t>& token_ids, const std::vector<int32_t>& from_draw,
                   const std::vector<int32_t>& positions, const AttentionBatch& attn, const std::vector<int32_t>& rows,
                   const KvCache& kv, const GraphDraw& draw) override {
    RH_CHECK(!capturing_, "graph_stage during a capture");
    RH_CHECK(!kv.layers.empty(), "graph_stage: empty KV cache");
    const int64_t T = attn.num_tokens();
    RH_CHECK(static_cast<int64_t>(token_ids.size()) == T && static_cast<int64_t>(positions.size()) == T,
             "graph_stage: ", token_ids.size(), " ids and ", positions.size(), " positions for ", T, " tokens");
    RH_CHECK(from_draw.size() == token_ids.size(), "graph_stage: ", from_draw.size(), " draw rows for ", T, " tokens");
    for (int32_t r : from_draw) RH_CHECK(r < latest_draw_rows_, "graph_stage: row ", r, " of a draw of ", latest_draw_rows_);
    check_attention_batch(attn, kv.layers[0].k.size(0), kv.layers[0].k.size(1));
    for (int32_t r : rows) RH_CHECK(r >= 0 && r < T, "graph_stage: row ", r, " out of range");
    pack_attention_meta(attn, meta_scratch_);
    ensure_drawn_ids(T);  // its address goes into the graph (embedding_drawn, graph_capture_draw)
    graph_drawn_ = {};
    // The replay's own draw: rows that exist, into the slot the draw that follows will take,
    // which is free (an async draw's, while fewer than kMaxDrawsInFlight wait).
    staged_draw_ = {};
    cuda::GraphDrawCtrl ctrl{0, 0, 0};
    if (draw.greedy_rows > 0 && draw.greedy_rows <= T &&
        (!draw.async || pending_draws_.size() < static_cast<size_t>(kMaxDrawsInFlight))) {
      const int slot = draw.async ? next_draw_slot_ : kMaxDrawsInFlight;
      draw_slot(slot, static_cast<size_t>(draw.greedy_rows) * sizeof(int32_t));
      staged_draw_ = {nullptr, draw.greedy_rows, slot, draw.async};
      ctrl.rows = static_cast<int32_t>(draw.greedy_rows);
      ctrl.to_out = draw.async ? 1 : 0;
      ctrl.host_out = reinterpret_cast<uint64_t>(draw_slots_[static_cast<size_t>(slot)].mapped);
    }
    ctrl_scratch_.resize(sizeof(ctrl) / sizeof(int32_t));
    std::memcpy(ctrl_scratch_.data(), &ctrl, sizeof(ctrl));
    stage_graph_inputs({&ctrl_scratch_, &token_ids, &from_draw, &positions, &rows, &meta_scratch_});
  }

  void graph_capture_begin() override {
    RH_CHECK(!capturing_, "graph capture already running");
    RH_CUDA(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    capture_ = {};
    if (graph_inputs_.dev) {  // staged inputs: the graph takes them itself
      // Every replay of this graph stages sections of the same sizes (its key fixes them): the
      // copy ends where the last one's values do.
      const size_t used = static_cast<size_t>(g_meta_.pinned - graph_inputs_.pinned) + g_meta_.host.size();
      cuda::launch_stage_in(stage_mapped_, static_cast<int64_t>(graph_inputs_.capacity / 4),
                            static_cast<int64_t>((used + 3) / 4), graph_inputs_.dev, stage_replays_dev_, stream());
      capture_.stages_in = true;
    }
  }

  // The argmax of every row of `logits`, recorded after the step: a replay runs it over the rows
  // its staged GraphDrawCtrl names (none: the kernel's blocks leave at once).
  void graph_capture_draw(const Tensor& logits) override {
    RH_CHECK(capturing_, "graph_capture_draw outside a capture");
    if (!capture_.stages_in) return;
    check_f32(logits, "graph_capture_draw logits");
    RH_CHECK(logits.dim() == 2 && logits.size(0) <= drawn_capacity_ && logits.size(1) > 0 &&
                 logits.size(1) < std::numeric_limits<int32_t>::max(),
             "graph_capture_draw: ", logits.str(), " for ", drawn_capacity_, " drawn ids");
    cuda::launch_argmax_rows(logits.data_as<float>(), logits.size(0), logits.size(1), drawn_ids_, stream(),
                             argmax_scratch(), nullptr, reinterpret_cast<const cuda::GraphDrawCtrl*>(g_ctrl_.dev));
    capture_.draw_logits = logits.data();
  }

  void graph_capture_end(int64_t key) override {
    RH_CHECK(capturing_, "graph_capture_end without a capture");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    RH_CUDA(cudaStreamEndCapture(stream(), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    RH_CUDA(e);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      RH_CUDA(cudaGraphExecDestroy(it->second.exec));
      graphs_.erase(it);
    }
    capture_.exec = exec;
    graphs_[key] = capture_;
  }

  void graph_capture_abort() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream(), &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // an invalidated capture leaves its error behind
  }

  // A replay after graph_stage takes what it staged; another replay takes the same inputs again,
  // without the draw.
  bool graph_replay(int64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    const Graph& g = it->second;
    const size_t buf = stage_replays_ & 1;
    if (g.stages_in && !staged_) {
      RH_CUDA(cudaEventSynchronize(stage_read_[buf]));
      int32_t* to = graph_inputs_.pinned + buf * graph_inputs_.capacity;
      std::memcpy(to, graph_inputs_.pinned + (buf ^ 1) * graph_inputs_.capacity,
                  graph_inputs_.capacity * sizeof(int32_t));
      reinterpret_cast<cuda::GraphDrawCtrl*>(to + (g_ctrl_.pinned - graph_inputs_.pinned))->rows = 0;
      staged_draw_ = {};
    }
    RH_CUDA(cudaGraphLaunch(g.exec, stream()));
    if (g.stages_in) {
      RH_CUDA(cudaEventRecord(stage_read_[buf], stream()));
      ++stage_replays_;
    }
    graph_drawn_ = {};
    if (g.stages_in && g.draw_logits && staged_draw_.rows > 0) {
      graph_drawn_ = staged_draw_;
      graph_drawn_.logits = g.draw_logits;
      RH_CUDA(cudaEventRecord(draw_slots_[static_cast<size_t>(staged_draw_.slot)].done, stream()));
    }
    staged_ = false;
    staged_draw_ = {};
    return true;
  }

  void graph_clear() override {
    if (graphs_.empty()) return;
    RH_CUDA(cudaStreamSynchronize(stream()));
    for (auto& [key, g] : graphs_) RH_CUDA(cudaGraphExecDestroy(g.exec));
    graphs_.clear();
    graph_drawn_ = {};
  }

 private:
  CudaOptions options_;
  std::unique_ptr<cuda::LtGemm> lt_;
  // Scratch of the partitioned attention kernels (AttentionMeta::workspace), allocated once.
  float* attn_workspace_ = nullptr;
  // Arrival counters of the tensor-core decode kernel's in-kernel merge (AttentionMeta::counters).
  int32_t* attn_counters_ = nullptr;
  // Products on FP8 weights of this many rows and more run W8A8 (CudaOptions::raise_lower_bit_float_to).
  int64_t w8a8_rows_ = std::numeric_limits<int64_t>::max();
  // The most activation rows a bf16/f16 product runs on the decode GEMV (f32 activations); more go
  // to cuBLASLt in tensor-core mode. There a batch-2 and batch-4 step of the 8B shape took 6.49 and
  // 11.30 ms on the GEMV, against 6.11 ms for a whole batch-8 step on cuBLASLt (H200), so only a
  // single row stays on the GEMV; exact mode keeps it up to kGemvMaxRows.
  int64_t gemv_rows_ = cuda::kGemvMaxRows;
  bool capturing_ = false;
  // A captured graph: whether it starts with launch_stage_in (inputs were staged before its
  // capture), and the logits its recorded draw reads (graph_capture_draw; nullptr: none).
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    bool stages_in = false;
    const void* draw_logits = nullptr;
  };
  Graph capture_;  // the one being captured
  std::map<int64_t, Graph> graphs_;
  IntMirror g_ctrl_, g_ids_, g_from_, g_positions_, g_rows_, g_meta_;  // sections of graph_inputs_
  // The device block (dev), the two pinned buffers (pinned: `capacity` values each), their
  // device address, which buffer the next replay reads (stage_replays_ & 1, the device's count in
  // stage_replays_dev_), the events after the replays that last read each, and whether the next
  // replay's inputs were staged.
  IntMirror graph_inputs_;
  void* stage_mapped_ = nullptr;
  uint64_t stage_replays_ = 0;
  uint32_t* stage_replays_dev_ = nullptr;
  cudaEvent_t stage_read_[2] = {nullptr, nullptr};
  bool staged_ = false;
  std::vector<int32_t> ctrl_scratch_;
  std::shared_ptr<StreamContext> ctx_;
  std::string name_;
  IntMirror ids_, from_, positions_, rows_, attn_meta_;
  // The latest async draw's tokens on the device, and how many rows it had; the draws not yet
  // collected, oldest first; their pinned slots (the last one: sample_rows').
  int32_t* drawn_ids_ = nullptr;
  int64_t drawn_capacity_ = 0;
  int32_t latest_draw_rows_ = 0;
  std::deque<PendingDraw> pending_draws_;
  int next_draw_slot_ = 0;
  DrawSlot draw_slots_[kMaxDrawsInFlight + 1];
  std::vector<int32_t> meta_scratch_;
  static constexpr size_t kPinnedOutMax = size_t{16} << 20;
  static constexpr int64_t kSampleGroup = 32;
  void* pinned_out_ = nullptr;
  size_t pinned_out_capacity_ = 0;
};

// Rows are drawn in groups so that the scratch (penalised rows, sort keys and ids, CUB's
// buffers) stays near kSampleGroup * vocab * 28 bytes whatever the batch.
std::vector<SampledToken> CudaBackend::sample_rows(const Tensor& logits, const std::vector<RowSampling>& rows) {
  if (rows.empty()) {
    check_f32(logits, "sample_rows logits");
    return {};
  }
  PendingDraw d;
  if (!take_graph_draw(logits, rows, kMaxDrawsInFlight, false, d)) d = issue_draw(logits, rows, false, kMaxDrawsInFlight);
  RH_CUDA(cudaEventSynchronize(draw_slots_[kMaxDrawsInFlight].done));
  return unpack_draw(d);
}

// Queues the draw of `rows` (tokens also to drawn_ids_ when to_drawn) with its results copied to
// pinned slot `slot` and the slot's event recorded after them.
CudaBackend::PendingDraw CudaBackend::issue_draw(const Tensor& logits, const std::vector<RowSampling>& rows,
                                                 bool to_drawn, int slot) {
  check_f32(logits, "sample_rows logits");
  const int64_t R = static_cast<int64_t>(rows.size());
  RH_CHECK(logits.dim() == 2 && logits.size(1) > 0 && logits.size(0) >= R, "sample_rows: ", R, " rows of ",
           logits.str());
  const int64_t V = logits.size(1);
  RH_CHECK(V < std::numeric_limits<int32_t>::max(), "sample_rows: vocabulary of ", V);
  RH_CHECK(!to_drawn || R <= drawn_capacity_, "sample_rows: ", R, " rows for ", drawn_capacity_, " drawn ids");
  PendingDraw d;
  d.slot = slot;
  d.rows = R;
  bool plain = true, any_logprobs = false;
  int32_t max_top = 0;
  for (const RowSampling& p : rows) {
    RH_CHECK(std::isfinite(p.temperature) && std::isfinite(p.top_p) && std::isfinite(p.min_p) &&
                 std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0 &&
                 std::isfinite(p.frequency_penalty) && std::isfinite(p.presence_penalty),
             "sample_rows: sampling parameters out of range");
    RH_CHECK(p.penalty_tokens.size() == p.output_counts.size(), "sample_rows: penalty lists differ in length");
    for (int32_t t : p.penalty_tokens) RH_CHECK(t >= 0 && t < V, "sample_rows: penalty token ", t, " outside [0, ", V, ")");
    plain = plain && p.plain_greedy();
    any_logprobs = any_logprobs || p.logprobs >= 0;
    max_top = std::max(max_top, static_cast<int32_t>(std::min<int64_t>(p.logprobs, V)));
    d.top_n.push_back(p.logprobs < 0 ? -1 : static_cast<int32_t>(std::min<int64_t>(p.logprobs, V)));
  }
  d.plain = plain;
  cudaEvent_t done = nullptr;
  if (plain) {
    // Every row greedy: the argmax kernel alone (the first largest logit, as the reference).
    draw_slot(slot, static_cast<size_t>(R) * sizeof(int32_t));
    done = draw_slots_[static_cast<size_t>(slot)].done;
    Tensor scratch_ids;
    int32_t* ids = to_drawn ? drawn_ids_ : nullptr;
    if (!ids) {
      scratch_ids = alloc_uninit(DType::kI32, {R});
      ids = scratch_ids.data_as<int32_t>();
    }
    // The kernel also writes the tokens to the slot itself (pinned memory is mapped into the
    // device's address space): one stream operation fewer between this step and the next.
    cuda::launch_argmax_rows(logits.data_as<float>(), R, V, ids, stream(), argmax_scratch(),
                             static_cast<int32_t*>(draw_slots_[static_cast<size_t>(slot)].mapped));
    RH_CUDA(cudaEventRecord(done, stream()));
    return d;
  }
  const int64_t top_w = std::max<int32_t>(max_top, 1);
  d.top_w = top_w;
  // The slot: every row's SampleResultDev, then the top ids [R, top_w], then their logprobs.
  const size_t res_bytes = static_cast<size_t>(R) * sizeof(cuda::SampleResultDev);
  const size_t top_bytes = static_cast<size_t>(R * top_w) * sizeof(int32_t);
  auto* host = static_cast<uint8_t*>(draw_slot(slot, res_bytes + 2 * top_bytes));
  done = draw_slots_[static_cast<size_t>(slot)].done;
  auto* h_res = reinterpret_cast<cuda::SampleResultDev*>(host);
  auto* h_top_ids = reinterpret_cast<int32_t*>(host + res_bytes);
  auto* h_top_lp = reinterpret_cast<float*>(host + res_bytes + top_bytes);
  for (int64_t g0 = 0; g0 < R; g0 += kSampleGroup) {
    const int64_t G = std::min<int64_t>(kSampleGroup, R - g0);
    std::vector<cuda::SampleRowDev> dev(static_cast<size_t>(G));
    std::vector<int32_t> pen_tokens, pen_counts;
    int64_t sorted = 0;
    for (int64_t r = 0; r < G; ++r) {
      const RowSampling& p = rows[static_cast<size_t>(g0 + r)];
      cuda::SampleRowDev& dr = dev[static_cast<size_t>(r)];
      dr = {};
      dr.temperature = p.temperature;
      dr.top_p = p.top_p;
      dr.min_p = p.min_p;
      dr.repetition_penalty = p.repetition_penalty;
      dr.frequency_penalty = p.frequency_penalty;
      dr.presence_penalty = p.presence_penalty;
      dr.top_k = p.top_k;
      dr.logprobs = d.top_n[static_cast<size_t>(g0 + r)];
      dr.pen_begin = static_cast<int32_t>(pen_tokens.size());
      if (p.has_penalties()) {
        pen_tokens.insert(pen_tokens.end(), p.penalty_tokens.begin(), p.penalty_tokens.end());
        pen_counts.insert(pen_counts.end(), p.output_counts.begin(), p.output_counts.end());
      }
      dr.pen_end = static_cast<int32_t>(pen_tokens.size());
      dr.sort_row = p.temperature > 0.0f ? static_cast<int32_t>(sorted++) : -1;
      dr.seed = p.seed;
      dr.step = p.step;
    }
    // One upload: row parameters, then the penalty lists (pageable: the copy is staged before
    // cudaMemcpyAsync returns).
    const size_t row_bytes = dev.size() * sizeof(cuda::SampleRowDev);
    const size_t pen_bytes = pen_tokens.size() * sizeof(int32_t);
    std::vector<uint8_t> packed(row_bytes + 2 * pen_bytes);
    std::memcpy(packed.data(), dev.data(), row_bytes);
    if (pen_bytes) {
      std::memcpy(packed.data() + row_bytes, pen_tokens.data(), pen_bytes);
      std::memcpy(packed.data() + row_bytes + pen_bytes, pen_counts.data(), pen_bytes);
    }
    Tensor params = alloc_uninit(DType::kU8, {static_cast<int64_t>(packed.size())});
    RH_CUDA(cudaMemcpyAsync(params.data(), packed.data(), packed.size(), cudaMemcpyHostToDevice, stream()));
    const auto* d_rows = static_cast<const cuda::SampleRowDev*>(params.data());
    const auto* d_pen_tokens = reinterpret_cast<const int32_t*>(static_cast<uint8_t*>(params.data()) + row_bytes);
    const int32_t* d_pen_counts = d_pen_tokens + pen_tokens.size();

    const float* lg = logits.data_as<float>() + g0 * V;
    Tensor work = alloc_uninit(DType::kF32, {G, V});
    Tensor result = alloc_uninit(DType::kU8, {G * static_cast<int64_t>(sizeof(cuda::SampleResultDev))});
    auto* d_result = static_cast<cuda::SampleResultDev*>(result.data());
    const int64_t items = sorted * V;
    Tensor keys = alloc_uninit(DType::kI64, {std::max<int64_t>(2 * items, 1)});
    Tensor ids = alloc_uninit(DType::kI32, {std::max<int64_t>(2 * items, 1)});
    auto* k_in = reinterpret_cast<uint64_t*>(keys.data());
    int32_t* i_in = ids.data_as<int32_t>();
    cuda::launch_sample_prepare(lg, V, d_rows, G, d_pen_tokens, d_pen_counts, work.data_as<float>(), k_in, i_in,
                                d_result, stream());
    if (sorted > 0) {
      const size_t temp_bytes = cuda::sample_sort_temp_bytes(items, sorted);
      Tensor temp = alloc_uninit(DType::kU8, {static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))});
      cuda::launch_sample_sort(temp.data(), temp_bytes, k_in, k_in + items, i_in, i_in + items, items, sorted,
                               stream());
      Tensor weights = alloc_uninit(DType::kI64, {items});  // f64 scratch
      Tensor chunk_sums = alloc_uninit(DType::kI64, {sorted * cuda::sample_weight_chunks(V)});
      cuda::launch_sample_pick(V, d_rows, G, k_in + items, i_in + items, reinterpret_cast<double*>(weights.data()),
                               reinterpret_cast<double*>(chunk_sums.data()), d_result, stream());
    }
    Tensor top_ids = alloc_uninit(DType::kI32, {G * top_w});
    Tensor top_lp = alloc_uninit(DType::kF32, {G * top_w});
    if (any_logprobs)
      cuda::launch_sample_logprobs(lg, V, d_rows, G, static_cast<int>(top_w), d_result, top_ids.data_as<int32_t>(),
                                   top_lp.data_as<float>(), stream());
    if (to_drawn)  // the tokens alone, for the next step's embedding_drawn
      RH_CUDA(cudaMemcpy2DAsync(drawn_ids_ + g0, sizeof(int32_t), d_result, sizeof(cuda::SampleResultDev),
                                sizeof(int32_t), static_cast<size_t>(G), cudaMemcpyDeviceToDevice, stream()));
    RH_CUDA(cudaMemcpyAsync(h_res + g0, d_result, static_cast<size_t>(G) * sizeof(cuda::SampleResultDev),
                            cudaMemcpyDeviceToHost, stream()));
    if (max_top > 0) {
      RH_CUDA(cudaMemcpyAsync(h_top_ids + g0 * top_w, top_ids.data(), static_cast<size_t>(G * top_w) * sizeof(int32_t),
                              cudaMemcpyDeviceToHost, stream()));
      RH_CUDA(cudaMemcpyAsync(h_top_lp + g0 * top_w, top_lp.data(), static_cast<size_t>(G * top_w) * sizeof(float),
                              cudaMemcpyDeviceToHost, stream()));
    }
  }
  RH_CUDA(cudaEventRecord(done, stream()));
  return d;
}

// A draw's results, read from its slot once its event has passed.
std::vector<SampledToken> CudaBackend::unpack_draw(const PendingDraw& d) const {
  std::vector<SampledToken> out(static_cast<size_t>(d.rows));
  const auto* host = static_cast<const uint8_t*>(draw_slots_[static_cast<size_t>(d.slot)].pinned);
  if (d.plain) {
    const auto* ids = reinterpret_cast<const int32_t*>(host);
    for (int64_t r = 0; r < d.rows; ++r) out[static_cast<size_t>(r)].token = ids[r];
    return out;
  }
  const size_t res_bytes = static_cast<size_t>(d.rows) * sizeof(cuda::SampleResultDev);
  const size_t top_bytes = static_cast<size_t>(d.rows * d.top_w) * sizeof(int32_t);
  const auto* res = reinterpret_cast<const cuda::SampleResultDev*>(host);
  const auto* top_ids = reinterpret_cast<const int32_t*>(host + res_bytes);
  const auto* top_lp = reinterpret_cast<const float*>(host + res_bytes + top_bytes);
  for (int64_t r = 0; r < d.rows; ++r) {
    SampledToken& t = out[static_cast<size_t>(r)];
    t.token = res[r].token;
    const int32_t n = d.top_n[static_cast<size_t>(r)];
    if (n < 0) continue;
    t.logprob = res[r].logprob;
    for (int64_t j = 0; j < n; ++j) t.top.emplace_back(top_ids[r * d.top_w + j], top_lp[r * d.top_w + j]);
  }
  return out;
}

void CudaBackend::attention_impl(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,
                                 const AttentionParams& p, Tensor& out, const RopeArgs* rope) {
  check_f32(qkv, "attention qkv");
  check_f32(out, "attention out");
  check_on_device(cache.k, "kv cache k");
  check_on_device(cache.v, "kv cache v");
  const int64_t T = batch.num_tokens(), S = batch.num_seqs;
  RH_CHECK(p.num_kv_heads > 0 && p.num_heads % p.num_kv_heads == 0, "attention heads ", p.num_heads, "/", p.num_kv_heads);
  RH_CHECK(qkv.size(0) == T && qkv.size(1) == (p.num_heads + 2 * p.num_kv_heads) * p.head_dim,
           "attention qkv ", qkv.str());
  RH_CHECK(out.size(0) == T && out.size(1) == p.num_heads * p.head_dim, "attention out ", out.str());
  RH_CHECK(cache.k.dim() == 4 && cache.k.size(2) == p.num_kv_heads && cache.k.size(3) == p.head_dim &&
               cache.v.shape() == cache.k.shape() && cache.v.dtype() == cache.k.dtype(),
           "kv cache ", cache.k.str(), " / ", cache.v.str());
  const int64_t block_size = cache.k.size(1);
  check_attention_batch(batch, cache.k.size(0), block_size);
  int32_t max_query_len = 0, min_query_len = std::numeric_limits<int32_t>::max();
  for (int64_t i = 0; i < S; ++i) {
    const int32_t len = batch.query_start[i + 1] - batch.query_start[i];
    max_query_len = std::max(max_query_len, len);
    min_query_len = std::min(min_query_len, len);
  }
  if (T == 0) return;

  pack_attention_meta(batch, meta_scratch_);
  const int32_t* d = mirror(attn_meta_, meta_scratch_);
  cuda::AttentionMeta meta;
  meta.query_start = d;
  meta.context_lens = d + (S + 1);
  meta.block_tables = meta.context_lens + S;
  meta.slot_mapping = meta.block_tables + S * batch.max_blocks;
  meta.token_seq = meta.slot_mapping + T;
  meta.max_blocks = batch.max_blocks;
  meta.tokens = static_cast<int32_t>(T);
  meta.num_seqs = static_cast<int32_t>(S);
  meta.max_query_len = max_query_len;
  meta.min_query_len = S > 0 ? min_query_len : 0;
  meta.workspace = attn_workspace_;
  meta.workspace_floats = cuda::kAttentionWorkspaceFloats;
  meta.counters = attn_counters_;
  meta.counter_count = cuda::kAttentionCounters;
  cuda::AttentionShape shape{static_cast<int32_t>(p.num_heads), static_cast<int32_t>(p.num_kv_heads),
                             static_cast<int32_t>(p.head_dim), static_cast<int32_t>(block_size),
                             p.scale, static_cast<int32_t>(p.sliding_window)};
  shape.tensor_cores = options_.tensor_cores;
  // One query and a qkv product on the bulk-copy kernel: the o product after attention takes it too
  // (same weights, M = 1) where its row width is compiled (FP8: where the backend prefers it; N is
  // the hidden size, >= 4096 as the qkv product's K was), so attention may let it in. The o
  // product's blocks then take the large footprint (kernels_gemv_bulk.cu): without it they landed
  // two to an SM beside attention's, and FP8 steps lost (H100, 8B: 4.13 ms with the let-in, 3.51
  // without); with it, 3.51 -> 3.46 ms (bf16 5.40 -> 5.36).
  const int64_t o_width = p.num_heads * p.head_dim;
  const int bulk_bytes = cuda::last_bulk_gemv_bytes();
  shape.let_in_successor = T == 1 && ((bulk_bytes == 2 && cuda::bulk_gemv_width(o_width, 2, false)) ||
                                      (bulk_bytes == 1 && cuda::bulk_gemv_fp8_preferred(o_width, o_width, false)));
  if (T == 1) cuda::bulk_gemv_after_attention();
  if (cache.k.dtype() == DType::kF8E4M3) {
    const Shape scales{cache.k.size(0), block_size, p.num_kv_heads};
    RH_CHECK(cache.k_scale.dtype() == DType::kF32 && cache.k_scale.shape() == scales &&
                 cache.v_scale.dtype() == DType::kF32 && cache.v_scale.shape() == scales,
             "FP8 kv cache needs f32 scales [blocks, block_size, kv heads], has ", cache.k_scale.str());
    check_on_device(cache.k_scale, "kv cache k scales");
    check_on_device(cache.v_scale, "kv cache v scales");
    cuda::launch_attention_fp8(qkv.data_as<float>(), cache.k.data(), cache.v.data(), cache.k_scale.data_as<float>(),
                               cache.v_scale.data_as<float>(), meta, shape, out.data_as<float>(), stream());
    return;
  }
  const cuda::Elem kv_type = elem_of(cache.k, "attention kv cache");
  cuda::RopeInputs rope_in{};
  if (rope) {
    rope_in.qkv = rope->qkv->data_as<float>();
    rope_in.positions = mirror(positions_, *rope->positions);
    rope_in.inv_freq = rope->inv_freq->data_as<float>();
  }
  cuda::launch_attention(qkv.data_as<float>(), cache.k.data(), cache.v.data(), kv_type, meta, shape,
                         out.data_as<float>(), stream(), rope ? &rope_in : nullptr);
}

}  // namespace

LowerBitFloat parse_lower_bit_float(const std::string& value) {
  if (value == "auto") return LowerBitFloat::kAuto;
  if (value == "bf16") return LowerBitFloat::kBf16;
  if (value == "fp8") return LowerBitFloat::kFp8;
  fail("infer.raise_lower_bit_float_to '", value, "' is not one of auto, bf16, fp8");
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls report their own
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int device, const CudaOptions& options) {
  return std::make_unique<CudaBackend>(device, options);
}

}  // namespace redhare
