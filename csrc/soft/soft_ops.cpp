// Validation and device dispatch for the soft rasterizer.
#include "soft/soft.h"

#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "common/checks.h"
#include "common/device.h"
#include "texture/texture.h"

#include <cmath>
#include <functional>

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

// screen_vertices [B,V,3], triangles, attributes [B,V,A] and background [channels]: shapes, dtypes,
// devices and every triangle index, before any kernel reads memory.
void check_inputs(const at::Tensor& screen, const at::Tensor& triangles, const at::Tensor& attributes,
                  const at::Tensor& background, int64_t channels) {
  check_float_tensor(screen, "screen_vertices", 3);
  TORCH_CHECK_VALUE(screen.size(2) == 3, "screen_vertices must have shape [B,V,3] (x/w, y/w, 1/w), got ",
                    screen.sizes());
  check_float_tensor(attributes, "attributes", 3);
  TORCH_CHECK_VALUE(attributes.size(0) == screen.size(0) && attributes.size(1) == screen.size(1),
                    "attributes must have shape [B,V,C] matching screen_vertices ", screen.sizes(),
                    ", got ", attributes.sizes());
  check_same_device_dtype(screen, attributes, "screen_vertices", "attributes");
  TORCH_CHECK_VALUE(background.dim() == 1 && background.size(0) == channels,
                    "background must have shape [C] = [", channels, "], got ", background.sizes());
  check_same_device_dtype(screen, background, "screen_vertices", "background");
  TORCH_CHECK_VALUE(screen.device() == triangles.device(),
                    "screen_vertices and triangles must be on the same device");
  check_triangles(triangles, screen.size(1));
  TORCH_CHECK_VALUE(triangles.size(0) < (int64_t(1) << 31), "at most 2^31 - 1 triangles are supported");
}

constexpr int64_t kMaxTextureSide = 32768;

// texture [Bt,Ht,Wt,C] against screen_vertices [B,V,3] and attributes [B,V,2+2C].
SoftTextureInput check_texture(const at::Tensor& texture, const std::string& boundary, const at::Tensor& screen,
                               const at::Tensor& attributes) {
  const bool wrap = parse_choice(boundary, "texture_boundary", {{"wrap", 1}, {"clamp", 0}}) == 1;
  check_float_tensor(texture, "texture", 4);
  check_same_device_dtype(screen, texture, "screen_vertices", "texture");
  TORCH_CHECK_VALUE(texture.size(0) == 1 || texture.size(0) == screen.size(0), "texture must have shape [Bt,Ht,Wt,C] ",
                    "with Bt = 1 or B = ", screen.size(0), ", got ", texture.sizes());
  TORCH_CHECK_VALUE(texture.size(1) >= 1 && texture.size(2) >= 1 && texture.size(1) <= kMaxTextureSide &&
                        texture.size(2) <= kMaxTextureSide && texture.size(3) >= 1 && texture.size(3) <= 4096,
                    "texture must be between 1x1 and ", kMaxTextureSide, "x", kMaxTextureSide,
                    " texels with 1 to 4096 channels, got ", texture.sizes());
  const int64_t channels = texture.size(3);
  TORCH_CHECK_VALUE(attributes.dim() == 3 && attributes.size(2) == 2 + 2 * channels,
                    "a textured soft rasterization needs attributes [B,V,2+2C] = (u, v, scale[C], offset[C]) for a ",
                    channels, "-channel texture, got ", attributes.sizes());
  return {texture.contiguous(), wrap};
}

int64_t color_channels(const at::Tensor& attributes, const SoftTextureInput& texture) {
  return texture.texels.defined() ? texture.texels.size(3) : attributes.size(2);
}

#ifdef WITH_CUDA
// The texture of batch items [first, first + count): a texture per item [B,...] is sliced, a
// shared one [1,...] kept whole.
SoftTextureInput batch_slice(const SoftTextureInput& texture, int64_t first, int64_t count) {
  if (!texture.texels.defined() || texture.texels.size(0) == 1) return texture;
  return {texture.texels.narrow(0, first, count), texture.wrap};
}

