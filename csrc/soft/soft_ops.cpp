// Validation and device dispatch for the soft rasterizer.
#include "soft/soft.h"

#include "common/checks.h"
#include "common/device.h"

#include <cmath>

#ifdef WITH_CUDA
#include "soft/soft_cuda.h"
#endif

namespace diffrender {
namespace {

int parse_choice(const std::string& value, const char* name,
                 std::initializer_list<std::pair<const char*, int>> choices) {
  std::string names;
  for (const auto& choice : choices) {
    if (value == choice.first) return choice.second;
    names += names.empty() ? "" : ", ";
    names += std::string("'") + choice.first + "'";
  }
  TORCH_CHECK_VALUE(false, name, " must be one of ", names, ", got '", value, "'");
  return 0;
}

void check_positive(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0, name, " must be a positive finite number, got ",
                    value);
}

// screen_vertices [B,V,3], triangles, attributes [B,V,C] and background [C]: shapes, dtypes,
// devices and every triangle index, before any kernel reads memory.
void check_inputs(const at::Tensor& screen, const at::Tensor& triangles, const at::Tensor& attributes,
                  const at::Tensor& background) {
  check_float_tensor(screen, "screen_vertices", 3);
  TORCH_CHECK_VALUE(screen.size(2) == 3, "screen_vertices must have shape [B,V,3] (x/w, y/w, 1/w), got ",
                    screen.sizes());
  check_float_tensor(attributes, "attributes", 3);
  TORCH_CHECK_VALUE(attributes.size(0) == screen.size(0) && attributes.size(1) == screen.size(1),
                    "attributes must have shape [B,V,C] matching screen_vertices ", screen.sizes(),
                    ", got ", attributes.sizes());
  check_same_device_dtype(screen, attributes, "screen_vertices", "attributes");
  TORCH_CHECK_VALUE(background.dim() == 1 && background.size(0) == attributes.size(2),
                    "background must have shape [C] = [", attributes.size(2), "], got ",
                    background.sizes());
  check_same_device_dtype(screen, background, "screen_vertices", "background");
  TORCH_CHECK_VALUE(screen.device() == triangles.device(),
                    "screen_vertices and triangles must be on the same device");
  check_triangles(triangles, screen.size(1));
  TORCH_CHECK_VALUE(triangles.size(0) < (int64_t(1) << 31), "at most 2^31 - 1 triangles are supported");
}

}  // namespace

SoftParams make_soft_params(double sigma, double gamma, double dist_eps, double eps, double near,
                            double far, const std::string& aggr_rgb, const std::string& aggr_alpha,
                            const std::string& dist_func, bool cull_backfaces, int64_t width,
                            int64_t height) {
  check_positive(sigma, "sigma");
  check_positive(gamma, "gamma");
  TORCH_CHECK_VALUE(std::isfinite(dist_eps) && dist_eps > 0 && dist_eps < 1,
                    "dist_eps must lie in (0, 1), got ", dist_eps);
  TORCH_CHECK_VALUE(std::isfinite(eps), "eps must be finite, got ", eps);
  check_positive(near, "near");
  check_positive(far, "far");
  TORCH_CHECK_VALUE(near < far, "near (", near, ") must be smaller than far (", far, ")");
  check_image_size(width, height);
  SoftParams p;
  p.sigma = sigma;
  p.gamma = gamma;
  p.dist_eps = dist_eps;
  p.eps = eps;
  p.near = near;
  p.far = far;
  p.aggr_rgb = parse_choice(aggr_rgb, "aggr_func_rgb", {{"softmax", kSoftRgbSoftmax}, {"hard", kSoftRgbHard}});
  p.aggr_alpha = parse_choice(aggr_alpha, "aggr_func_alpha",
                              {{"prod", kSoftAlphaProd}, {"sum", kSoftAlphaSum}, {"hard", kSoftAlphaHard}});
  p.dist_func = parse_choice(dist_func, "dist_func",
                             {{"euclidean", kSoftDistEuclidean}, {"barycentric", kSoftDistBarycentric}});
  p.cull_backfaces = cull_backfaces;
  p.width = static_cast<int>(width);
  p.height = static_cast<int>(height);
  return p;
}

std::vector<at::Tensor> soft_rasterize_forward(const at::Tensor& screen_vertices,
                                               const at::Tensor& triangles, const at::Tensor& attributes,
                                               const at::Tensor& background, double sigma, double gamma,
                                               double dist_eps, double eps, double near, double far,
                                               const std::string& aggr_rgb, const std::string& aggr_alpha,
                                               const std::string& dist_func, bool cull_backfaces,
                                               int64_t width, int64_t height) {
  const SoftParams params = make_soft_params(sigma, gamma, dist_eps, eps, near, far, aggr_rgb, aggr_alpha,
                                             dist_func, cull_backfaces, width, height);
  check_inputs(screen_vertices, triangles, attributes, background);
  const bool cuda = on_cuda(screen_vertices, "soft_rasterize");
  const auto screen = screen_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const auto attrs = attributes.contiguous();
  const auto bg = background.contiguous();
  const int64_t batch = screen.size(0), channels = attrs.size(2);
  auto image = at::empty({batch, height, width, channels + 1}, screen.options());
  auto aux = at::empty({batch, height, width, kSoftAuxChannels}, screen.options());
  const bool hard = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  auto hard_ids = hard ? at::empty({batch, height, width}, screen.options().dtype(at::kLong))
                       : at::empty({0}, screen.options().dtype(at::kLong));
  if (!cuda) {
    soft_rasterize_forward_cpu(params, screen, tris, attrs, bg, image, aux, hard_ids);
    return {image, aux, hard_ids};
  }
#ifdef WITH_CUDA
  const c10::cuda::CUDAGuard guard(screen.device());
  AT_DISPATCH_FLOATING_TYPES(screen.scalar_type(), "soft_rasterize_forward_cuda", [&] {
    check_cuda(soft_rasterize_forward_cuda<scalar_t>(
                   params, screen.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), attrs.data_ptr<scalar_t>(),
                   bg.data_ptr<scalar_t>(), batch, screen.size(1), tris.size(0), channels,
                   image.data_ptr<scalar_t>(), aux.data_ptr<scalar_t>(),
                   hard ? hard_ids.data_ptr<int64_t>() : nullptr, current_stream()),
               "soft_rasterize");
  });
