// CPU Phong kernels. Per-point work is parallel; gradients of per-batch inputs (eye, lights,
// ambient) are summed per fixed block of points and then over blocks in order, so the bits do not
// depend on the thread count.
#include "shading/shading.h"

#include <ATen/Parallel.h>


namespace diffrender {
namespace {

constexpr int64_t kBlock = 2048;

template <typename T>
void forward_impl(const PhongInputs& in, at::Tensor& out) {
  const PhongArrays<T> ptr = phong_arrays<T>(in);
  T* result = out.data_ptr<T>();
  at::parallel_for(0, ptr.batch * ptr.points, kBlock, [&](int64_t begin, int64_t end) {
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
  const int64_t blocks_per_image = (ptr.points + kBlock - 1) / kBlock;
  // Per block: eye (3), light positions (3L), light intensities (3L), ambient (3).
  const int64_t partial_size = 6 + 6 * ptr.lights;
  std::vector<T> partials(ptr.batch * blocks_per_image * partial_size, T(0));
  at::parallel_for(0, ptr.batch * blocks_per_image, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t b = block / blocks_per_image;
      const int64_t first = b * ptr.points + (block % blocks_per_image) * kBlock;
      const int64_t last = std::min(first + kBlock, (b + 1) * ptr.points);
      T* partial = partials.data() + block * partial_size;
      const Vec3<T> eye = load3(ptr.eye + 3 * b);
      for (int64_t i = first; i < last; ++i) {
        const PhongPointGrad<T> g = phong_backward(
            load_phong_point(ptr, i), eye, ptr.light_positions + 3 * ptr.lights * b,
            ptr.light_intensities + 3 * ptr.lights * b, static_cast<int>(ptr.lights),
            load3(g_out + 3 * i), partial, partial + 3, partial + 3 + 3 * ptr.lights,
            partial + 3 + 6 * ptr.lights);
        store_phong_point_grad(g, i, g_pos, g_nrm, g_dif, g_spec, g_shin);
      }
    }
  });
  T* g_eye = grads[5].data_ptr<T>();
  T* g_lpos = grads[6].data_ptr<T>();
  T* g_lint = grads[7].data_ptr<T>();
  T* g_amb = grads[8].data_ptr<T>();
  for (int64_t b = 0; b < ptr.batch; ++b) {
    for (int64_t block = 0; block < blocks_per_image; ++block) {
      const T* partial = partials.data() + (b * blocks_per_image + block) * partial_size;
      for (int c = 0; c < 3; ++c) g_eye[3 * b + c] += partial[c];
      for (int64_t k = 0; k < 3 * ptr.lights; ++k) {
        g_lpos[3 * ptr.lights * b + k] += partial[3 + k];
        g_lint[3 * ptr.lights * b + k] += partial[3 + 3 * ptr.lights + k];
      }
      for (int c = 0; c < 3; ++c) g_amb[3 * b + c] += partial[3 + 6 * ptr.lights + c];
    }
  }
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
