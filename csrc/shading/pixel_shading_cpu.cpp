// CPU deferred Phong shading. The backward pass streams the covered pixels once: each is shaded
// and its attribute gradient summed into its triangle's corners (won_pixel_sums.h), so no sum
// needs atomics or depends on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "barycentric/won_pixel_sums.h"
#include "common/corner_scatter.h"
#include "common/parallel.h"
#include "shading/phong_blocks.h"
#include "shading/pixel_shading.h"

namespace diffrender {
namespace {

constexpr int64_t kPixelsPerBlock = 4096;

template <typename T>
void forward_impl(const PixelShadingInputs& in, at::Tensor& rgba) {
  const PixelShadingArrays<T> a = pixel_shading_arrays<T>(in);
  T* out = rgba.data_ptr<T>();
  const int64_t num_triangles = in.triangles.size(0);
  std::atomic<bool> out_of_range{false};
  const int64_t total = a.batch * a.pixels;
  // Covered pixels cluster in the middle of the image: interleaved blocks keep the threads even.
  parallel_for_interleaved((total + kPixelsPerBlock - 1) / kPixelsPerBlock, [&](int64_t block) {
    for (int64_t p = block * kPixelsPerBlock; p < std::min(total, (block + 1) * kPixelsPerBlock); ++p) {
      T* o = out + 4 * p;
      o[0] = o[1] = o[2] = o[3] = T(0);
      if (!pixel_covered(a.bary + 3 * p)) continue;
      if (a.ids[p] < 0 || a.ids[p] >= num_triangles) {
        out_of_range.store(true, std::memory_order_relaxed);
        continue;
      }
      const int64_t b = p / a.pixels;
      const PhongPoint<T> point = pixel_phong_point(a, pixel_corners(a, p), p);
      store3(o, phong_forward(point, load3(a.eye + 3 * b), a.light_positions + 3 * a.lights * b,
                              a.light_intensities + 3 * a.lights * b, static_cast<int>(a.lights),
                              load3(a.ambient + 3 * b)));
      o[3] = T(1);
    }
  });
  TORCH_CHECK_INDEX(!out_of_range.load(), "triangle_ids must lie in [0, ", num_triangles, ") on covered pixels");
}

// Calls f(std::integral_constant<int, channels>) for the packings pixel_shading_ops.cpp allows.
template <typename F>
void with_constant_channels(int channels, const F& f) {
  switch (channels) {
    case 6: return f(std::integral_constant<int, 6>());
    case 9: return f(std::integral_constant<int, 9>());
    case 10: return f(std::integral_constant<int, 10>());
    case 13: return f(std::integral_constant<int, 13>());
  }
  TORCH_CHECK_VALUE(false, "shade_pixels: unexpected channel count ", channels);
}

template <typename T>
void backward_impl(const PixelShadingInputs& in, const at::Tensor& grad_rgba, std::vector<at::Tensor>& grads) {
  const PixelShadingArrays<T> a = pixel_shading_arrays<T>(in);
  const int height = static_cast<int>(in.triangle_ids.size(1)), width = static_cast<int>(in.triangle_ids.size(2));
  const int64_t num_triangles = in.triangles.size(0);
  const PixelGradient<T> g_rgba = pixel_gradient<T>(grad_rgba);
  T* g_pixel_diffuse = a.pixel_diffuse ? grads[1].data_ptr<T>() : nullptr;
  T* g_bary = grads[2].data_ptr<T>();
  const int64_t bands_per_image = sum_bands_per_image(height);
  PhongPartialBlocks<T> partials(a.batch * bands_per_image, bands_per_image, a.lights);
  // A compile-time channel count lets the per-channel loops unroll.
  WonTriangleSums<T> corners;
  with_constant_channels(a.channels, [&](auto channels) {
    corners = sum_over_won_pixels(
        a.ids, a.bary, a.batch, height, width, num_triangles, 3 * channels,
        [&](const WonPixel<T>& won) {
          const int64_t p = won.pixel, b = p / a.pixels;
          const PixelCorners<T> corners_of_p = pixel_corners(a, p);
          const PhongPartials<T> partial = partials.of(won.band);
          const PhongPointGrad<T> g = phong_backward(
              pixel_phong_point(a, corners_of_p, p), load3(a.eye + 3 * b), a.light_positions + 3 * a.lights * b,
              a.light_intensities + 3 * a.lights * b, static_cast<int>(a.lights), load_rgb_gradient(g_rgba, p),
              partial.eye, partial.light_positions, partial.light_intensities, partial.ambient);
          T attribute_grad[kMaxPixelChannels] = {};
          pack_attribute_gradient(a, g, attribute_grad);
          barycentric_gradient(corners_of_p, attribute_grad, channels, g_bary + 3 * p);
          if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, g.diffuse);
          for (int k = 0; k < 3; ++k)
            for (int c = 0; c < channels; ++c) won.sum[k * channels + c] += won.weights[k] * attribute_grad[c];
        },
        [&](int64_t p) {
          store3(g_bary + 3 * p, Vec3<T>{0, 0, 0});
          if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, Vec3<T>{0, 0, 0});
        });
  });
  partials.add_in_block_order(grads[3].data_ptr<T>(), grads[4].data_ptr<T>(), grads[5].data_ptr<T>(),
                              grads[6].data_ptr<T>());
  add_corners_to_vertices(corners.sums.data(), corners.keys, a.triangles, a.batch,
                          num_triangles, a.num_vertices, a.channels, grads[0].data_ptr<T>());
}

}  // namespace

void shade_pixels_forward_cpu(const PixelShadingInputs& in, at::Tensor& rgba) {
  AT_DISPATCH_FLOATING_TYPES(in.vertex_attributes.scalar_type(), "shade_pixels_forward_cpu",
                             [&] { forward_impl<scalar_t>(in, rgba); });
}

void shade_pixels_backward_cpu(const PixelShadingInputs& in, const at::Tensor& grad_rgba,
                               std::vector<at::Tensor>& grads) {
  AT_DISPATCH_FLOATING_TYPES(in.vertex_attributes.scalar_type(), "shade_pixels_backward_cpu",
                             [&] { backward_impl<scalar_t>(in, grad_rgba, grads); });
}

}  // namespace diffrender