// The CUDA forward of inputs already checked and contiguous, into image, aux and hard_ids (undefined
// unless aggr_rgb is 'hard' with colours). A batch
// whose (triangle, tile) pairs pass the kernels' 32-bit count is rendered in two halves, and so on
// down to single images: each image's pixels come from its own inputs alone, so the halves give
// the same bits as one call would. Slices of contiguous tensors along dim 0 are contiguous, so
// the kernels write straight into the caller's outputs.
void forward_cuda(const SoftParams& params, const at::Tensor& screen, const at::Tensor& tris,
                  const at::Tensor& attrs, const at::Tensor& bg, const SoftTextureInput& texture, int64_t channels,
                  const at::Tensor& image, const at::Tensor& aux, const at::Tensor& hard_ids) {
  const int64_t batch = screen.size(0);
  const bool hard = hard_ids.defined();
  SoftCudaCounts counts;
  AT_DISPATCH_FLOATING_TYPES(screen.scalar_type(), "soft_rasterize_forward_cuda", [&] {
    check_cuda(soft_rasterize_forward_cuda<scalar_t>(
                   params, screen.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), attrs.data_ptr<scalar_t>(),
                   bg.data_ptr<scalar_t>(), texture.view<scalar_t>(), batch, screen.size(1), tris.size(0), channels,
                   image.data_ptr<scalar_t>(), aux.data_ptr<scalar_t>(), hard ? hard_ids.data_ptr<int64_t>() : nullptr,
                   counts, current_stream()),
               "soft_rasterize");
  });
  if (counts.binned_pairs <= kSoftCudaMaxBinnedPairs) return;
  TORCH_CHECK_VALUE(batch > 1, "soft_rasterize on CUDA bins at most ", kSoftCudaMaxBinnedPairs,
                    " (triangle, 16x16 tile) pairs an image, got ", counts.binned_pairs,
                    ": render a smaller image, or with a smaller sigma (it widens every triangle's box)");
  const auto render_items = [&](int64_t first, int64_t count) {
    forward_cuda(params, screen.narrow(0, first, count), tris, attrs.narrow(0, first, count), bg,
                 batch_slice(texture, first, count), channels, image.narrow(0, first, count),
                 aux.narrow(0, first, count), hard ? hard_ids.narrow(0, first, count) : hard_ids);
  };
  render_items(0, batch / 2);
  render_items(batch / 2, batch - batch / 2);
}

// The texture-gradient records of two consecutive batch slices as one batch's.
SoftTextureRecords concatenated(const SoftTextureRecords& first, const SoftTextureRecords& second) {
  SoftTextureRecords records{first.rows, first.batch_offsets};
  if (second.rows.defined()) records.rows = first.rows.defined() ? at::cat({first.rows, second.rows}) : second.rows;
  const int64_t shift = first.batch_offsets.back();
  for (size_t b = 1; b < second.batch_offsets.size(); ++b)
    records.batch_offsets.push_back(shift + second.batch_offsets[b]);
  return records;
}

// The CUDA backward of inputs already checked and contiguous (hard_ids as forward_cuda's):
// scatters into grad_vertices (zeroed [B,V,3+A]), fills records when textured, and returns
// d(loss)/d(background) [C]. A batch whose
// walk chunks pass the kernels' 32-bit count is back-propagated in two halves, and so on down to
// single images; each image's vertex gradients and records come from its own pixels alone, and
// the halves' background gradients are added in batch order.
at::Tensor backward_cuda(const SoftParams& params, const at::Tensor& screen, const at::Tensor& tris,
                         const at::Tensor& attrs, const SoftTextureInput& texture, int64_t channels,
                         const at::Tensor& image, const at::Tensor& aux, const at::Tensor& hard_ids,
                         const at::Tensor& grad_image, const at::Tensor& grad_vertices, SoftTextureRecords& records) {
  const int64_t batch = screen.size(0);
  const bool hard = hard_ids.defined();
  auto grad_background = at::empty({channels}, screen.options());
  records.batch_offsets.assign(batch + 1, 0);
  SoftCudaCounts counts;
  AT_DISPATCH_FLOATING_TYPES(screen.scalar_type(), "soft_rasterize_backward_cuda", [&] {
    const std::function<scalar_t*(int64_t)> allocate_records = [&](int64_t count) {
      records.rows = at::empty({count, 2 + channels}, screen.options());
      return records.rows.data_ptr<scalar_t>();
    };
    check_cuda(soft_rasterize_backward_cuda<scalar_t>(
                   params, screen.data_ptr<scalar_t>(), tris.data_ptr<int64_t>(), attrs.data_ptr<scalar_t>(),
                   texture.view<scalar_t>(), batch, screen.size(1), tris.size(0), channels,
                   image.data_ptr<scalar_t>(), aux.data_ptr<scalar_t>(), hard ? hard_ids.data_ptr<int64_t>() : nullptr,
                   grad_image.data_ptr<scalar_t>(), grad_vertices.data_ptr<scalar_t>(),
                   grad_background.data_ptr<scalar_t>(), allocate_records, records.batch_offsets.data(), counts,
                   current_stream()),
               "soft_rasterize backward");
  });
  if (counts.walk_chunks <= kSoftCudaMaxWalkChunks) return grad_background;
  TORCH_CHECK_VALUE(batch > 1, "soft_rasterize backward on CUDA walks at most ", kSoftCudaMaxWalkChunks,
                    " walk chunks (about ", kSoftWalkPixels, " pixels of a triangle's box each) an image, got ",
                    counts.walk_chunks, ": back-propagate a smaller image, or with a smaller sigma");
  SoftTextureRecords halves[2];
  const auto back_propagate_items = [&](int64_t first, int64_t count, SoftTextureRecords& half) {
    const auto items = [&](const at::Tensor& tensor) { return tensor.narrow(0, first, count); };
    return backward_cuda(params, items(screen), tris, items(attrs), batch_slice(texture, first, count), channels,
                         items(image), items(aux), hard ? items(hard_ids) : hard_ids, items(grad_image),
                         items(grad_vertices), half);
  };
  const auto grad_first = back_propagate_items(0, batch / 2, halves[0]);
  const auto grad_second = back_propagate_items(batch / 2, batch - batch / 2, halves[1]);
  records = concatenated(halves[0], halves[1]);
  return grad_first + grad_second;
}
#endif

