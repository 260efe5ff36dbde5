// CUDA Phong kernels, sharing phong_math.h with the CPU. Per-batch gradients (eye, lights,
// ambient) are reduced in a fixed order (per-point rows, then fixed chunks, then chunks in order),
// so every run gives the same bits.
#include "common/cuda_scratch.cuh"
#include "shading/phong_math.h"
#include "shading/shading_cuda.h"

namespace diffrender {
namespace {

constexpr int64_t kChunk = 1024;

template <typename T>
__global__ void shade(PhongArrays<T> in, T* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= in.batch * in.points) return;
  const int64_t b = i / in.points;
  store3(out + 3 * i, phong_forward(load_phong_point(in, i), load3(in.eye + 3 * b), in.light_positions + 3 * in.lights * b,
                                    in.light_intensities + 3 * in.lights * b, static_cast<int>(in.lights),
                                    load3(in.ambient + 3 * b)));
}

// Per point: its own gradients, plus its row of per-batch contributions in `rows` [B*N, K].
template <typename T>
__global__ void shade_backward(PhongArrays<T> in, const T* grad_out, T* g_pos, T* g_nrm, T* g_dif, T* g_spec,
                               T* g_shin, T* rows, int64_t row_size) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= in.batch * in.points) return;
  const int64_t b = i / in.points;
  T* row = rows + i * row_size;
  for (int64_t k = 0; k < row_size; ++k) row[k] = T(0);
  const PhongPointGrad<T> g = phong_backward(load_phong_point(in, i), load3(in.eye + 3 * b),
                                             in.light_positions + 3 * in.lights * b,
                                             in.light_intensities + 3 * in.lights * b, static_cast<int>(in.lights),
                                             load3(grad_out + 3 * i), row, row + 3, row + 3 + 3 * in.lights,
                                             row + 3 + 6 * in.lights);
  store_phong_point_grad(g, i, g_pos, g_nrm, g_dif, g_spec, g_shin);
}

// partial[b, chunk, k] = Σ rows over the chunk's points, in order.
template <typename T>
__global__ void sum_chunks(const T* rows, int64_t batch, int64_t points, int64_t row_size, int64_t chunks, T* partial) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= batch * chunks * row_size) return;
  const int64_t k = i % row_size, chunk = (i / row_size) % chunks, b = i / (row_size * chunks);
  const int64_t first = chunk * kChunk, last = min(first + kChunk, points);
  T sum = T(0);
  for (int64_t n = first; n < last; ++n) sum += rows[(b * points + n) * row_size + k];
  partial[i] = sum;
}

template <typename T>
__global__ void sum_partials(const T* partial, int64_t batch, int64_t lights, int64_t row_size, int64_t chunks,
                             T* g_eye, T* g_lpos, T* g_lint, T* g_amb) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= batch * row_size) return;
  const int64_t b = i / row_size, k = i % row_size;
  T sum = T(0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[(b * chunks + chunk) * row_size + k];
  // Row layout: eye (3), light positions (3L), light intensities (3L), ambient (3).
  if (k < 3) g_eye[3 * b + k] = sum;
  else if (k < 3 + 3 * lights) g_lpos[3 * lights * b + (k - 3)] = sum;
  else if (k < 3 + 6 * lights) g_lint[3 * lights * b + (k - 3 - 3 * lights)] = sum;
  else g_amb[3 * b + (k - 3 - 6 * lights)] = sum;
}

}  // namespace

template <typename T>
cudaError_t phong_forward_cuda(const PhongArrays<T>& in, T* out, cudaStream_t stream) {
  const int64_t total = in.batch * in.points;
  if (total > 0) shade<T><<<blocks_for(total), kThreads, 0, stream>>>(in, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t phong_backward_cuda(const PhongArrays<T>& in, const T* grad_out, T* const grads[9],
                                cudaStream_t stream) {
  const int64_t total = in.batch * in.points, row_size = 6 + 6 * in.lights;
  const int64_t chunks = (in.points + kChunk - 1) / kChunk;
  if (total == 0) return cudaSuccess;
  Scratch<T> rows(total * row_size, stream), partial(in.batch * chunks * row_size, stream);
  DR_CUDA_TRY(rows.status());
  DR_CUDA_TRY(partial.status());
  shade_backward<T><<<blocks_for(total), kThreads, 0, stream>>>(in, grad_out, grads[0], grads[1], grads[2], grads[3],
                                                                grads[4], rows.get(), row_size);
  sum_chunks<T><<<blocks_for(in.batch * chunks * row_size), kThreads, 0, stream>>>(
      rows.get(), in.batch, in.points, row_size, chunks, partial.get());
  sum_partials<T><<<blocks_for(in.batch * row_size), kThreads, 0, stream>>>(
      partial.get(), in.batch, in.lights, row_size, chunks, grads[5], grads[6], grads[7], grads[8]);
  return cudaGetLastError();
}

template cudaError_t phong_forward_cuda<float>(const PhongArrays<float>&, float*, cudaStream_t);
template cudaError_t phong_forward_cuda<double>(const PhongArrays<double>&, double*, cudaStream_t);
template cudaError_t phong_backward_cuda<float>(const PhongArrays<float>&, const float*, float* const[9],
                                                cudaStream_t);
template cudaError_t phong_backward_cuda<double>(const PhongArrays<double>&, const double*, double* const[9],
                                                 cudaStream_t);

}  // namespace diffrender
