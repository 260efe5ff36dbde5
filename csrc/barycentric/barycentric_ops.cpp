// Validation and device dispatch for the barycentric rasterizer.
#include "barycentric/barycentric.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include "common/checks.h"
#include "common/device.h"

#ifdef WITH_CUDA
#include "barycentric/barycentric_cuda.h"
#endif

namespace diffrender {

std::vector<at::Tensor> rasterize_triangles_forward(const at::Tensor& clip_vertices,
                                                    const at::Tensor& triangles, int64_t width,
                                                    int64_t height) {
  check_float_tensor(clip_vertices, "clip_vertices", 3);
  TORCH_CHECK_VALUE(clip_vertices.size(2) == 4, "clip_vertices must have shape [B,V,4], got ",
                    clip_vertices.sizes());
  check_triangles(triangles, clip_vertices.size(1));
  check_image_size(width, height);
  TORCH_CHECK_VALUE(triangles.size(0) < (int64_t(1) << 31), "at most 2^31 - 1 triangles are supported");
  TORCH_CHECK_VALUE(clip_vertices.device() == triangles.device(),
                    "clip_vertices and triangles must be on the same device");
  const bool cuda = on_cuda(clip_vertices, "rasterize_triangles");
  const auto clip = clip_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const int64_t batch = clip.size(0);
  auto ids = at::empty({batch, height, width}, clip.options().dtype(at::kLong));
  auto bary = at::empty({batch, height, width, 3}, clip.options());
  auto zbuf = at::empty({batch, height, width}, clip.options());
  if (!cuda) {
    rasterize_triangles_forward_cpu(clip, tris, ids, bary, zbuf);
    return {ids, bary, zbuf};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(clip.device());
  AT_DISPATCH_FLOATING_TYPES(clip.scalar_type(), "rasterize_triangles_forward_cuda", [&] {
    check_cuda(rasterize_forward_cuda<scalar_t>(clip.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), batch,
                                                clip.size(1), tris.size(0), static_cast<int>(width),
                                                static_cast<int>(height), ids.data_ptr<int64_t>(),
                                                bary.data_ptr<scalar_t>(), zbuf.data_ptr<scalar_t>(),
                                                current_stream()),
               "rasterize_triangles");
  });
#endif
  return {ids, bary, zbuf};
}

at::Tensor rasterize_triangles_backward(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                        const at::Tensor& triangle_ids, const at::Tensor& barycentrics,
                                        const at::Tensor& grad_barycentrics) {
  check_float_tensor(clip_vertices, "clip_vertices", 3);
  check_triangles(triangles, clip_vertices.size(1));
  const int64_t batch = clip_vertices.size(0);
  TORCH_CHECK_VALUE(triangle_ids.dim() == 3 && triangle_ids.size(0) == batch &&
                        triangle_ids.scalar_type() == at::kLong,
                    "triangle_ids must be int64 [B,H,W]");
  const auto expected = std::vector<int64_t>{batch, triangle_ids.size(1), triangle_ids.size(2), 3};
  TORCH_CHECK_VALUE(barycentrics.sizes() == expected && grad_barycentrics.sizes() == expected,
                    "barycentrics and their gradient must have shape [B,H,W,3]");
  check_same_device_dtype(clip_vertices, grad_barycentrics, "clip_vertices", "grad_barycentrics");
  check_same_device_dtype(clip_vertices, barycentrics, "clip_vertices", "barycentrics");
  const bool cuda = on_cuda(clip_vertices, "rasterize_triangles");
  if (cuda) check_cuda_scatter_rows(3 * triangle_ids.numel(), "rasterize_triangles", "pixel corners (3·B·H·W)");
  const auto ids = triangle_ids.contiguous();
  // The CPU backward checks the ids of covered pixels as it reads them.
  if (cuda && triangles.size(0) > 0) check_index_range(ids, 0, triangles.size(0), "triangle_ids");
  const auto clip = clip_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const auto bary = barycentrics.contiguous(), grad_bary = grad_barycentrics.contiguous();
  auto grad_vertices = at::zeros_like(clip);
  if (!cuda) {
    rasterize_triangles_backward_cpu(clip, tris, ids, bary, grad_bary, grad_vertices);
    return grad_vertices;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(clip.device());
  AT_DISPATCH_FLOATING_TYPES(clip.scalar_type(), "rasterize_triangles_backward_cuda", [&] {
    check_cuda(rasterize_backward_cuda<scalar_t>(clip.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), batch,
                                                 clip.size(1), tris.size(0), static_cast<int>(ids.size(2)),
                                                 static_cast<int>(ids.size(1)), ids.data_ptr<int64_t>(),
                                                 bary.data_ptr<scalar_t>(), grad_bary.data_ptr<scalar_t>(),
                                                 grad_vertices.data_ptr<scalar_t>(), current_stream()),
               "rasterize_triangles backward");
  });
#endif
  return grad_vertices;
}

namespace {

// Shapes of the rasterizer outputs [B,H,W] and [B,H,W,3] against attributes [B,V,C]; ids must
// index triangles.
void check_raster_inputs(const at::Tensor& attributes, const at::Tensor& triangles,
                         const at::Tensor& triangle_ids, const at::Tensor& barycentrics) {
  check_float_tensor(attributes, "attributes", 3);
  check_triangles(triangles, attributes.size(1));
  const int64_t batch = attributes.size(0);
  TORCH_CHECK_VALUE(triangle_ids.dim() == 3 && triangle_ids.size(0) == batch &&
                        triangle_ids.scalar_type() == at::kLong,
                    "triangle_ids must be int64 [B,H,W] with the batch of attributes");
  TORCH_CHECK_VALUE(barycentrics.sizes() == (std::vector<int64_t>{batch, triangle_ids.size(1),
                                                                  triangle_ids.size(2), 3}),
                    "barycentrics must be [B,H,W,3] matching triangle_ids");
  check_same_device_dtype(attributes, barycentrics, "attributes", "barycentrics");
  TORCH_CHECK_VALUE(triangle_ids.device() == attributes.device() && triangles.device() == attributes.device(),
                    "interpolate: all tensors must be on one device");
  TORCH_CHECK_VALUE(triangles.size(0) > 0, "interpolate needs at least one triangle");
  check_index_range(triangle_ids, 0, triangles.size(0), "triangle_ids");
}

}  // namespace

at::Tensor interpolate_forward(const at::Tensor& attributes, const at::Tensor& triangles,
                               const at::Tensor& triangle_ids, const at::Tensor& barycentrics) {
  check_raster_inputs(attributes, triangles, triangle_ids, barycentrics);
  const bool cuda = on_cuda(attributes, "interpolate");
  const auto attr = attributes.contiguous(), tris = triangles.contiguous();
  const auto ids = triangle_ids.contiguous(), bary = barycentrics.contiguous();
  auto out = at::empty({ids.size(0), ids.size(1), ids.size(2), attr.size(2)}, attr.options());
  if (!cuda) {
    interpolate_forward_cpu(attr, tris, ids, bary, out);
    return out;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(attr.device());
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_forward_cuda", [&] {
    check_cuda(interpolate_forward_cuda<scalar_t>(attr.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), attr.size(0),
                                                  attr.size(1), attr.size(2), ids.size(1) * ids.size(2),
                                                  ids.data_ptr<int64_t>(), bary.data_ptr<scalar_t>(),
                                                  out.data_ptr<scalar_t>(), current_stream()),
               "interpolate");
  });
