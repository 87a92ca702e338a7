// Input validation of pid::rms_norm_modulate, pid::rms_norm_modulate_pixels and pid::gated_residual,
// shared by the CPU and CUDA bindings: checks the tensors and describes them as torch-free row views
// (no copies; strided views whose last dimension has unit stride are accepted as they are).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "kernel_dtype.h"
#include "pid/norm_modulate.h"

namespace pid::norm_check {

inline void check_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_kernel_dtype(t.scalar_type()), "pid::", op, ": ", name, " must be float32 or bfloat16, got ",
              t.scalar_type(), "; cast it, or use pid.ops.", op, ", which falls back to PyTorch");
}

inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), "pid::", op, ": all inputs must be on x's device ", x.device(), ", but ",
              name, " is on ", t.device());
}

inline void check_unit_last_stride(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "pid::", op, ": ", name,
              " must have unit stride in its last dimension (strides ", t.strides(),
              "); call .contiguous(), or use pid.ops.", op, ", which does");
}

// The [B, L, D] row view of a 3-D tensor; a dimension of size 1 gets stride 0 (broadcast).
inline RowView row_view(const at::Tensor& t, const void* data = nullptr) {
  return RowView{data ? data : t.const_data_ptr(), kernel_dtype(t.scalar_type()), t.size(0) == 1 ? 0 : t.stride(0),
                 t.size(1) == 1 ? 0 : t.stride(1)};
}

inline at::ScalarType norm_out_dtype(const char* op, std::optional<at::ScalarType> out_dtype) {
  // Default: the reference's promoted dtype, float32 (weight is float32, so weight * normed is).
  const at::ScalarType t = out_dtype.value_or(at::kFloat);
  TORCH_CHECK(is_kernel_dtype(t), "pid::", op, ": out_dtype must be float32 or bfloat16 (or None), got ", t);
  return t;
}

inline void check_weight(const char* op, const at::Tensor& weight, const at::Tensor& x, std::int64_t D) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == D, "pid::", op, ": weight must have shape [", D,
              "] (the last dimension of x), got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat, "pid::", op,
              ": weight must be float32 (the reference RMSNorm keeps a float32 weight), got ",
              weight.scalar_type(), "; use pid.ops.", op, " for other dtypes");
  check_device(op, "weight", weight, x);
  TORCH_CHECK(weight.is_contiguous(), "pid::", op, ": weight must be contiguous (strides ", weight.strides(),
              "); call .contiguous()");
}

// x [B, L, D]; weight [D] float32; shift, scale [B or 1, L or 1, D] sharing one dtype.
inline NormModulateParams rms_norm_modulate(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift,
                                            const at::Tensor& scale, double eps) {
  constexpr const char* op = "rms_norm_modulate";
  TORCH_CHECK(x.dim() == 3, "pid::", op, ": x must have shape [B, L, D], got ", x.sizes());
  const std::int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  check_dtype(op, "x", x);
  check_unit_last_stride(op, "x", x);
  check_weight(op, weight, x, D);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"shift", &shift}, {"scale", &scale}}) {
    TORCH_CHECK(t->dim() == 3 && (t->size(0) == B || t->size(0) == 1) && (t->size(1) == L || t->size(1) == 1) &&
                    t->size(2) == D,
                "pid::", op, ": ", name, " must have shape [B, 1, D] = [", B, ", 1, ", D, "] (or [", B, ", ", L,
                ", ", D, "] per token), got ", t->sizes());
    check_dtype(op, name, *t);
    check_device(op, name, *t, x);
    check_unit_last_stride(op, name, *t);
  }
  TORCH_CHECK(shift.scalar_type() == scale.scalar_type(), "pid::", op,
              ": shift and scale must have the same dtype, got ", shift.scalar_type(), " and ",
              scale.scalar_type());
  return NormModulateParams{B, L, D, row_view(x), weight.const_data_ptr<float>(), row_view(shift), row_view(scale),
                            nullptr, DType::kFloat32, static_cast<float>(eps)};
}