std::vector<at::Tensor> forward(const at::Tensor& screen_vertices, const at::Tensor& triangles,
                                const at::Tensor& attributes, const at::Tensor& background,
                                const SoftTextureInput& texture, const SoftParams& params) {
  const int64_t channels = color_channels(attributes, texture);
  check_inputs(screen_vertices, triangles, attributes, background, channels);
  const bool cuda = on_cuda(screen_vertices, "soft_rasterize");
  const auto screen = screen_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const auto attrs = attributes.contiguous();
  const auto bg = background.contiguous();
  const int64_t batch = screen.size(0), height = params.height, width = params.width;
  auto image = at::empty({batch, height, width, channels + 1}, screen.options());
  auto aux = at::empty({batch, height, width, kSoftAuxChannels}, screen.options());
  const bool hard = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  auto hard_ids = hard ? at::empty({batch, height, width}, screen.options().dtype(at::kLong))
                       : at::empty({0}, screen.options().dtype(at::kLong));
  if (!cuda) {
    soft_rasterize_forward_cpu(params, screen, tris, attrs, bg, texture, image, aux, hard_ids);
    return {image, aux, hard_ids};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(screen.device());
  forward_cuda(params, screen, tris, attrs, bg, texture, channels, image, aux, hard ? hard_ids : at::Tensor());
#endif
  return {image, aux, hard_ids};
}

// d(loss)/d(texture) from the backward's records: each texture image through the texture op's own
// deterministic bilinear backward, with the records as its pixels (in record order).
at::Tensor texture_gradient(const SoftTextureInput& texture, const SoftTextureRecords& records) {
  const at::Tensor& texels = texture.texels;
  auto grad = at::zeros_like(texels);
  const int64_t images = texels.size(0), channels = texels.size(3);
  const int64_t batch = static_cast<int64_t>(records.batch_offsets.size()) - 1;
  for (int64_t image = 0; image < images; ++image) {
    // A shared texture takes every batch item's records.
    const int64_t first = records.batch_offsets[images == 1 ? 0 : image];
    const int64_t last = records.batch_offsets[images == 1 ? batch : image + 1];
    if (last == first) continue;
    const auto rows = records.rows.narrow(0, first, last - first);
    const auto uv = rows.narrow(1, 0, 2).reshape({1, last - first, 1, 2});
    const auto grad_albedo = rows.narrow(1, 2, channels).reshape({1, last - first, 1, channels});
    const auto grads = texture_sample_backward(grad_albedo, texels[image].reshape({-1}),
                                               {texels.size(1), texels.size(2)}, 1, channels, uv, c10::nullopt,
                                               "bilinear", texture.wrap ? "wrap" : "clamp",
                                               /*want_grad_levels=*/true, /*want_grad_uv=*/false);
    grad[image].copy_(grads[0].view({texels.size(1), texels.size(2), channels}));
  }
  return grad;
}

// {d/d screen_vertices, d/d attributes, d/d background} and, when textured, d/d texture.
std::vector<at::Tensor> backward(const at::Tensor& screen_vertices, const at::Tensor& triangles,
                                 const at::Tensor& attributes, const at::Tensor& background,
                                 const SoftTextureInput& texture, const at::Tensor& image, const at::Tensor& aux,
                                 const at::Tensor& hard_ids, const at::Tensor& grad_image, double sigma,
                                 double gamma, double dist_eps, double eps, double near, double far,
                                 const std::string& aggr_rgb, const std::string& aggr_alpha,
                                 const std::string& dist_func, bool cull_backfaces) {
  const int64_t channels = color_channels(attributes, texture);
  check_inputs(screen_vertices, triangles, attributes, background, channels);
  const bool cuda = on_cuda(screen_vertices, "soft_rasterize");
  TORCH_CHECK_VALUE(image.dim() == 4 && image.size(0) == screen_vertices.size(0) && image.size(3) == channels + 1,
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
  const bool hard = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  if (hard) {
    TORCH_CHECK_VALUE(hard_ids.scalar_type() == at::kLong &&
                          hard_ids.sizes() == at::IntArrayRef({batch, height, width}),
                      "hard_ids must be int64 [B,H,W] for aggr_func_rgb 'hard'");
    TORCH_CHECK_VALUE(hard_ids.device() == screen_vertices.device(),
                      "screen_vertices and hard_ids must be on the same device");
    check_index_range(hard_ids, -1, triangles.size(0), "hard_ids");
  }
  const auto screen = screen_vertices.contiguous();
  const auto tris = triangles.contiguous();
  const auto attrs = attributes.contiguous();
  const int64_t attr_channels = attrs.size(2);
  const auto split = [&](const at::Tensor& grad_vertices, const at::Tensor& grad_background,
                         const SoftTextureRecords& records) -> std::vector<at::Tensor> {
    std::vector<at::Tensor> grads = {grad_vertices.narrow(2, 0, 3).contiguous(),
                                     grad_vertices.narrow(2, 3, attr_channels).contiguous(), grad_background};
    if (texture.texels.defined()) grads.push_back(texture_gradient(texture, records));
    return grads;
  };
  SoftTextureRecords records;
  if (!cuda) {
    auto grad_vertices = at::empty({batch, screen.size(1), 3 + attr_channels}, screen.options());
    auto grad_background = at::empty({channels}, screen.options());
    soft_rasterize_backward_cpu(params, screen, tris, attrs, texture, image.contiguous(), aux.contiguous(),
                                hard ? hard_ids.contiguous() : hard_ids, grad_image.contiguous(), grad_vertices,
                                grad_background, records);
    return split(grad_vertices, grad_background, records);
  }
  // The CUDA kernels scatter into zeroed vertex gradients.
  auto grad_vertices = at::zeros({batch, screen.size(1), 3 + attr_channels}, screen.options());
  at::Tensor grad_background;
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(screen.device());
  grad_background = backward_cuda(params, screen, tris, attrs, texture, channels, image.contiguous(),
                                  aux.contiguous(), hard ? hard_ids.contiguous() : at::Tensor(),
                                  grad_image.contiguous(), grad_vertices, records);
#endif
  return split(grad_vertices, grad_background, records);
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
  return forward(screen_vertices, triangles, attributes, background, {}, params);
}

std::vector<at::Tensor> soft_rasterize_textured_forward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& texture, const std::string& texture_boundary, double sigma,
    double gamma, double dist_eps, double eps, double near, double far, const std::string& aggr_rgb,
    const std::string& aggr_alpha, const std::string& dist_func, bool cull_backfaces, int64_t width,
    int64_t height) {
  const SoftParams params = make_soft_params(sigma, gamma, dist_eps, eps, near, far, aggr_rgb, aggr_alpha,
                                             dist_func, cull_backfaces, width, height);
  check_float_tensor(screen_vertices, "screen_vertices", 3);
  const SoftTextureInput tex = check_texture(texture, texture_boundary, screen_vertices, attributes);
  return forward(screen_vertices, triangles, attributes, background, tex, params);
}

std::vector<at::Tensor> soft_rasterize_backward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& image, const at::Tensor& aux,
    const at::Tensor& hard_ids, const at::Tensor& grad_image, double sigma, double gamma,
    double dist_eps, double eps, double near, double far, const std::string& aggr_rgb,
    const std::string& aggr_alpha, const std::string& dist_func, bool cull_backfaces) {
  return backward(screen_vertices, triangles, attributes, background, {}, image, aux, hard_ids, grad_image, sigma,
                  gamma, dist_eps, eps, near, far, aggr_rgb, aggr_alpha, dist_func, cull_backfaces);
}

std::vector<at::Tensor> soft_rasterize_textured_backward(
    const at::Tensor& screen_vertices, const at::Tensor& triangles, const at::Tensor& attributes,
    const at::Tensor& background, const at::Tensor& texture, const std::string& texture_boundary,
    const at::Tensor& image, const at::Tensor& aux, const at::Tensor& hard_ids, const at::Tensor& grad_image,
    double sigma, double gamma, double dist_eps, double eps, double near, double far,
    const std::string& aggr_rgb, const std::string& aggr_alpha, const std::string& dist_func,
    bool cull_backfaces) {
  check_float_tensor(screen_vertices, "screen_vertices", 3);
  const SoftTextureInput tex = check_texture(texture, texture_boundary, screen_vertices, attributes);
  return backward(screen_vertices, triangles, attributes, background, tex, image, aux, hard_ids, grad_image, sigma,
                  gamma, dist_eps, eps, near, far, aggr_rgb, aggr_alpha, dist_func, cull_backfaces);
}

}  // namespace diffrender
