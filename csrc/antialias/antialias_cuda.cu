// CUDA kernels of the analytic antialiasing, sharing antialias_math.h with the CPU kernels: one
// thread per pixel analyses the pixel's two pairs, then one thread per pixel gathers the pairs
// that touch it (forward blend and colour gradient), so no output is written twice. Vertex
// gradients go through the ordered (sort-based) scatter, so the result is the same on every run.
#include "antialias/antialias_cuda.h"
#include "common/cuda_scratch.cuh"

namespace diffrender {
namespace {

struct PixelIndex {
  int64_t b;
  int ix, iy;
};

__device__ __forceinline__ PixelIndex pixel_of(int64_t p, int width, int height) {
  const int64_t row = p / width;
  return {row / height, static_cast<int>(p % width), static_cast<int>(row % height)};
}

template <typename T>
__global__ void analyze_pairs(AntialiasBuffers<T> in, int64_t total, T* pair_alpha, int32_t* pair_code) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const PixelIndex q = pixel_of(p, in.width, in.height);
  analyze_pixel_pairs(in, q.b, q.ix, q.iy, pair_alpha + 2 * p, pair_code + 2 * p);
}

template <typename T>
__global__ void blend_pixels(AntialiasBuffers<T> in, int64_t total, const T* pair_alpha, T* out) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const PixelIndex q = pixel_of(p, in.width, in.height);
  blend_pixel(in, pair_alpha, q.b, q.ix, q.iy, out);
}

template <typename T>
__global__ void color_grads(AntialiasBuffers<T> in, int64_t total, const T* pair_alpha, const T* grad_out,
                            T* grad_color) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const PixelIndex q = pixel_of(p, in.width, in.height);
  color_grad_pixel(in, pair_alpha, grad_out, q.b, q.ix, q.iy, grad_color);
}

// Four rows per pixel (two pairs, two edge vertices each); pairs that move no vertex get the
// sentinel key B·V, which the scatter ignores.
template <typename T>
__global__ void vertex_rows(AntialiasBuffers<T> in, int64_t total, const T* pair_alpha, const int32_t* pair_code,
                            const T* grad_out, int64_t* keys, T* values) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const PixelIndex q = pixel_of(p, in.width, in.height);
  const int64_t sentinel = in.batch * in.num_vertices;
  for (int slot = 0; slot < 2; ++slot) {
    int64_t k[2];
    T r[2][4];
    const bool moves = pair_vertex_rows(in, pair_alpha, pair_code, grad_out, q.b, q.ix, q.iy, slot, k, r);
    for (int i = 0; i < 2; ++i) {
      const int64_t row = 4 * p + 2 * slot + i;
      keys[row] = moves ? k[i] : sentinel;
      for (int c = 0; c < 4; ++c) values[4 * row + c] = moves ? r[i][c] : T(0);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t antialias_forward_cuda(const AntialiasBuffers<T>& in, T* out, T* pair_alpha, int32_t* pair_code,
                                   cudaStream_t stream) {
  const int64_t total = in.batch * int64_t(in.height) * in.width;
  if (total == 0) return cudaSuccess;
  analyze_pairs<T><<<blocks_for(total), kThreads, 0, stream>>>(in, total, pair_alpha, pair_code);
  DR_CUDA_TRY(cudaGetLastError());
  blend_pixels<T><<<blocks_for(total), kThreads, 0, stream>>>(in, total, pair_alpha, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t antialias_backward_cuda(const AntialiasBuffers<T>& in, const T* pair_alpha, const int32_t* pair_code,
                                    const T* grad_out, T* grad_color, T* grad_clip, cudaStream_t stream) {
  const int64_t total = in.batch * int64_t(in.height) * in.width;
  if (total == 0) return cudaSuccess;
  color_grads<T><<<blocks_for(total), kThreads, 0, stream>>>(in, total, pair_alpha, grad_out, grad_color);
  DR_CUDA_TRY(cudaGetLastError());
  Scratch<int64_t> keys(4 * total, stream);
  Scratch<T> values(16 * total, stream);
  DR_CUDA_TRY(keys.status());
  DR_CUDA_TRY(values.status());
  vertex_rows<T><<<blocks_for(total), kThreads, 0, stream>>>(in, total, pair_alpha, pair_code, grad_out, keys.get(),
                                                             values.get());
  DR_CUDA_TRY(cudaGetLastError());
  return ordered_scatter_add(keys.get(), values.get(), 4 * total, 4, in.batch * in.num_vertices, grad_clip, stream);
}

#define DR_INSTANTIATE(T)                                                                                      \
  template cudaError_t antialias_forward_cuda<T>(const AntialiasBuffers<T>&, T*, T*, int32_t*, cudaStream_t);  \
  template cudaError_t antialias_backward_cuda<T>(const AntialiasBuffers<T>&, const T*, const int32_t*, const T*, \
                                                  T*, T*, cudaStream_t);
DR_INSTANTIATE(float)
DR_INSTANTIATE(double)

}  // namespace diffrender