// x [N, P, c]; mods [N, P, K*c] with chunk k in channels [k*c, (k+1)*c); the shift and scale chunks.
inline NormModulateParams rms_norm_modulate_pixels(const at::Tensor& x, const at::Tensor& weight,
                                                   const at::Tensor& mods, std::int64_t shift_chunk,
                                                   std::int64_t scale_chunk, double eps) {
  constexpr const char* op = "rms_norm_modulate_pixels";
  TORCH_CHECK(x.dim() == 3, "pid::", op, ": x must have shape [N, P, c] (pixel tokens), got ", x.sizes());
  const std::int64_t N = x.size(0), P = x.size(1), c = x.size(2);
  TORCH_CHECK(c > 0, "pid::", op, ": x must have at least one channel, got shape ", x.sizes());
  check_dtype(op, "x", x);
  check_unit_last_stride(op, "x", x);
  check_weight(op, weight, x, c);
  TORCH_CHECK(mods.dim() == 3 && mods.size(0) == N && mods.size(1) == P && mods.size(2) % c == 0 &&
                  mods.size(2) > 0,
              "pid::", op, ": mods must have shape [N, P, K*c] = [", N, ", ", P, ", K*", c,
              "] (K modulation chunks of c channels, 6 in PiD), got ", mods.sizes());
  const std::int64_t K = mods.size(2) / c;
  for (const auto& [name, k] : {std::pair<const char*, std::int64_t>{"shift_chunk", shift_chunk},
                                {"scale_chunk", scale_chunk}})
    TORCH_CHECK(0 <= k && k < K, "pid::", op, ": ", name, " must be in [0, ", K, ") (mods has ", K,
                " chunks of ", c, " channels), got ", k);
  check_dtype(op, "mods", mods);
  check_device(op, "mods", mods, x);
  check_unit_last_stride(op, "mods", mods);
  const auto* base = static_cast<const char*>(mods.const_data_ptr());
  const std::int64_t chunk_bytes = c * static_cast<std::int64_t>(mods.element_size());
  return NormModulateParams{N, P, c, row_view(x), weight.const_data_ptr<float>(),
                            row_view(mods, base + shift_chunk * chunk_bytes),
                            row_view(mods, base + scale_chunk * chunk_bytes), nullptr, DType::kFloat32,
                            static_cast<float>(eps)};
}

// x, y [B, L, D]; gate [B or 1, L or 1, D].
inline GatedResidualParams gated_residual(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& y) {
  constexpr const char* op = "gated_residual";
  TORCH_CHECK(x.dim() == 3, "pid::", op, ": x must have shape [B, L, D], got ", x.sizes());
  const std::int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  check_dtype(op, "x", x);
  check_unit_last_stride(op, "x", x);
  TORCH_CHECK(y.sizes() == x.sizes(), "pid::", op, ": y must have x's shape ", x.sizes(), ", got ", y.sizes());
  TORCH_CHECK(gate.dim() == 3 && (gate.size(0) == B || gate.size(0) == 1) && (gate.size(1) == L || gate.size(1) == 1) &&
                  gate.size(2) == D,
              "pid::", op, ": gate must have shape [B, 1, D] = [", B, ", 1, ", D, "] or [B, L, D] = [", B, ", ", L,
              ", ", D, "] (e.g. a chunk view of the per-pixel modulation), got ", gate.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"gate", &gate}, {"y", &y}}) {
    check_dtype(op, name, *t);
    check_device(op, name, *t, x);
    check_unit_last_stride(op, name, *t);
  }
  return GatedResidualParams{B, L, D, row_view(x), row_view(gate), row_view(y), nullptr,
                             kernel_dtype(x.scalar_type())};
}

template <typename T>
T* mptr(at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

}  // namespace pid::norm_check
