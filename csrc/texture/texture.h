// Torch-facing texture sampling op: bilinear, or trilinear over a mip pyramid that the caller
// builds (see texture_math.h for the UV convention and the flat pyramid layout).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "texture/texture_math.h"

namespace diffrender {

// Validated, contiguous inputs. levels: the flat pyramid [N]; uv [B,H,W,2]; uv_da [B,H,W,4] or
// undefined (bilinear).
struct TextureInputs {
  at::Tensor levels, uv, uv_da;
  MipPyramid mips;
};

template <typename T>
SamplePixels<T> sample_pixels(const TextureInputs& in) {
  return {in.uv.data_ptr<T>(), in.uv_da.defined() ? in.uv_da.data_ptr<T>() : nullptr, in.uv.size(0),
          in.uv.size(1) * in.uv.size(2)};
}

// levels: float32/float64 [N], the levels [texture_batch, height, width, channels] one after
// another; level_sizes: (height, width) per level, flattened; texture_batch: 1 or B; uv:
// [B,H,W,2] of the same dtype and device; uv_da: [B,H,W,4], required by filter "trilinear" and
// refused by "bilinear"; boundary: "wrap" or "clamp". Returns [B,H,W,channels].
at::Tensor texture_sample_forward(const at::Tensor& levels, const std::vector<int64_t>& level_sizes,
                                  int64_t texture_batch, int64_t channels, const at::Tensor& uv,
                                  const c10::optional<at::Tensor>& uv_da, const std::string& filter,
                                  const std::string& boundary);

// Returns {d(loss)/d(levels) [N], d(loss)/d(uv) [B,H,W,2]}, each an undefined tensor (None) when
// not wanted; the level of detail is constant.
std::vector<at::Tensor> texture_sample_backward(const at::Tensor& grad_out, const at::Tensor& levels,
                                                const std::vector<int64_t>& level_sizes, int64_t texture_batch,
                                                int64_t channels, const at::Tensor& uv,
                                                const c10::optional<at::Tensor>& uv_da, const std::string& filter,
                                                const std::string& boundary, bool want_grad_levels = true,
                                                bool want_grad_uv = true);

void texture_sample_forward_cpu(const TextureInputs& in, at::Tensor& out);
// grad_levels (zeroed) or grad_uv may be undefined: that gradient is skipped.
void texture_sample_backward_cpu(const TextureInputs& in, const at::Tensor& grad_out, at::Tensor& grad_levels,
                                 at::Tensor& grad_uv);

}  // namespace diffrender
