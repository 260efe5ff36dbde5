// Torch-facing barycentric rasterizer ops. Shapes: clip_vertices [B,V,4], triangles [F,3] int64.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace diffrender {

// Returns {triangle_ids [B,H,W] int64, barycentrics [B,H,W,3], z_buffer [B,H,W]}.
std::vector<at::Tensor> rasterize_triangles_forward(const at::Tensor& clip_vertices,
                                                    const at::Tensor& triangles, int64_t width,
                                                    int64_t height);

// Returns d(loss)/d(clip_vertices) [B,V,4]; the z column is always zero.
at::Tensor rasterize_triangles_backward(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                        const at::Tensor& triangle_ids, const at::Tensor& barycentrics,
                                        const at::Tensor& grad_barycentrics);

// Device kernels behind the ops, inputs already validated and contiguous.
void rasterize_triangles_forward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                     at::Tensor& triangle_ids, at::Tensor& barycentrics,
                                     at::Tensor& z_buffer);
void rasterize_triangles_backward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                      const at::Tensor& triangle_ids, const at::Tensor& barycentrics,
                                      const at::Tensor& grad_barycentrics, at::Tensor& grad_triangle);

}  // namespace diffrender