#endif
  return {image, aux, hard_ids};
}

std::vector<at::Tensor> soft_rasterize_backward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& image, const at::Tensor& aux,
    const at::Tensor& hard_ids, const at::Tensor& grad_image, double sigma, double gamma,
    double dist_eps, double eps, double near, double far, const std::string& aggr_rgb,
    const std::string& aggr_alpha, const std::string& dist_func, bool cull_backfaces) {
  check_inputs(screen_vertices, triangles, attributes, background);
  const bool cuda = on_cuda(screen_vertices, "soft_rasterize");
  TORCH_CHECK_VALUE(image.dim() == 4 && image.size(0) == screen_vertices.size(0) &&
                        image.size(3) == attributes.size(2) + 1,
                    "image must have shape [B,H,W,C+1], got ", image.sizes());
  const int64_t batch = image.size(0), height = image.size(1), width = image.size(2);
  const SoftParams params = make_soft_params(sigma, gamma, dist_eps, eps, near, far, aggr_rgb, aggr_alpha,
                                             dist_func, cull_backfaces, width, height);
  check_same_device_dtype(screen_vertices, image, "screen_vertices", "image");
  check_same_device_dtype(screen_vertices, aux, "screen_vertices", "aux");
  check_same_device_dtype(screen_vertices, grad_image, "screen_vertices", "grad_image");
  TORCH_CHECK_VALUE(grad_image.sizes() == image.sizes(), "grad_image must have the image's shape ",
                    image.sizes(), ", got ", grad_image.sizes());
  TORCH_CHECK_VALUE(aux.sizes() == at::IntArrayRef({batch, height, width, kSoftAuxChannels}),
                    "aux must have shape [B,H,W,", kSoftAuxChannels, "], got ", aux.sizes());
  const bool hard = attributes.size(2) > 0 && params.aggr_rgb == kSoftRgbHard;
  if (hard) {
    TORCH_CHECK_VALUE(hard_ids.scalar_type() == at::kLong &&
                          hard_ids.sizes() == at::IntArrayRef({batch, height, width}),
                      "hard_ids must be int64 [B,H,W] for aggr_func_rgb 'hard'");
    TORCH_CHECK_VALUE(hard_ids.device() == screen_vertices.device(),
                      "screen_vertices and hard_ids must be on the same device");
    if (hard_ids.numel() > 0) {
      const auto [lo, hi] = at::aminmax(hard_ids);
      TORCH_CHECK_INDEX(lo.item<int64_t>() >= -1 && hi.item<int64_t>() < triangles.size(0),
                        "hard_ids out of range");
    }
  }
  const auto screen = screen_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const auto attrs = attributes.contiguous();
  const int64_t channels = attrs.size(2);
  if (!cuda) {
    auto grad_vertices = at::empty({batch, screen.size(1), 3 + channels}, screen.options());
    auto grad_background = at::empty({channels}, screen.options());
    soft_rasterize_backward_cpu(params, screen, tris, attrs, background.contiguous(), image.contiguous(),
                                aux.contiguous(), hard ? hard_ids.contiguous() : hard_ids,
                                grad_image.contiguous(), grad_vertices, grad_background);
    auto grad_screen = grad_vertices.narrow(2, 0, 3).contiguous();
    auto grad_attributes = grad_vertices.narrow(2, 3, channels).contiguous();
    return {grad_screen, grad_attributes, grad_background};
  }
  // The CUDA kernels scatter into zeroed vertex gradients.
  auto grad_vertices = at::zeros({batch, screen.size(1), 3 + channels}, screen.options());
  auto grad_background = at::empty({channels}, screen.options());
#ifdef WITH_CUDA
  TORCH_CHECK_VALUE(3 * batch * tris.size(0) < (int64_t(1) << 31),
                    "soft_rasterize backward on CUDA supports at most 2^31 - 1 triangle corners (B*F*3)");
  const c10::cuda::CUDAGuard guard(screen.device());
  const auto img = image.contiguous(), saved = aux.contiguous(), grad = grad_image.contiguous();
  const auto ids = hard ? hard_ids.contiguous() : hard_ids;
  AT_DISPATCH_FLOATING_TYPES(screen.scalar_type(), "soft_rasterize_backward_cuda", [&] {
    check_cuda(soft_rasterize_backward_cuda<scalar_t>(
                   params, screen.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), attrs.data_ptr<scalar_t>(), batch,
                   screen.size(1), tris.size(0), channels, img.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                   hard ? ids.data_ptr<int64_t>() : nullptr, grad.data_ptr<scalar_t>(),
                   grad_vertices.data_ptr<scalar_t>(), grad_background.data_ptr<scalar_t>(), current_stream()),
               "soft_rasterize backward");
  });
#endif
  auto grad_screen = grad_vertices.narrow(2, 0, 3).contiguous();
  auto grad_attributes = grad_vertices.narrow(2, 3, channels).contiguous();
  return {grad_screen, grad_attributes, grad_background};
}

}  // namespace diffrender
