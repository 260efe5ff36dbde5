// Validation and device dispatch for texture sampling.
#include "texture/texture.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include "common/checks.h"
#include "common/device.h"

#ifdef WITH_CUDA
#include "texture/texture_cuda.h"
#endif

namespace diffrender {
namespace {

constexpr int64_t kMaxTextureSide = 32768;

MipPyramid pyramid(const at::Tensor& levels, const std::vector<int64_t>& level_sizes, int64_t texture_batch,
                   int64_t channels, int64_t batch, const std::string& boundary) {
  TORCH_CHECK_VALUE(boundary == "wrap" || boundary == "clamp", "boundary must be 'wrap' or 'clamp', got '",
                    boundary, "'");
  TORCH_CHECK_VALUE(level_sizes.size() % 2 == 0 && !level_sizes.empty() &&
                        level_sizes.size() <= 2 * size_t(kMaxMipLevels),
                    "level_sizes must hold (height, width) of 1 to ", kMaxMipLevels, " levels, got ",
                    level_sizes.size(), " numbers");
  TORCH_CHECK_VALUE(texture_batch == 1 || texture_batch == batch, "the texture batch must be 1 or the uv batch (",
                    batch, "), got ", texture_batch);
  TORCH_CHECK_VALUE(channels >= 1 && channels <= 4096, "texture channels must lie in [1, 4096], got ", channels);
  MipPyramid mips;
  mips.num_levels = static_cast<int>(level_sizes.size() / 2);
  mips.texture_batch = texture_batch;
  mips.channels = static_cast<int>(channels);
  mips.wrap = boundary == "wrap";
  int64_t offset = 0;
  for (int l = 0; l < mips.num_levels; ++l) {
    const int64_t height = level_sizes[2 * l], width = level_sizes[2 * l + 1];
    TORCH_CHECK_VALUE(height >= 1 && width >= 1 && height <= kMaxTextureSide && width <= kMaxTextureSide,
                      "texture level ", l, " must be between 1x1 and ", kMaxTextureSide, "x", kMaxTextureSide,
                      ", got ", width, "x", height);
    mips.offset[l] = offset;
    mips.height[l] = static_cast<int>(height);
    mips.width[l] = static_cast<int>(width);
    offset += texture_batch * height * width * channels;
  }
  TORCH_CHECK_VALUE(levels.numel() == offset, "levels must hold ", offset, " elements for level_sizes ",
                    level_sizes, ", got ", levels.numel());
  return mips;
}

TextureInputs validated(const at::Tensor& levels, const std::vector<int64_t>& level_sizes, int64_t texture_batch,
                        int64_t channels, const at::Tensor& uv, const c10::optional<at::Tensor>& uv_da,
                        const std::string& filter, const std::string& boundary) {
  TORCH_CHECK_VALUE(filter == "bilinear" || filter == "trilinear", "filter must be 'bilinear' or 'trilinear', got '",
                    filter, "'");
  check_float_tensor(levels, "levels", 1);
  check_float_tensor(uv, "uv", 4);
  check_same_device_dtype(uv, levels, "uv", "levels");
  TORCH_CHECK_VALUE(uv.size(3) == 2, "uv must have shape [B,H,W,2], got ", uv.sizes());
  TORCH_CHECK_VALUE(uv_da.has_value() == (filter == "trilinear"), "uv_da must be given for filter 'trilinear' ",
                    "and only then");
  TextureInputs in;
  in.mips = pyramid(levels, level_sizes, texture_batch, channels, uv.size(0), boundary);
  in.levels = levels.contiguous();
  in.uv = uv.contiguous();
  if (uv_da) {
    TORCH_CHECK_VALUE(uv_da->sizes() == (std::vector<int64_t>{uv.size(0), uv.size(1), uv.size(2), 4}),
                      "uv_da must be [B,H,W,4] matching uv ", uv.sizes(), ", got ", uv_da->sizes());
    check_same_device_dtype(uv, *uv_da, "uv", "uv_da");
    in.uv_da = uv_da->contiguous();
  }
  return in;
}

std::vector<int64_t> output_shape(const TextureInputs& in) {
  return {in.uv.size(0), in.uv.size(1), in.uv.size(2), in.mips.channels};
}

}  // namespace

at::Tensor texture_sample_forward(const at::Tensor& levels, const std::vector<int64_t>& level_sizes,
                                  int64_t texture_batch, int64_t channels, const at::Tensor& uv,
                                  const c10::optional<at::Tensor>& uv_da, const std::string& filter,
                                  const std::string& boundary) {
  const TextureInputs in = validated(levels, level_sizes, texture_batch, channels, uv, uv_da, filter, boundary);
  auto out = at::empty(output_shape(in), in.uv.options());
  if (out.numel() == 0) return out;
  if (!on_cuda(in.uv, "texture.sample")) {
    texture_sample_forward_cpu(in, out);
    return out;
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(out.device());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "texture_sample_forward_cuda", [&] {
    check_cuda(texture_sample_forward_cuda<scalar_t>(sample_pixels<scalar_t>(in), in.mips,
                                                     in.levels.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                     current_stream()),
               "texture.sample");
  });
#endif
  return out;
}

std::vector<at::Tensor> texture_sample_backward(const at::Tensor& grad_out, const at::Tensor& levels,
                                                const std::vector<int64_t>& level_sizes, int64_t texture_batch,
                                                int64_t channels, const at::Tensor& uv,
                                                const c10::optional<at::Tensor>& uv_da, const std::string& filter,
                                                const std::string& boundary, bool want_grad_levels,
                                                bool want_grad_uv) {
  // Before validated(), which copies its inputs.
  if (want_grad_levels && on_cuda(uv, "texture.sample"))
    check_cuda_scatter_rows(uv.numel() / 2 * kFootprintCorners, "texture.sample",
                            "texel footprint corners (8·B·H·W)");
  const TextureInputs in = validated(levels, level_sizes, texture_batch, channels, uv, uv_da, filter, boundary);
  TORCH_CHECK_VALUE(grad_out.sizes() == output_shape(in), "grad_out must be [B,H,W,C] = ", output_shape(in),
                    ", got ", grad_out.sizes());
  check_same_device_dtype(in.uv, grad_out, "uv", "grad_out");
  const auto grad = grad_out.contiguous();
  auto grad_levels = want_grad_levels ? at::zeros_like(in.levels) : at::Tensor();
  auto grad_uv = want_grad_uv ? at::empty_like(in.uv) : at::Tensor();
  if (grad.numel() == 0 || !(want_grad_levels || want_grad_uv)) return {grad_levels, grad_uv};
  if (!on_cuda(in.uv, "texture.sample")) {
    texture_sample_backward_cpu(in, grad, grad_levels, grad_uv);
    return {grad_levels, grad_uv};
  }
#ifdef WITH_CUDA
  const CudaDeviceGuard guard(grad.device());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "texture_sample_backward_cuda", [&] {
    check_cuda(texture_sample_backward_cuda<scalar_t>(sample_pixels<scalar_t>(in), in.mips,
                                                      in.levels.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                                      want_grad_levels ? grad_levels.data_ptr<scalar_t>() : nullptr,
                                                      want_grad_uv ? grad_uv.data_ptr<scalar_t>() : nullptr,
                                                      current_stream()),
               "texture.sample backward");
  });
#endif
  return {grad_levels, grad_uv};
}

}  // namespace diffrender
