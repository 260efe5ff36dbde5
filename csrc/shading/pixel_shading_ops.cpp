// Validation and device dispatch for deferred Phong shading of rasterized pixels.
#include "common/checks.h"
#include "common/device.h"
#include "shading/pixel_shading.h"
#include "shading/shading.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#ifdef WITH_CUDA
#include "shading/shading_cuda.h"
#endif

namespace diffrender {
namespace {

PixelShadingInputs validated(const at::Tensor& vertex_attributes, const c10::optional<at::Tensor>& pixel_diffuse,
                             const at::Tensor& triangles, const at::Tensor& triangle_ids,
                             const at::Tensor& barycentrics, const at::Tensor& eye,
                             const at::Tensor& light_positions, const at::Tensor& light_intensities,
                             const at::Tensor& ambient, bool with_specular) {
  check_float_tensor(vertex_attributes, "vertex_attributes", 3);
  const int64_t batch = vertex_attributes.size(0);
  const int64_t expected_channels = 6 + (pixel_diffuse ? 0 : 3) + (with_specular ? 4 : 0);
  TORCH_CHECK_VALUE(vertex_attributes.size(2) == expected_channels, "vertex_attributes must pack ",
                    expected_channels, " channels (position, normal", pixel_diffuse ? "" : ", diffuse",
                    with_specular ? ", specular, shininess" : "", "), got ", vertex_attributes.size(2));
  check_triangles(triangles, vertex_attributes.size(1));
  TORCH_CHECK_VALUE(triangles.size(0) > 0, "shade_pixels needs at least one triangle");
  TORCH_CHECK_VALUE(triangle_ids.dim() == 3 && triangle_ids.size(0) == batch &&
                        triangle_ids.scalar_type() == at::kLong,
                    "triangle_ids must be int64 [B,H,W] with the batch of vertex_attributes, got ",
                    triangle_ids.sizes());
  // The CPU kernels check each covered pixel's id where they first read it (no extra pass).
  if (!triangle_ids.device().is_cpu()) check_index_range(triangle_ids, 0, triangles.size(0), "triangle_ids");
  const std::vector<int64_t> image{batch, triangle_ids.size(1), triangle_ids.size(2), 3};
  TORCH_CHECK_VALUE(barycentrics.sizes() == image, "barycentrics must be [B,H,W,3] matching triangle_ids, got ",
                    barycentrics.sizes());
  check_same_device_dtype(vertex_attributes, barycentrics, "vertex_attributes", "barycentrics");
  if (pixel_diffuse) {
    TORCH_CHECK_VALUE(pixel_diffuse->sizes() == image, "pixel_diffuse must be [B,H,W,3], got ",
                      pixel_diffuse->sizes());
    check_same_device_dtype(vertex_attributes, *pixel_diffuse, "vertex_attributes", "pixel_diffuse");
  }
  check_lighting(vertex_attributes, "vertex_attributes", eye, light_positions, light_intensities, ambient);
  TORCH_CHECK_VALUE(triangles.device() == vertex_attributes.device() &&
                        triangle_ids.device() == vertex_attributes.device(),
                    "shade_pixels: all tensors must be on one device");
  return {vertex_attributes.contiguous(),
          pixel_diffuse ? c10::optional<at::Tensor>(pixel_diffuse->contiguous()) : c10::nullopt,
          triangles.contiguous(),
          triangle_ids.contiguous(),
          barycentrics.contiguous(),
          eye.contiguous(),
          light_positions.contiguous(),
          light_intensities.contiguous(),
          ambient.contiguous(),
          with_specular};
}

}  // namespace

at::Tensor shade_pixels_forward(const at::Tensor& vertex_attributes, const c10::optional<at::Tensor>& pixel_diffuse,
                                const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                const at::Tensor& barycentrics, const at::Tensor& eye,
                                const at::Tensor& light_positions, const at::Tensor& light_intensities,
                                const at::Tensor& ambient, bool with_specular) {
  const PixelShadingInputs in = validated(vertex_attributes, pixel_diffuse, triangles, triangle_ids, barycentrics,
                                          eye, light_positions, light_intensities, ambient, with_specular);
  const auto& ids = in.triangle_ids;
  auto rgba = at::empty({ids.size(0), ids.size(1), ids.size(2), 4}, in.vertex_attributes.options());
  if (!on_cuda(in.vertex_attributes, "shade_pixels")) {
    shade_pixels_forward_cpu(in, rgba);
    return rgba;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(rgba.device());
  AT_DISPATCH_FLOATING_TYPES(rgba.scalar_type(), "shade_pixels_forward_cuda", [&] {
    check_cuda(shade_pixels_forward_cuda<scalar_t>(pixel_shading_arrays<scalar_t>(in), rgba.data_ptr<scalar_t>(),
                                                   current_stream()),
               "shade_pixels");
  });
#endif
  return rgba;
}

std::vector<at::Tensor> shade_pixels_backward(const at::Tensor& grad_rgba, const at::Tensor& vertex_attributes,
                                              const c10::optional<at::Tensor>& pixel_diffuse,
                                              const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                              const at::Tensor& barycentrics, const at::Tensor& eye,
                                              const at::Tensor& light_positions, const at::Tensor& light_intensities,
                                              const at::Tensor& ambient, bool with_specular) {
  // Before validated(), which copies its inputs.
  if (on_cuda(vertex_attributes, "shade_pixels"))
    check_cuda_scatter_rows(3 * triangle_ids.numel(), "shade_pixels", "pixel corners (3·B·H·W)");
  const PixelShadingInputs in = validated(vertex_attributes, pixel_diffuse, triangles, triangle_ids, barycentrics,
                                          eye, light_positions, light_intensities, ambient, with_specular);
  const auto& ids = in.triangle_ids;
  TORCH_CHECK_VALUE(grad_rgba.sizes() == (std::vector<int64_t>{ids.size(0), ids.size(1), ids.size(2), 4}),
                    "grad_rgba must be [B,H,W,4], got ", grad_rgba.sizes());
  check_same_device_dtype(in.vertex_attributes, grad_rgba, "vertex_attributes", "grad_rgba");
  const auto n = grad_rgba.sizes();
  const auto s = grad_rgba.strides();
  const bool pixels_one_stride_apart =
      (n[0] == 1 || s[0] == n[1] * n[2] * s[2]) && (n[1] == 1 || s[1] == n[2] * s[2]);
  const auto grad = pixels_one_stride_apart ? grad_rgba : grad_rgba.contiguous();
  std::vector<at::Tensor> grads = {at::zeros_like(in.vertex_attributes),
                                   in.pixel_diffuse ? at::empty_like(*in.pixel_diffuse) : at::Tensor(),
                                   at::empty_like(in.barycentrics),
                                   at::zeros_like(in.eye),
                                   at::zeros_like(in.light_positions),
                                   at::zeros_like(in.light_intensities),
                                   at::zeros_like(in.ambient)};
  if (!on_cuda(in.vertex_attributes, "shade_pixels")) {
    shade_pixels_backward_cpu(in, grad, grads);
    return grads;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(grad.device());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "shade_pixels_backward_cuda", [&] {
    scalar_t* pointers[7];
    for (int k = 0; k < 7; ++k) pointers[k] = grads[k].defined() ? grads[k].data_ptr<scalar_t>() : nullptr;
    check_cuda(shade_pixels_backward_cuda<scalar_t>(pixel_shading_arrays<scalar_t>(in), pixel_gradient<scalar_t>(grad),
                                                    pointers, current_stream()),
               "shade_pixels backward");
  });
#endif
  return grads;
}

}  // namespace diffrender
