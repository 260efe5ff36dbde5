// Torch-facing SoftRas soft rasterizer ops (Liu et al. 2019). Shapes: screen_vertices [B,V,3] =
// (x/w, y/w, 1/w), triangles [F,3] int64, attributes [B,V,C] (C may be 0), background [C].
// The textured ops take a texture [Bt,Ht,Wt,C] (Bt = 1 or B) and attributes [B,V,2+2C] =
// (u, v, scale[C], offset[C]) instead (see soft_color_math.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "soft/soft_math.h"

namespace diffrender {

// Parses and checks the settings (ValueError with a clear message on bad values).
SoftParams make_soft_params(double sigma, double gamma, double dist_eps, double eps, double near,
                            double far, const std::string& aggr_rgb, const std::string& aggr_alpha,
                            const std::string& dist_func, bool cull_backfaces, int64_t width,
                            int64_t height);

// Returns {image [B,H,W,C+1] (colour channels, then alpha), aux [B,H,W,4] (per-pixel aggregates
// for the backward, see kSoftAuxChannels), hard_ids [B,H,W] int64 (the z-buffer winner, -1 where
// none; only for aggr_rgb 'hard' with C > 0, else an empty tensor)}.
std::vector<at::Tensor> soft_rasterize_forward(const at::Tensor& screen_vertices,
                                               const at::Tensor& triangles, const at::Tensor& attributes,
                                               const at::Tensor& background, double sigma, double gamma,
                                               double dist_eps, double eps, double near, double far,
                                               const std::string& aggr_rgb, const std::string& aggr_alpha,
                                               const std::string& dist_func, bool cull_backfaces,
                                               int64_t width, int64_t height);

// Returns {d(loss)/d(screen_vertices) [B,V,3], d(loss)/d(attributes) [B,V,C],
// d(loss)/d(background) [C]} given d(loss)/d(image) and the forward's outputs.
std::vector<at::Tensor> soft_rasterize_backward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& image, const at::Tensor& aux,
    const at::Tensor& hard_ids, const at::Tensor& grad_image, double sigma, double gamma,
    double dist_eps, double eps, double near, double far, const std::string& aggr_rgb,
    const std::string& aggr_alpha, const std::string& dist_func, bool cull_backfaces);

// soft_rasterize_forward with a texture: image [B,H,W,C+1] for a C-channel texture.
std::vector<at::Tensor> soft_rasterize_textured_forward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& texture, const std::string& texture_boundary, double sigma,
    double gamma, double dist_eps, double eps, double near, double far, const std::string& aggr_rgb,
    const std::string& aggr_alpha, const std::string& dist_func, bool cull_backfaces, int64_t width,
    int64_t height);

// soft_rasterize_backward with a texture; returns d(loss)/d(texture) [Bt,Ht,Wt,C] fourth.
std::vector<at::Tensor> soft_rasterize_textured_backward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& texture, const std::string& texture_boundary,
    const at::Tensor& image, const at::Tensor& aux, const at::Tensor& hard_ids, const at::Tensor& grad_image,
    double sigma, double gamma, double dist_eps, double eps, double near, double far,
    const std::string& aggr_rgb, const std::string& aggr_alpha, const std::string& dist_func,
    bool cull_backfaces);

// A validated texture: texels [Bt,Ht,Wt,C] contiguous, or undefined (untextured).
struct SoftTextureInput {
  at::Tensor texels;
  bool wrap = true;

  template <typename T>
  SoftTexture<T> view() const {
    SoftTexture<T> tex;
    if (!texels.defined()) return tex;
    tex.texels = texels.data_ptr<T>();
    tex.texture_batch = texels.size(0);
    tex.height = static_cast<int>(texels.size(1));
    tex.width = static_cast<int>(texels.size(2));
    tex.wrap = wrap;
    return tex;
  }
};

// The textured backward's texture-gradient records, one row (u, v, d(loss)/d(albedo)[C]) per
// (pixel, triangle) pair that samples the texture with a non-zero image gradient, in a fixed
// order: by batch item, triangle, then pixel in raster order. Batch item b's rows are
// [batch_offsets[b], batch_offsets[b+1]).
struct SoftTextureRecords {
  at::Tensor rows;  // [R, 2+C]
  std::vector<int64_t> batch_offsets;  // [B+1]
};

// Device kernels behind the ops, inputs already validated and contiguous; image has C+1 channels
// for C = texture channels (textured) or attribute channels.
void soft_rasterize_forward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                const at::Tensor& triangles, const at::Tensor& attributes,
                                const at::Tensor& background, const SoftTextureInput& texture,
                                at::Tensor& image, at::Tensor& aux, at::Tensor& hard_ids);
// grad_vertices: [B,V,3+A] gradients (x/w, y/w, 1/w, A attributes), every entry written;
// grad_background: [C]; records: filled when textured.
void soft_rasterize_backward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                 const at::Tensor& triangles, const at::Tensor& attributes,
                                 const SoftTextureInput& texture, const at::Tensor& image,
                                 const at::Tensor& aux, const at::Tensor& hard_ids,
                                 const at::Tensor& grad_image, at::Tensor& grad_vertices,
                                 at::Tensor& grad_background, SoftTextureRecords& records);

}  // namespace diffrender
