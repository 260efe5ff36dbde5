// CPU deferred Phong shading. The backward pass walks, per triangle, the pixels it won: each is
// shaded once and its attribute gradient summed into the triangle's corners right away, so no sum
// needs atomics or depends on the thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "barycentric/owned_pixels.h"
#include "common/parallel.h"
#include "shading/phong_blocks.h"
#include "shading/pixel_shading.h"

namespace diffrender {
namespace {

// Small blocks: a triangle's cost is its won pixels, which vary a lot between triangles.
constexpr int64_t kTrianglesPerBlock = 16;
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

template <typename T>
void backward_impl(const PixelShadingInputs& in, const at::Tensor& grad_rgba, std::vector<at::Tensor>& grads) {
  const PixelShadingArrays<T> a = pixel_shading_arrays<T>(in);
  const int height = static_cast<int>(in.triangle_ids.size(1)), width = static_cast<int>(in.triangle_ids.size(2));
  const int64_t num_triangles = in.triangles.size(0);
  const T* g_rgba = grad_rgba.data_ptr<T>();
  T* g_pixel_diffuse = a.pixel_diffuse ? grads[1].data_ptr<T>() : nullptr;
  T* g_bary = grads[2].data_ptr<T>();
  // Each covered pixel is written by the one triangle that won it; the others stay zero.
  grads[2].zero_();
  if (g_pixel_diffuse) grads[1].zero_();
  const auto bounds = owned_pixel_bounds(a.ids, a.bary, a.batch, height, width, num_triangles);
  at::Tensor corners = at::empty({a.batch, num_triangles * 3, a.channels}, in.vertex_attributes.options());
  T* corner_grads = corners.data_ptr<T>();
  phong_backward_in_blocks<T>(
      a.batch, num_triangles, a.lights, kTrianglesPerBlock, grads[3].data_ptr<T>(), grads[4].data_ptr<T>(),
      grads[5].data_ptr<T>(), grads[6].data_ptr<T>(),
      [&](int64_t b, int64_t first, int64_t last, const PhongPartials<T>& partial) {
        const Vec3<T> eye = load3(a.eye + 3 * b);
        const int64_t image = b * a.pixels;
        for (int64_t i = first; i < last; ++i) {
          T* acc = corner_grads + i * 3 * a.channels;
          std::fill_n(acc, 3 * a.channels, T(0));
          const int32_t* box = bounds.data() + 4 * i;
          for_each_owned_pixel(
              a.ids + image, a.bary + 3 * image, i % num_triangles, box[0], box[1], box[2], box[3], width,
              [&](int64_t pixel, const T* weights) {
                const int64_t p = image + pixel;
                const PixelCorners<T> corners_of_p = pixel_corners(a, p);
                const PhongPointGrad<T> g = phong_backward(
                    pixel_phong_point(a, corners_of_p, p), eye, a.light_positions + 3 * a.lights * b,
                    a.light_intensities + 3 * a.lights * b, static_cast<int>(a.lights), load3(g_rgba + 4 * p),
                    partial.eye, partial.light_positions, partial.light_intensities, partial.ambient);
                T attribute_grad[kMaxPixelChannels];
                pack_attribute_gradient(a, g, attribute_grad);
                barycentric_gradient(corners_of_p, attribute_grad, a.channels, g_bary + 3 * p);
                if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, g.diffuse);
                for (int k = 0; k < 3; ++k)
                  for (int c = 0; c < a.channels; ++c) acc[k * a.channels + c] += weights[k] * attribute_grad[c];
              },
              [&](int64_t first_pixel, int count) {
                prefetch_span(g_rgba + 4 * (image + first_pixel), 4 * count * int64_t(sizeof(T)));
                prefetch_span(g_bary + 3 * (image + first_pixel), 3 * count * int64_t(sizeof(T)));
              });
        }
      });
  grads[0].index_add_(1, in.triangles.reshape({-1}), corners);
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