#endif
  return out;
}

std::vector<at::Tensor> interpolate_backward(const at::Tensor& grad_out, const at::Tensor& attributes,
                                             const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                             const at::Tensor& barycentrics) {
  check_raster_inputs(attributes, triangles, triangle_ids, barycentrics);
  const auto attr = attributes.contiguous();
  const int64_t batch = attr.size(0), channels = attr.size(2);
  TORCH_CHECK_VALUE(grad_out.sizes() == (std::vector<int64_t>{batch, triangle_ids.size(1), triangle_ids.size(2),
                                                              channels}),
                    "grad_out must be [B,H,W,C]");
  check_same_device_dtype(attributes, grad_out, "attributes", "grad_out");
  const bool cuda = on_cuda(attributes, "interpolate");
  if (cuda) check_cuda_scatter_rows(3 * triangle_ids.numel(), "interpolate", "pixel corners (3·B·H·W)");
  const auto tris = triangles.contiguous(), ids = triangle_ids.contiguous(), bary = barycentrics.contiguous();
  const auto grad = grad_out.contiguous();
  auto grad_bary = at::empty_like(bary);
  auto grad_attributes = at::zeros_like(attr);
  if (!cuda) {
    interpolate_backward_cpu(grad, attr, tris, ids, bary, grad_attributes, grad_bary);
    return {grad_attributes, grad_bary};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(attr.device());
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_backward_cuda", [&] {
    check_cuda(interpolate_backward_cuda<scalar_t>(grad.data_ptr<scalar_t>(), attr.data_ptr<scalar_t>(),
                                                   tris.data_ptr<int64_t>(), batch, attr.size(1), channels,
                                                   ids.size(1) * ids.size(2), ids.data_ptr<int64_t>(),
                                                   bary.data_ptr<scalar_t>(), grad_attributes.data_ptr<scalar_t>(),
                                                   grad_bary.data_ptr<scalar_t>(), current_stream()),
               "interpolate backward");
  });
#endif
  return {grad_attributes, grad_bary};
}

}  // namespace diffrender
