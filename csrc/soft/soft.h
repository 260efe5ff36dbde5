// Torch-facing SoftRas soft rasterizer ops (Liu et al. 2019). Shapes: screen_vertices [B,V,3] =
// (x/w, y/w, 1/w), triangles [F,3] int64, attributes [B,V,C] (C may be 0), background [C].
#pragma once

#include <torch/extension.h>

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

// Device kernels behind the ops, inputs already validated and contiguous.
void soft_rasterize_forward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                const at::Tensor& triangles, const at::Tensor& attributes,
                                const at::Tensor& background, at::Tensor& image, at::Tensor& aux,
                                at::Tensor& hard_ids);
// grad_vertices: [B,V,3+C] gradients (x/w, y/w, 1/w, attributes), every entry written;
// grad_background: [C].
void soft_rasterize_backward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                 const at::Tensor& triangles, const at::Tensor& attributes,
                                 const at::Tensor& background, const at::Tensor& image,
                                 const at::Tensor& aux, const at::Tensor& hard_ids,
                                 const at::Tensor& grad_image, at::Tensor& grad_vertices,
                                 at::Tensor& grad_background);

}  // namespace diffrender
