// CUDA texture sampling, sharing texture_math.h with the CPU kernels: one thread per pixel. The
// texture gradient goes out as one row per footprint corner (pixel-major) through the ordered,
// sort-based scatter, so every texel sums its contributions in pixel order on every run, as on
// the CPU.
#include "common/cuda_scratch.cuh"
#include "texture/texture_cuda.h"

namespace diffrender {
namespace {

template <typename T>
__global__ void sample(SamplePixels<T> pixels, MipPyramid mips, const T* levels, int64_t total, T* out) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  sample_pixel(pixel_footprint(pixels, mips, p), mips.channels, levels, out + p * mips.channels);
}

// The uv gradient (unless grad_uv is null), and the texel rows of the scatter (unless keys is
// null): corner j of pixel p is row kFootprintCorners·p + j, keyed by its texel; unused corners
// get the sentinel key `texels`.
template <typename T>
__global__ void sample_backward(SamplePixels<T> pixels, MipPyramid mips, const T* levels, int64_t total,
                                int64_t texels, const T* grad_out, T* grad_uv, int64_t* keys, T* values) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const PixelFootprint<T> f = pixel_footprint(pixels, mips, p);
  const T* grad = grad_out + p * mips.channels;
  if (grad_uv) sample_pixel_uv_grad(f, mips, levels, grad, grad_uv + 2 * p);
  if (!keys) return;
  for (int j = 0; j < kFootprintCorners; ++j) {
    const int64_t row = kFootprintCorners * p + j;
    const bool used = j < 4 * f.count;
    keys[row] = used ? f.element[j] / mips.channels : texels;
    for (int c = 0; c < mips.channels; ++c) values[row * mips.channels + c] = used ? f.weight[j] * grad[c] : T(0);
  }
}

}  // namespace

template <typename T>
cudaError_t texture_sample_forward_cuda(const SamplePixels<T>& pixels, const MipPyramid& mips, const T* levels,
                                        T* out, cudaStream_t stream) {
  const int64_t total = pixels.batch * pixels.pixels_per_image;
  if (total == 0) return cudaSuccess;
  sample<T><<<blocks_for(total), kThreads, 0, stream>>>(pixels, mips, levels, total, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t texture_sample_backward_cuda(const SamplePixels<T>& pixels, const MipPyramid& mips, const T* levels,
                                         const T* grad_out, T* grad_levels, T* grad_uv, cudaStream_t stream) {
  const int64_t total = pixels.batch * pixels.pixels_per_image;
  if (total == 0) return cudaSuccess;
  const int64_t texels = pyramid_texels(mips);
  const int64_t rows = grad_levels ? kFootprintCorners * total : 0;
  Scratch<int64_t> keys(rows, stream);
  Scratch<T> values(rows * mips.channels, stream);
  DR_CUDA_TRY(keys.status());
  DR_CUDA_TRY(values.status());
  sample_backward<T><<<blocks_for(total), kThreads, 0, stream>>>(pixels, mips, levels, total, texels, grad_out,
                                                                 grad_uv, keys.get(), values.get());
  DR_CUDA_TRY(cudaGetLastError());
  if (!grad_levels) return cudaSuccess;
  return ordered_scatter_add(keys.get(), values.get(), rows, mips.channels, texels, grad_levels, stream);
}

#define DR_INSTANTIATE(T)                                                                                   \
  template cudaError_t texture_sample_forward_cuda<T>(const SamplePixels<T>&, const MipPyramid&, const T*, T*, \
                                                      cudaStream_t);                                        \
  template cudaError_t texture_sample_backward_cuda<T>(const SamplePixels<T>&, const MipPyramid&, const T*,   \
                                                       const T*, T*, T*, cudaStream_t);
DR_INSTANTIATE(float)
DR_INSTANTIATE(double)

}  // namespace diffrender
