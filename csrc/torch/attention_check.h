// Input validation of pid::qk_norm_rope and pid::attention, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "kernel_dtype.h"
#include "pid/attention.h"

namespace pid {

// qkv [B, N, 3, H, d] (any strides, last one 1), weights [d], optional cos/sin [N, d/2] float32,
// optional outputs [B, H, rows, d] dense with rows >= offset + N.
inline QkNormRopeParams check_qk_norm_rope(const at::Tensor& qkv, const at::Tensor& q_weight,
                                           const at::Tensor& k_weight, const c10::optional<at::Tensor>& cos,
                                           const c10::optional<at::Tensor>& sin, double eps,
                                           const c10::optional<at::Tensor>& q_out, std::int64_t q_offset,
                                           const c10::optional<at::Tensor>& k_out, std::int64_t k_offset) {
  constexpr const char* op = "pid::qk_norm_rope: ";
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, op,
              "qkv must have shape [B, N, 3, H, head_dim] (the qkv projection's output viewed per head), got ",
              qkv.sizes());
  const std::int64_t B = qkv.size(0), N = qkv.size(1), H = qkv.size(3), D = qkv.size(4);
  TORCH_CHECK(D % 2 == 0, op, "head_dim must be even (RoPE rotates pairs), got ", D);
  TORCH_CHECK(is_kernel_dtype(qkv.scalar_type()), op, "qkv must be float32 or bfloat16, got ", qkv.scalar_type());
  TORCH_CHECK(qkv.stride(4) == 1 || D <= 1, op, "qkv's last dimension must be contiguous (strides ",
              qkv.strides(), ")");
  for (const auto& [name, w] : {std::pair<const char*, const at::Tensor*>{"q_weight", &q_weight},
                                std::pair<const char*, const at::Tensor*>{"k_weight", &k_weight}}) {
    TORCH_CHECK(w->dim() == 1 && w->size(0) == D, op, name, " must have shape [head_dim] = [", D, "], got ",
                w->sizes());
    TORCH_CHECK(is_kernel_dtype(w->scalar_type()), op, name, " must be float32 or bfloat16, got ", w->scalar_type());
    TORCH_CHECK(w->scalar_type() == q_weight.scalar_type(), op, "q_weight and k_weight must have one dtype, got ",
                q_weight.scalar_type(), " and ", k_weight.scalar_type());
    TORCH_CHECK(w->is_contiguous(), op, name, " must be contiguous");
    TORCH_CHECK(w->device() == qkv.device(), op, name, " must be on qkv's device ", qkv.device(), ", got ",
                w->device());
  }
  TORCH_CHECK(cos.has_value() == sin.has_value(), op, "cos and sin must be given together (or neither)");
  if (cos) {
    for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"cos", &*cos},
                                  std::pair<const char*, const at::Tensor*>{"sin", &*sin}}) {
      TORCH_CHECK(t->dim() == 2 && t->size(0) == N && t->size(1) == D / 2, op, name,
                  " must have shape [N, head_dim / 2] = [", N, ", ", D / 2, "], got ", t->sizes());
      TORCH_CHECK(t->scalar_type() == at::kFloat, op, name, " must be float32, got ", t->scalar_type());
      TORCH_CHECK(t->is_contiguous(), op, name, " must be contiguous");
      TORCH_CHECK(t->device() == qkv.device(), op, name, " must be on qkv's device ", qkv.device(), ", got ",
                  t->device());
    }
  }
  TORCH_CHECK(q_out.has_value() || k_out.has_value(), op, "give q_out, k_out or both");
  at::ScalarType out_type = at::kFloat;
  bool first = true;
  for (const auto& [name, t, off] :
       {std::tuple<const char*, const c10::optional<at::Tensor>*, std::int64_t>{"q_out", &q_out, q_offset},
        std::tuple<const char*, const c10::optional<at::Tensor>*, std::int64_t>{"k_out", &k_out, k_offset}}) {
    if (!t->has_value()) continue;
    const at::Tensor& o = **t;
    TORCH_CHECK(o.dim() == 4 && o.size(0) == B && o.size(1) == H && o.size(3) == D, op, name,
                " must have shape [B, H, rows, head_dim] = [", B, ", ", H, ", rows, ", D, "], got ", o.sizes());
    TORCH_CHECK(off >= 0 && off + N <= o.size(2), op, name, ": rows [offset, offset + N) = [", off, ", ", off + N,
                ") must lie within its ", o.size(2), " rows");
    TORCH_CHECK(is_kernel_dtype(o.scalar_type()), op, name, " must be float32 or bfloat16, got ", o.scalar_type());
    TORCH_CHECK(first || o.scalar_type() == out_type, op, "q_out and k_out must have one dtype");
    TORCH_CHECK(o.is_contiguous(), op, name, " must be contiguous (a dense [B, H, rows, head_dim] buffer)");
    TORCH_CHECK(o.device() == qkv.device(), op, name, " must be on qkv's device ", qkv.device(), ", got ",
                o.device());
    out_type = o.scalar_type();
    first = false;
  }
  TORCH_CHECK(!q_out || !k_out || !q_out->is_same(*k_out), op, "q_out and k_out must be different tensors");

  QkNormRopeParams p{};
  p.B = B, p.N = N, p.H = H, p.D = D;
  p.qkv = qkv.const_data_ptr();
  p.qkv_stride[0] = qkv.stride(0), p.qkv_stride[1] = qkv.stride(1), p.qkv_stride[2] = qkv.stride(2);
  p.qkv_stride[3] = qkv.stride(3);
  p.qkv_dtype = kernel_dtype(qkv.scalar_type());
  p.q_weight = q_weight.const_data_ptr();
  p.k_weight = k_weight.const_data_ptr();
  p.weight_dtype = kernel_dtype(q_weight.scalar_type());
  p.cos = cos ? static_cast<const float*>(cos->const_data_ptr()) : nullptr;
  p.sin = sin ? static_cast<const float*>(sin->const_data_ptr()) : nullptr;
  p.eps = static_cast<float>(eps);
  p.q_out = q_out ? q_out->mutable_data_ptr() : nullptr;
  p.k_out = k_out ? k_out->mutable_data_ptr() : nullptr;
  p.q_rows = q_out ? q_out->size(2) : 0, p.q_offset = q_offset;
  p.k_rows = k_out ? k_out->size(2) : 0, p.k_offset = k_offset;
  p.out_dtype = kernel_dtype(out_type);
  return p;
}

