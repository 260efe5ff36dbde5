// Torch-facing barycentric rasterizer ops. Shapes: clip_vertices [B,V,4], triangles [F,3] int64.
#pragma once

#include <ATen/core/Tensor.h>

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

// Per-pixel attributes Σ_k b_k·attributes[triangles[id][k]]: attributes [B,V,C] → [B,H,W,C].
at::Tensor interpolate_forward(const at::Tensor& attributes, const at::Tensor& triangles,
                               const at::Tensor& triangle_ids, const at::Tensor& barycentrics);

// Returns {d(loss)/d(attributes) [B,V,C], d(loss)/d(barycentrics) [B,H,W,3]}.
std::vector<at::Tensor> interpolate_backward(const at::Tensor& grad_out, const at::Tensor& attributes,
                                             const at::Tensor& triangles, const at::Tensor& triangle_ids,
                                             const at::Tensor& barycentrics);

// Device kernels behind the ops, inputs already validated and contiguous; vertex gradients come
// zeroed.
void rasterize_triangles_forward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                     at::Tensor& triangle_ids, at::Tensor& barycentrics,
                                     at::Tensor& z_buffer);
void rasterize_triangles_backward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                      const at::Tensor& triangle_ids, const at::Tensor& barycentrics,
                                      const at::Tensor& grad_barycentrics, at::Tensor& grad_vertices);

void interpolate_forward_cpu(const at::Tensor& attributes, const at::Tensor& triangles,
                             const at::Tensor& triangle_ids, const at::Tensor& barycentrics, at::Tensor& out);
// grad_attributes [B,V,C] comes zeroed; grad_bary [B,H,W,3] is fully written.
void interpolate_backward_cpu(const at::Tensor& grad_out, const at::Tensor& attributes,
                              const at::Tensor& triangles, const at::Tensor& triangle_ids,
                              const at::Tensor& barycentrics, at::Tensor& grad_attributes, at::Tensor& grad_bary);

}  // namespace diffrender
