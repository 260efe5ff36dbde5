// Torch-facing Phong shading op (one model for both renderers). Points are [B,N,...].
#pragma once

#include <torch/extension.h>

#include <vector>

namespace diffrender {

// Inputs: positions, normals, diffuse [B,N,3]; specular [B,N,3] and shininess [B,N] (both or
// neither); eye [B,3]; light_positions, light_intensities [B,L,3]; ambient [B,3].
struct PhongInputs {
  at::Tensor positions, normals, diffuse;
  c10::optional<at::Tensor> specular, shininess;
  at::Tensor eye, light_positions, light_intensities, ambient;
};

at::Tensor phong_shade_forward(const at::Tensor& positions, const at::Tensor& normals,
                               const at::Tensor& diffuse, const c10::optional<at::Tensor>& specular,
                               const c10::optional<at::Tensor>& shininess, const at::Tensor& eye,
                               const at::Tensor& light_positions, const at::Tensor& light_intensities,
                               const at::Tensor& ambient);

// Returns gradients {positions, normals, diffuse, specular, shininess, eye, light_positions,
// light_intensities, ambient}; specular and shininess are undefined without a specular term.
std::vector<at::Tensor> phong_shade_backward(const at::Tensor& grad_out, const at::Tensor& positions,
                                             const at::Tensor& normals, const at::Tensor& diffuse,
                                             const c10::optional<at::Tensor>& specular,
                                             const c10::optional<at::Tensor>& shininess,
                                             const at::Tensor& eye, const at::Tensor& light_positions,
                                             const at::Tensor& light_intensities, const at::Tensor& ambient);

void phong_shade_forward_cpu(const PhongInputs& in, at::Tensor& out);
void phong_shade_backward_cpu(const PhongInputs& in, const at::Tensor& grad_out,
                              std::vector<at::Tensor>& grads);

}  // namespace diffrender
