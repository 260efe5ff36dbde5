// CPU deferred Phong shading. The backward pass shades each covered pixel once, keeping the
// gradient of its interpolated attributes; the triangles then gather those per corner by walking
// the pixels they won, so no sum depends on the thread count.
#include <ATen/Parallel.h>

#include "barycentric/owned_pixels.h"
#include "shading/phong_blocks.h"
#include "shading/pixel_shading.h"

namespace diffrender {
namespace {

template <typename T>
void forward_impl(const PixelShadingInputs& in, at::Tensor& rgba) {
  const PixelShadingArrays<T> a = pixel_shading_arrays<T>(in);
  T* out = rgba.data_ptr<T>();
  at::parallel_for(0, a.batch * a.pixels, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* o = out + 4 * p;
      if (!pixel_covered(a.bary + 3 * p)) {
        o[0] = o[1] = o[2] = o[3] = T(0);
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
}

template <typename T>
void backward_impl(const PixelShadingInputs& in, const at::Tensor& grad_rgba, std::vector<at::Tensor>& grads) {
  const PixelShadingArrays<T> a = pixel_shading_arrays<T>(in);
  const T* g_rgba = grad_rgba.data_ptr<T>();
  // d(loss)/d(interpolated attributes) per pixel, [B,P,A]; only covered pixels are written and read.
  const at::Tensor attribute_grads = at::empty({a.batch * a.pixels, a.channels}, in.vertex_attributes.options());
  T* g_pixel_diffuse = a.pixel_diffuse ? grads[1].data_ptr<T>() : nullptr;
  T* g_bary = grads[2].data_ptr<T>();
  phong_backward_in_blocks<T>(
      a.batch, a.pixels, a.lights, grads[3].data_ptr<T>(), grads[4].data_ptr<T>(), grads[5].data_ptr<T>(),
      grads[6].data_ptr<T>(), [&](int64_t b, int64_t first, int64_t last, const PhongPartials<T>& partial) {
        const Vec3<T> eye = load3(a.eye + 3 * b);
        for (int64_t p = first; p < last; ++p) {
          if (!pixel_covered(a.bary + 3 * p)) {
            g_bary[3 * p] = g_bary[3 * p + 1] = g_bary[3 * p + 2] = T(0);
            if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, Vec3<T>{0, 0, 0});
            continue;
          }
          const PixelCorners<T> corners = pixel_corners(a, p);
          const PhongPointGrad<T> g = phong_backward(
              pixel_phong_point(a, corners, p), eye, a.light_positions + 3 * a.lights * b,
              a.light_intensities + 3 * a.lights * b, static_cast<int>(a.lights), load3(g_rgba + 4 * p),
              partial.eye, partial.light_positions, partial.light_intensities, partial.ambient);
          T* row = attribute_grads.data_ptr<T>() + p * a.channels;
          pack_attribute_gradient(a, g, row);
          barycentric_gradient(corners, row, a.channels, g_bary + 3 * p);
          if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, g.diffuse);
        }
      });
  const int64_t num_triangles = in.triangles.size(0);
  at::Tensor corners = at::empty({a.batch, num_triangles * 3, a.channels}, in.vertex_attributes.options());
  accumulate_corner_gradients(attribute_grads.data_ptr<T>(), a.ids, a.bary, a.batch,
                              static_cast<int>(in.triangle_ids.size(1)), static_cast<int>(in.triangle_ids.size(2)),
                              num_triangles, a.channels, corners.data_ptr<T>());
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
