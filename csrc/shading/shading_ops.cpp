// Validation and device dispatch for Phong shading.
#include "shading/shading.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include "common/checks.h"
#include "common/device.h"

#ifdef WITH_CUDA
#include "shading/shading_cuda.h"
#endif

namespace diffrender {
namespace {

PhongInputs validated(const at::Tensor& positions, const at::Tensor& normals, const at::Tensor& diffuse,
                      const c10::optional<at::Tensor>& specular, const c10::optional<at::Tensor>& shininess,
                      const at::Tensor& eye, const at::Tensor& light_positions,
                      const at::Tensor& light_intensities, const at::Tensor& ambient) {
  check_float_tensor(positions, "positions", 3);
  const int64_t batch = positions.size(0), points = positions.size(1);
  TORCH_CHECK_VALUE(positions.size(2) == 3, "positions must be [B,N,3], got ", positions.sizes());
  const auto per_point = std::vector<int64_t>{batch, points, 3};
  for (const auto& [t, name] : {std::pair{normals, "normals"}, std::pair{diffuse, "diffuse"}}) {
    TORCH_CHECK_VALUE(t.sizes() == per_point, name, " must be [B,N,3] like positions, got ", t.sizes());
    check_same_device_dtype(positions, t, "positions", name);
  }
  TORCH_CHECK_VALUE(specular.has_value() == shininess.has_value(),
                    "specular and shininess must be given together");
  if (specular) {
    TORCH_CHECK_VALUE(specular->sizes() == per_point, "specular must be [B,N,3], got ", specular->sizes());
    TORCH_CHECK_VALUE(shininess->sizes() == (std::vector<int64_t>{batch, points}),
                      "shininess must be [B,N], got ", shininess->sizes());
    check_same_device_dtype(positions, *specular, "positions", "specular");
    check_same_device_dtype(positions, *shininess, "positions", "shininess");
  }
  check_lighting(positions, "positions", eye, light_positions, light_intensities, ambient);
  auto contiguous = [](const c10::optional<at::Tensor>& t) {
    return t ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
  };
  return {positions.contiguous(), normals.contiguous(), diffuse.contiguous(), contiguous(specular),
          contiguous(shininess), eye.contiguous(), light_positions.contiguous(),
          light_intensities.contiguous(), ambient.contiguous()};
}


}  // namespace

void check_lighting(const at::Tensor& reference, const char* reference_name, const at::Tensor& eye,
                    const at::Tensor& light_positions, const at::Tensor& light_intensities,
                    const at::Tensor& ambient) {
  const int64_t batch = reference.size(0);
  TORCH_CHECK_VALUE(eye.sizes() == (std::vector<int64_t>{batch, 3}), "eye must be [B,3], got ", eye.sizes());
  TORCH_CHECK_VALUE(ambient.sizes() == (std::vector<int64_t>{batch, 3}), "ambient must be [B,3], got ",
                    ambient.sizes());
  TORCH_CHECK_VALUE(light_positions.dim() == 3 && light_positions.size(0) == batch && light_positions.size(2) == 3,
                    "light_positions must be [B,L,3], got ", light_positions.sizes());
  TORCH_CHECK_VALUE(light_intensities.sizes() == light_positions.sizes(),
                    "light_intensities must be [B,L,3] like light_positions, got ", light_intensities.sizes());
  for (const auto& [t, name] : {std::pair{eye, "eye"}, std::pair{ambient, "ambient"},
                                std::pair{light_positions, "light_positions"},
                                std::pair{light_intensities, "light_intensities"}})
    check_same_device_dtype(reference, t, reference_name, name);
}

at::Tensor phong_shade_forward(const at::Tensor& positions, const at::Tensor& normals,
                               const at::Tensor& diffuse, const c10::optional<at::Tensor>& specular,
                               const c10::optional<at::Tensor>& shininess, const at::Tensor& eye,
                               const at::Tensor& light_positions, const at::Tensor& light_intensities,
                               const at::Tensor& ambient) {
  const PhongInputs in = validated(positions, normals, diffuse, specular, shininess, eye, light_positions,
                                   light_intensities, ambient);
  auto out = at::empty_like(in.positions);
  if (!on_cuda(in.positions, "phong_shade")) {
    phong_shade_forward_cpu(in, out);
    return out;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(out.device());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "phong_shade_forward_cuda", [&] {
    check_cuda(phong_forward_cuda<scalar_t>(phong_arrays<scalar_t>(in), out.data_ptr<scalar_t>(), current_stream()),
               "phong_shade");
  });
#endif
  return out;
}

std::vector<at::Tensor> phong_shade_backward(const at::Tensor& grad_out, const at::Tensor& positions,
                                             const at::Tensor& normals, const at::Tensor& diffuse,
                                             const c10::optional<at::Tensor>& specular,
                                             const c10::optional<at::Tensor>& shininess,
                                             const at::Tensor& eye, const at::Tensor& light_positions,
                                             const at::Tensor& light_intensities, const at::Tensor& ambient) {
  const PhongInputs in = validated(positions, normals, diffuse, specular, shininess, eye, light_positions,
                                   light_intensities, ambient);
  TORCH_CHECK_VALUE(grad_out.sizes() == in.positions.sizes(), "grad_out must be [B,N,3]");
  std::vector<at::Tensor> grads = {
      at::empty_like(in.positions), at::empty_like(in.positions), at::empty_like(in.positions),
      in.specular ? at::empty_like(*in.specular) : at::Tensor(),
      in.shininess ? at::empty_like(*in.shininess) : at::Tensor(),
      at::zeros_like(in.eye), at::zeros_like(in.light_positions), at::zeros_like(in.light_intensities),
      at::zeros_like(in.ambient)};
  const auto grad = grad_out.contiguous();
  if (!on_cuda(in.positions, "phong_shade")) {
    phong_shade_backward_cpu(in, grad, grads);
    return grads;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(grad.device());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "phong_shade_backward_cuda", [&] {
    scalar_t* pointers[9];
    for (int k = 0; k < 9; ++k) pointers[k] = grads[k].defined() ? grads[k].data_ptr<scalar_t>() : nullptr;
    check_cuda(phong_backward_cuda<scalar_t>(phong_arrays<scalar_t>(in), grad.data_ptr<scalar_t>(), pointers,
                                             current_stream()),
               "phong_shade backward");
  });
#endif
  return grads;
}

}  // namespace diffrender
