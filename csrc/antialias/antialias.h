// Torch-facing analytic antialiasing ops (see antialias_math.h for the method). Shapes:
// color [B,H,W,C], triangle_ids [B,H,W] int64, clip_vertices [B,V,4], triangles and neighbors
// [F,3] int64 (neighbors[f][k]: the face across edge (corner k, corner k+1) of face f, or -1).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace diffrender {

// Returns {antialiased color [B,H,W,C], pair_alpha [B,H,W,2], pair_code [B,H,W,2] int32}; the
// last two are what the backward pass needs. barycentrics [B,H,W,3] and z_buffer [B,H,W] are
// the rasterizer's; without them coverage and depth are replayed from the ids.
std::vector<at::Tensor> antialias_forward(const at::Tensor& color, const at::Tensor& triangle_ids,
                                          const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                          const at::Tensor& neighbors,
                                          const c10::optional<at::Tensor>& barycentrics,
                                          const c10::optional<at::Tensor>& z_buffer);

// Returns {d(loss)/d(color) [B,H,W,C], d(loss)/d(clip_vertices) [B,V,4]} (the z column is zero).
std::vector<at::Tensor> antialias_backward(const at::Tensor& grad_out, const at::Tensor& color,
                                           const at::Tensor& triangle_ids, const at::Tensor& clip_vertices,
                                           const at::Tensor& triangles, const at::Tensor& neighbors,
                                           const at::Tensor& pair_alpha, const at::Tensor& pair_code);

// CPU kernels behind the ops, inputs validated and contiguous. bary/zbuf may be undefined.
void antialias_forward_cpu(const at::Tensor& color, const at::Tensor& ids, const at::Tensor& clip,
                           const at::Tensor& triangles, const at::Tensor& neighbors, const at::Tensor& bary,
                           const at::Tensor& zbuf, at::Tensor& out, at::Tensor& pair_alpha, at::Tensor& pair_code);
// grad_clip must be zeroed; vertex gradients are scattered into it deterministically.
void antialias_backward_cpu(const at::Tensor& grad_out, const at::Tensor& color, const at::Tensor& ids,
                            const at::Tensor& clip, const at::Tensor& triangles, const at::Tensor& neighbors,
                            const at::Tensor& pair_alpha, const at::Tensor& pair_code, at::Tensor& grad_color,
                            at::Tensor& grad_clip);

}  // namespace diffrender
