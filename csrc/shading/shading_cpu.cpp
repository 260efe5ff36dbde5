// CPU Phong kernels. Per-point work is parallel; see phong_blocks.h for the per-batch gradients.
#include "shading/shading.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "shading/phong_blocks.h"

namespace diffrender {
namespace {

constexpr int64_t kPointsPerBlock = 2048;

template <typename T>
void forward_impl(const PhongInputs& in, at::Tensor& out) {
  const PhongArrays<T> ptr = phong_arrays<T>(in);
  T* result = out.data_ptr<T>();
  at::parallel_for(0, ptr.batch * ptr.points, kPointsPerBlock, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ptr.points;
      store3(result + 3 * i, phong_forward(load_phong_point(ptr, i), load3(ptr.eye + 3 * b),
                                           ptr.light_positions + 3 * ptr.lights * b,
                                           ptr.light_intensities + 3 * ptr.lights * b,
                                           static_cast<int>(ptr.lights), load3(ptr.ambient + 3 * b)));
    }
  });
}

template <typename T>
void backward_impl(const PhongInputs& in, const at::Tensor& grad_out, std::vector<at::Tensor>& grads) {
  const PhongArrays<T> ptr = phong_arrays<T>(in);
  const T* g_out = grad_out.data_ptr<T>();
  T* g_pos = grads[0].data_ptr<T>();
  T* g_nrm = grads[1].data_ptr<T>();
  T* g_dif = grads[2].data_ptr<T>();
  T* g_spec = ptr.specular ? grads[3].data_ptr<T>() : nullptr;
  T* g_shin = ptr.specular ? grads[4].data_ptr<T>() : nullptr;
  phong_backward_in_blocks<T>(
      ptr.batch, ptr.points, ptr.lights, kPointsPerBlock, grads[5].data_ptr<T>(), grads[6].data_ptr<T>(),
      grads[7].data_ptr<T>(), grads[8].data_ptr<T>(), [&](int64_t b, int64_t first, int64_t last, const PhongPartials<T>& partial) {
        const Vec3<T> eye = load3(ptr.eye + 3 * b);
        for (int64_t i = first; i < last; ++i) {
          const PhongPointGrad<T> g = phong_backward(
              load_phong_point(ptr, i), eye, ptr.light_positions + 3 * ptr.lights * b,
              ptr.light_intensities + 3 * ptr.lights * b, static_cast<int>(ptr.lights), load3(g_out + 3 * i),
              partial.eye, partial.light_positions, partial.light_intensities, partial.ambient);
          store_phong_point_grad(g, i, g_pos, g_nrm, g_dif, g_spec, g_shin);
        }
      });
}

}  // namespace

void phong_shade_forward_cpu(const PhongInputs& in, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "phong_shade_forward_cpu",
                             [&] { forward_impl<scalar_t>(in, out); });
}

void phong_shade_backward_cpu(const PhongInputs& in, const at::Tensor& grad_out,
                              std::vector<at::Tensor>& grads) {
  AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "phong_shade_backward_cpu",
                             [&] { backward_impl<scalar_t>(in, grad_out, grads); });
}

}  // namespace diffrender
