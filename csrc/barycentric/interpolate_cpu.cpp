// CPU kernels interpolating per-vertex attributes with the rasterizer's barycentrics.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "barycentric/barycentric.h"
#include "barycentric/won_pixel_sums.h"
#include "common/corner_scatter.h"

namespace diffrender {
namespace {

template <typename T>
void forward_impl(const at::Tensor& attributes, const at::Tensor& triangles, const at::Tensor& ids,
                  const at::Tensor& bary, at::Tensor& out) {
  const int64_t batch = attributes.size(0), num_vertices = attributes.size(1), channels = attributes.size(2);
  const int64_t pixels = ids.size(1) * ids.size(2);
  const T* attr = attributes.data_ptr<T>();
  const int64_t* tris = triangles.data_ptr<int64_t>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const T* b = bary.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, batch * pixels, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* a = attr + (p / pixels) * num_vertices * channels;
      const int64_t* t = tris + 3 * id[p];
      const T* a0 = a + t[0] * channels;
      const T* a1 = a + t[1] * channels;
      const T* a2 = a + t[2] * channels;
      const T b0 = b[3 * p], b1 = b[3 * p + 1], b2 = b[3 * p + 2];
      for (int64_t c = 0; c < channels; ++c) o[p * channels + c] = b0 * a0[c] + b1 * a1[c] + b2 * a2[c];
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& attributes, const at::Tensor& triangles,
                   const at::Tensor& ids, const at::Tensor& bary, at::Tensor& grad_attributes,
                   at::Tensor& grad_bary) {
  const int64_t batch = attributes.size(0), num_vertices = attributes.size(1), channels = attributes.size(2);
  const int height = static_cast<int>(ids.size(1)), width = static_cast<int>(ids.size(2));
  const int64_t pixels = int64_t(height) * width, num_triangles = triangles.size(0);
  const T* attr = attributes.data_ptr<T>();
  const int64_t* tris = triangles.data_ptr<int64_t>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const T* b = bary.data_ptr<T>();
  const T* g = grad_out.data_ptr<T>();
  T* gb = grad_bary.data_ptr<T>();
  // d(out)/d(b_k) = attr[tri[k]]; ids were checked on every pixel, covered or not.
  auto barycentric_grad = [&](int64_t p) {
    const T* a = attr + (p / pixels) * num_vertices * channels;
    for (int k = 0; k < 3; ++k) {
      const T* ak = a + tris[3 * id[p] + k] * channels;
      T sum = T(0);
      for (int64_t c = 0; c < channels; ++c) sum += g[p * channels + c] * ak[c];
      gb[3 * p + k] = sum;
    }
  };
  const WonTriangleSums<T> corners = sum_over_won_pixels(
      id, b, batch, height, width, num_triangles, 3 * channels,
      [&](const WonPixel<T>& won) {
        barycentric_grad(won.pixel);
        const T* gp = g + won.pixel * channels;
        for (int k = 0; k < 3; ++k)
          for (int64_t c = 0; c < channels; ++c) won.sum[k * channels + c] += won.weights[k] * gp[c];
      },
      barycentric_grad);
  add_corners_to_vertices(corners.sums.data(), corners.keys, tris, batch,
                          num_triangles, num_vertices, channels, grad_attributes.data_ptr<T>());
}

}  // namespace

void interpolate_forward_cpu(const at::Tensor& attributes, const at::Tensor& triangles,
                             const at::Tensor& triangle_ids, const at::Tensor& barycentrics, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(attributes.scalar_type(), "interpolate_forward_cpu", [&] {
    forward_impl<scalar_t>(attributes, triangles, triangle_ids, barycentrics, out);
  });
}

void interpolate_backward_cpu(const at::Tensor& grad_out, const at::Tensor& attributes,
                              const at::Tensor& triangles, const at::Tensor& triangle_ids,
                              const at::Tensor& barycentrics, at::Tensor& grad_attributes, at::Tensor& grad_bary) {
  AT_DISPATCH_FLOATING_TYPES(attributes.scalar_type(), "interpolate_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_out, attributes, triangles, triangle_ids, barycentrics, grad_attributes, grad_bary);
  });
}

}  // namespace diffrender
