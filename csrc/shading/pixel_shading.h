// Torch-facing deferred Phong shading of rasterized pixels (see pixel_shading_math.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "shading/pixel_shading_math.h"

namespace diffrender {

// vertex_attributes [B,V,A] packed as in PixelShadingArrays; pixel_diffuse [B,H,W,3] or none;
// triangles [F,3] int64; triangle_ids [B,H,W] int64; barycentrics [B,H,W,3]; eye [B,3];
// light_positions, light_intensities [B,L,3]; ambient [B,3].
struct PixelShadingInputs {
  at::Tensor vertex_attributes;
  c10::optional<at::Tensor> pixel_diffuse;
  at::Tensor triangles, triangle_ids, barycentrics, eye, light_positions, light_intensities, ambient;
  bool with_specular;
};

template <typename T>
PixelShadingArrays<T> pixel_shading_arrays(const PixelShadingInputs& in) {
  const auto& ids = in.triangle_ids;
  return {in.vertex_attributes.data_ptr<T>(),
          in.pixel_diffuse ? in.pixel_diffuse->data_ptr<T>() : nullptr,
          in.triangles.data_ptr<int64_t>(),
          ids.data_ptr<int64_t>(),
          in.barycentrics.data_ptr<T>(),
          in.eye.data_ptr<T>(),
          in.light_positions.data_ptr<T>(),
          in.light_intensities.data_ptr<T>(),
          in.ambient.data_ptr<T>(),
          ids.size(0),
          in.vertex_attributes.size(1),
          ids.size(1) * ids.size(2),
          in.light_positions.size(1),
          static_cast<int>(in.vertex_attributes.size(2)),
          in.with_specular};
}

// A [B,H,W,4] per-pixel gradient whose pixels sit one stride apart: contiguous, or broadcast
// (see PixelGradient); the caller makes any other layout contiguous first.
template <typename T>
PixelGradient<T> pixel_gradient(const at::Tensor& grad) {
  return {grad.data_ptr<T>(), grad.stride(2), grad.stride(3)};
}

// RGBA [B,H,W,4]: shaded colour and alpha 1 on covered pixels, 0 elsewhere.
at::Tensor shade_pixels_forward(const at::Tensor& vertex_attributes, const c10::optional<at::Tensor>& pixel_diffuse,
                                const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                const at::Tensor& barycentrics, const at::Tensor& eye,
                                const at::Tensor& light_positions, const at::Tensor& light_intensities,
                                const at::Tensor& ambient, bool with_specular);

// Gradients {vertex_attributes, pixel_diffuse (undefined without it), barycentrics, eye,
// light_positions, light_intensities, ambient} from d(loss)/d(rgba); alpha has no gradient.
std::vector<at::Tensor> shade_pixels_backward(const at::Tensor& grad_rgba, const at::Tensor& vertex_attributes,
                                              const c10::optional<at::Tensor>& pixel_diffuse,
                                              const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                              const at::Tensor& barycentrics, const at::Tensor& eye,
                                              const at::Tensor& light_positions, const at::Tensor& light_intensities,
                                              const at::Tensor& ambient, bool with_specular);

void shade_pixels_forward_cpu(const PixelShadingInputs& in, at::Tensor& rgba);
// grad_rgba: laid out for pixel_gradient.
void shade_pixels_backward_cpu(const PixelShadingInputs& in, const at::Tensor& grad_rgba,
                               std::vector<at::Tensor>& grads);

}  // namespace diffrender
