// Validation and device dispatch for the analytic antialiasing.
#include "antialias/antialias.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include "common/checks.h"
#include "common/device.h"

#ifdef WITH_CUDA
#include "antialias/antialias_cuda.h"
#endif

namespace diffrender {
namespace {

// Shapes, dtypes, devices and index ranges shared by forward and backward.
void check_inputs(const at::Tensor& color, const at::Tensor& triangle_ids, const at::Tensor& clip_vertices,
                  const at::Tensor& triangles, const at::Tensor& neighbors) {
  check_float_tensor(color, "color", 4);
  check_float_tensor(clip_vertices, "clip_vertices", 3);
  TORCH_CHECK_VALUE(clip_vertices.size(2) == 4, "clip_vertices must have shape [B,V,4], got ", clip_vertices.sizes());
  check_same_device_dtype(clip_vertices, color, "clip_vertices", "color");
  const int64_t batch = color.size(0), height = color.size(1), width = color.size(2);
  TORCH_CHECK_VALUE(clip_vertices.size(0) == batch, "clip_vertices must have the batch of color (", batch,
                    "), got ", clip_vertices.sizes());
  TORCH_CHECK_VALUE(height > 0 && width > 0, "color must have a positive image size, got ", color.sizes());
  TORCH_CHECK_VALUE(height <= 32768 && width <= 32768, "image size ", width, "x", height,
                    " exceeds the 32768 pixel limit per side");
  TORCH_CHECK_TYPE(triangle_ids.scalar_type() == at::kLong, "triangle_ids must be int64, got ",
                   triangle_ids.scalar_type());
  TORCH_CHECK_VALUE(triangle_ids.sizes() == (std::vector<int64_t>{batch, height, width}),
                    "triangle_ids must be [B,H,W] matching color ", color.sizes(), ", got ", triangle_ids.sizes());
  check_triangles(triangles, clip_vertices.size(1));
  TORCH_CHECK_VALUE(triangles.size(0) < (int64_t(1) << 28), "antialias supports at most 2^28 - 1 triangles");
  TORCH_CHECK_TYPE(neighbors.scalar_type() == at::kLong, "neighbors must be int64, got ", neighbors.scalar_type());
  TORCH_CHECK_VALUE(neighbors.sizes() == triangles.sizes(), "neighbors must be [F,3] like triangles, got ",
                    neighbors.sizes());
  for (const auto& [t, name] : {std::pair{triangle_ids, "triangle_ids"}, std::pair{triangles, "triangles"},
                                std::pair{neighbors, "neighbors"}})
    TORCH_CHECK_VALUE(t.device() == color.device(), name, " must be on the device of color (", color.device(),
                      "), got ", t.device());
  if (triangles.size(0) > 0 && triangle_ids.numel() > 0) {
    check_index_range(triangle_ids, 0, triangles.size(0), "triangle_ids");
    check_index_range(neighbors, -1, triangles.size(0), "neighbors");
  }
}

}  // namespace

std::vector<at::Tensor> antialias_forward(const at::Tensor& color, const at::Tensor& triangle_ids,
                                          const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                          const at::Tensor& neighbors,
                                          const c10::optional<at::Tensor>& barycentrics,
                                          const c10::optional<at::Tensor>& z_buffer) {
  check_inputs(color, triangle_ids, clip_vertices, triangles, neighbors);
  const int64_t batch = color.size(0), height = color.size(1), width = color.size(2);
  TORCH_CHECK_VALUE(barycentrics.has_value() == z_buffer.has_value(),
                    "barycentrics and z_buffer must be given together");
  at::Tensor bary, zbuf;
  if (barycentrics) {
    TORCH_CHECK_VALUE(barycentrics->sizes() == (std::vector<int64_t>{batch, height, width, 3}),
                      "barycentrics must be [B,H,W,3] matching color, got ", barycentrics->sizes());
    TORCH_CHECK_VALUE(z_buffer->sizes() == (std::vector<int64_t>{batch, height, width}),
                      "z_buffer must be [B,H,W] matching color, got ", z_buffer->sizes());
    check_same_device_dtype(color, *barycentrics, "color", "barycentrics");
    check_same_device_dtype(color, *z_buffer, "color", "z_buffer");
    bary = barycentrics->contiguous();
    zbuf = z_buffer->contiguous();
  }
  const bool cuda = on_cuda(color, "antialias");
  const auto col = color.contiguous(), ids = triangle_ids.contiguous(), clip = clip_vertices.contiguous();
  const auto tris = triangles.contiguous(), nbr = neighbors.contiguous();
  auto out = at::empty_like(col);
  // The analysis writes every pair slot.
  auto pair_alpha = at::empty({batch, height, width, 2}, col.options());
  auto pair_code = at::empty({batch, height, width, 2}, col.options().dtype(at::kInt));
  if (tris.size(0) == 0) {  // nothing can be covered
    out.copy_(col);
    pair_alpha.zero_();
    pair_code.zero_();
    return {out, pair_alpha, pair_code};
  }
  if (!cuda) {
    antialias_forward_cpu(col, ids, clip, tris, nbr, bary, zbuf, out, pair_alpha, pair_code);
    return {out, pair_alpha, pair_code};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(col.device());
  AT_DISPATCH_FLOATING_TYPES(col.scalar_type(), "antialias_forward_cuda", [&] {
    const AntialiasBuffers<scalar_t> in{col.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(), clip.data_ptr<scalar_t>(),
                                        tris.data_ptr<int64_t>(), nbr.data_ptr<int64_t>(),
                                        bary.defined() ? bary.data_ptr<scalar_t>() : nullptr,
                                        zbuf.defined() ? zbuf.data_ptr<scalar_t>() : nullptr, batch, clip.size(1),
                                        col.size(3), static_cast<int>(width), static_cast<int>(height)};
    check_cuda(antialias_forward_cuda<scalar_t>(in, out.data_ptr<scalar_t>(), pair_alpha.data_ptr<scalar_t>(),
                                                pair_code.data_ptr<int32_t>(), current_stream()),
               "antialias");
  });
#endif
  return {out, pair_alpha, pair_code};
}

std::vector<at::Tensor> antialias_backward(const at::Tensor& grad_out, const at::Tensor& color,
                                           const at::Tensor& triangle_ids, const at::Tensor& clip_vertices,
                                           const at::Tensor& triangles, const at::Tensor& neighbors,
                                           const at::Tensor& pair_alpha, const at::Tensor& pair_code) {
  check_inputs(color, triangle_ids, clip_vertices, triangles, neighbors);
  const int64_t batch = color.size(0), height = color.size(1), width = color.size(2);
  TORCH_CHECK_VALUE(grad_out.sizes() == color.sizes(), "grad_out must have the shape of color, got ",
                    grad_out.sizes());
  check_same_device_dtype(color, grad_out, "color", "grad_out");
  const auto pairs = std::vector<int64_t>{batch, height, width, 2};
  TORCH_CHECK_VALUE(pair_alpha.sizes() == pairs && pair_code.sizes() == pairs,
                    "pair_alpha and pair_code must be [B,H,W,2] (from antialias_forward)");
  check_same_device_dtype(color, pair_alpha, "color", "pair_alpha");
  TORCH_CHECK_TYPE(pair_code.scalar_type() == at::kInt, "pair_code must be int32");
  TORCH_CHECK_VALUE(pair_code.device() == color.device(), "pair_code must be on the device of color");
  const bool cuda = on_cuda(color, "antialias");
  if (cuda) check_cuda_scatter_rows(4 * triangle_ids.numel(), "antialias", "edge-pair corners (4·B·H·W)");
  const auto grad = grad_out.contiguous(), col = color.contiguous(), ids = triangle_ids.contiguous();
  const auto clip = clip_vertices.contiguous(), tris = triangles.contiguous(), nbr = neighbors.contiguous();
  const auto alpha = pair_alpha.contiguous(), code = pair_code.contiguous();
  auto grad_color = at::empty_like(col);
  auto grad_clip = at::zeros_like(clip);
  if (tris.size(0) == 0) {
    grad_color.copy_(grad);
    return {grad_color, grad_clip};
  }
  if (!cuda) {
    antialias_backward_cpu(grad, col, ids, clip, tris, nbr, alpha, code, grad_color, grad_clip);
    return {grad_color, grad_clip};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(col.device());
  AT_DISPATCH_FLOATING_TYPES(col.scalar_type(), "antialias_backward_cuda", [&] {
    const AntialiasBuffers<scalar_t> in{col.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(), clip.data_ptr<scalar_t>(),
                                        tris.data_ptr<int64_t>(), nbr.data_ptr<int64_t>(), nullptr, nullptr, batch,
                                        clip.size(1), col.size(3), static_cast<int>(width), static_cast<int>(height)};
    check_cuda(antialias_backward_cuda<scalar_t>(in, alpha.data_ptr<scalar_t>(), code.data_ptr<int32_t>(),
                                                 grad.data_ptr<scalar_t>(), grad_color.data_ptr<scalar_t>(),
                                                 grad_clip.data_ptr<scalar_t>(), current_stream()),
               "antialias backward");
  });
#endif
  return {grad_color, grad_clip};
}

}  // namespace diffrender
