// Torch-facing Phong shading op (one model for both renderers). Points are [B,N,...].
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "shading/phong_math.h"

namespace diffrender {

// Inputs: positions, normals, diffuse [B,N,3]; specular [B,N,3] and shininess [B,N] (both or
// neither); eye [B,3]; light_positions, light_intensities [B,L,3]; ambient [B,3].
struct PhongInputs {
  at::Tensor positions, normals, diffuse;
  c10::optional<at::Tensor> specular, shininess;
  at::Tensor eye, light_positions, light_intensities, ambient;
};

// Checks the per-batch lighting inputs of a shading call against its [B,...] reference tensor:
// eye, ambient [B,3]; light_positions, light_intensities [B,L,3]; same device and dtype.
void check_lighting(const at::Tensor& reference, const char* reference_name, const at::Tensor& eye,
                    const at::Tensor& light_positions, const at::Tensor& light_intensities,
                    const at::Tensor& ambient);

// Raw views of validated, contiguous inputs for the kernels.
template <typename T>
PhongArrays<T> phong_arrays(const PhongInputs& in) {
  return {in.positions.data_ptr<T>(), in.normals.data_ptr<T>(), in.diffuse.data_ptr<T>(),
          in.specular ? in.specular->data_ptr<T>() : nullptr, in.shininess ? in.shininess->data_ptr<T>() : nullptr,
          in.eye.data_ptr<T>(), in.light_positions.data_ptr<T>(), in.light_intensities.data_ptr<T>(),
          in.ambient.data_ptr<T>(), in.positions.size(0), in.positions.size(1), in.light_positions.size(1)};
}

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