// q [B, H, Sq, d], k and v [B, H, Sk, d]: one dtype, one device, any strides with the last one 1. The
// params describe them and the output's strides (attention_output); the caller sets p.o.
inline AttentionParams check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       std::int64_t window, std::int64_t grid_h, std::int64_t grid_w,
                                       std::int64_t n_text) {
  constexpr const char* op = "pid::attention: ";
  TORCH_CHECK(q.dim() == 4, op, "q must have shape [B, H, Sq, head_dim], got ", q.sizes());
  const std::int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3);
  TORCH_CHECK(is_kernel_dtype(q.scalar_type()), op, "q must be float32 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(D >= 1, op, "head_dim must be at least 1, got ", D);
  TORCH_CHECK(k.dim() == 4 && k.size(0) == B && k.size(1) == H && k.size(3) == D, op,
              "k must have shape [B, H, Sk, head_dim] = [", B, ", ", H, ", Sk, ", D, "], got ", k.sizes());
  const std::int64_t Sk = k.size(2);
  TORCH_CHECK(Sk >= 1, op, "k and v need at least one key (Sk = 0 has no softmax)");
  TORCH_CHECK(v.sizes() == k.sizes(), op, "v must have k's shape ", k.sizes(), ", got ", v.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"k", &k},
                                std::pair<const char*, const at::Tensor*>{"v", &v}}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), op, name, " must have q's dtype ", q.scalar_type(), ", got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == q.device(), op, "all inputs must be on q's device ", q.device(), ", but ", name,
                " is on ", t->device());
  }
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"q", &q},
                                std::pair<const char*, const at::Tensor*>{"k", &k},
                                std::pair<const char*, const at::Tensor*>{"v", &v}}) {
    TORCH_CHECK(t->stride(3) == 1 || D == 1, op, name, "'s last dimension (head_dim) must be contiguous (strides ",
                t->strides(), "); other strides are free");
  }
  TORCH_CHECK(window >= 0, op, "window must be >= 0 (0: global attention), got ", window);
  if (window > 0) {
    TORCH_CHECK(grid_h >= 1 && grid_w >= 1, op, "windowed attention needs the image grid (grid_h, grid_w >= 1), got (",
                grid_h, ", ", grid_w, ")");
    TORCH_CHECK(n_text >= 0, op, "n_text must be >= 0, got ", n_text);
    TORCH_CHECK(Sk == n_text + grid_h * grid_w, op, "windowed attention: Sk = ", Sk,
                " keys must be n_text + grid_h * grid_w = ", n_text, " + ", grid_h, " * ", grid_w, " = ",
                n_text + grid_h * grid_w, " ([text tokens, then the row-major image grid])");
    TORCH_CHECK(Sq == Sk || Sq == Sk - n_text, op, "windowed attention: the queries must be all Sk = ", Sk,
                " tokens or the ", Sk - n_text, " image tokens, got Sq = ", Sq);
  }
  AttentionParams p{};
  p.B = B, p.H = H, p.Sq = Sq, p.Sk = Sk, p.D = D;
  p.q = q.const_data_ptr(), p.k = k.const_data_ptr(), p.v = v.const_data_ptr();
  p.o = nullptr;  // the caller's output, see attention_output
  p.dtype = kernel_dtype(q.scalar_type());
  p.q_stride = {q.stride(0), q.stride(1), q.stride(2)};
  p.k_stride = {k.stride(0), k.stride(1), k.stride(2)};
  p.v_stride = {v.stride(0), v.stride(1), v.stride(2)};
  p.o_stride = {Sq * H * D, D, H * D};  // the output's layout, see attention_output
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  p.window = window;
  p.grid_h = window > 0 ? grid_h : 0;
  p.grid_w = window > 0 ? grid_w : 0;
  p.n_text = window > 0 ? n_text : 0;
  return p;
}

// The output: shape [B, H, Sq, d] laid out as [B, Sq, H, d], so merging the heads is a free view.
inline at::Tensor attention_output(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options()).permute({0, 2, 1, 3});
}

}  // namespace pid
