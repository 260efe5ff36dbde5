// CUDA Phong kernels, sharing phong_math.h with the CPU. Per-batch gradients (eye, lights,
// ambient) are reduced in a fixed order (per-point rows, then fixed chunks, then chunks in order),
// so every run gives the same bits.
#include "common/cuda_scratch.cuh"
#include "shading/phong_math.h"
#include "shading/pixel_shading_math.h"
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


template <typename T>
__global__ void shade_pixels(PixelShadingArrays<T> a, T* rgba) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= a.batch * a.pixels) return;
  T* o = rgba + 4 * p;
  if (!pixel_covered(a.bary + 3 * p)) {
    o[0] = o[1] = o[2] = o[3] = T(0);
    return;
  }
  const int64_t b = p / a.pixels;
  store3(o, phong_forward(pixel_phong_point(a, pixel_corners(a, p), p), load3(a.eye + 3 * b),
                          a.light_positions + 3 * a.lights * b, a.light_intensities + 3 * a.lights * b,
                          static_cast<int>(a.lights), load3(a.ambient + 3 * b)));
  o[3] = T(1);
}

// Per pixel: d/d(barycentrics), d/d(pixel diffuse), its row of per-batch contributions, and
// b_k · d/d(attributes) for each corner, keyed by vertex for ordered_scatter_add (uncovered pixels
// get keys past the end, which it ignores).
template <typename T>
__global__ void shade_pixels_backward(PixelShadingArrays<T> a, PixelGradient<T> grad_rgba, T* g_bary, T* g_pixel_diffuse,
                                      T* rows, int64_t row_size, int64_t* keys, T* contributions) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= a.batch * a.pixels) return;
  const int64_t b = p / a.pixels;
  T* row = rows + p * row_size;
  for (int64_t k = 0; k < row_size; ++k) row[k] = T(0);
  const T* weights = a.bary + 3 * p;
  if (!pixel_covered(weights)) {
    for (int k = 0; k < 3; ++k) {
      g_bary[3 * p + k] = T(0);
      keys[3 * p + k] = a.batch * a.num_vertices;
    }
    if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, Vec3<T>{0, 0, 0});
    return;
  }
  const PixelCorners<T> corners = pixel_corners(a, p);
  const PhongPointGrad<T> g = phong_backward(
      pixel_phong_point(a, corners, p), load3(a.eye + 3 * b), a.light_positions + 3 * a.lights * b,
      a.light_intensities + 3 * a.lights * b, static_cast<int>(a.lights), load_rgb_gradient(grad_rgba, p), row, row + 3,
      row + 3 + 3 * a.lights, row + 3 + 6 * a.lights);
  T attribute_grad[kMaxPixelChannels];
  pack_attribute_gradient(a, g, attribute_grad);
  barycentric_gradient(corners, attribute_grad, a.channels, g_bary + 3 * p);
  if (g_pixel_diffuse) store3(g_pixel_diffuse + 3 * p, g.diffuse);
  const int64_t* t = a.triangles + 3 * a.ids[p];
  for (int k = 0; k < 3; ++k) {
    keys[3 * p + k] = b * a.num_vertices + t[k];
    for (int c = 0; c < a.channels; ++c) contributions[(3 * p + k) * a.channels + c] = weights[k] * attribute_grad[c];
  }
}

// Sums per-point rows [B*N, 6+6L] of per-batch contributions into grads {eye, light positions,
// light intensities, ambient}, through fixed chunks so the order never changes.
template <typename T>
cudaError_t reduce_batch_rows(const T* rows, int64_t batch, int64_t points, int64_t lights, T* const grads[4],
                              cudaStream_t stream) {
  const int64_t row_size = 6 + 6 * lights, chunks = (points + kChunk - 1) / kChunk;
  Scratch<T> partial(batch * chunks * row_size, stream);
  DR_CUDA_TRY(partial.status());
  sum_chunks<T><<<blocks_for(batch * chunks * row_size), kThreads, 0, stream>>>(rows, batch, points, row_size,
                                                                                chunks, partial.get());
  sum_partials<T><<<blocks_for(batch * row_size), kThreads, 0, stream>>>(partial.get(), batch, lights, row_size,
                                                                         chunks, grads[0], grads[1], grads[2],
                                                                         grads[3]);
  return cudaGetLastError();
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
  if (total == 0) return cudaSuccess;
  Scratch<T> rows(total * row_size, stream);
  DR_CUDA_TRY(rows.status());
  shade_backward<T><<<blocks_for(total), kThreads, 0, stream>>>(in, grad_out, grads[0], grads[1], grads[2], grads[3],
                                                                grads[4], rows.get(), row_size);
  DR_CUDA_TRY(cudaGetLastError());
  return reduce_batch_rows(rows.get(), in.batch, in.points, in.lights, grads + 5, stream);
}

template <typename T>
cudaError_t shade_pixels_forward_cuda(const PixelShadingArrays<T>& in, T* rgba, cudaStream_t stream) {
  const int64_t total = in.batch * in.pixels;
  if (total > 0) shade_pixels<T><<<blocks_for(total), kThreads, 0, stream>>>(in, rgba);
  return cudaGetLastError();
}

template <typename T>
cudaError_t shade_pixels_backward_cuda(const PixelShadingArrays<T>& in, const PixelGradient<T>& grad_rgba,
                                       T* const grads[7],
                                       cudaStream_t stream) {
  const int64_t total = in.batch * in.pixels, row_size = 6 + 6 * in.lights;
  if (total == 0) return cudaSuccess;
  Scratch<T> rows(total * row_size, stream), contributions(3 * total * in.channels, stream);
  Scratch<int64_t> keys(3 * total, stream);
  DR_CUDA_TRY(rows.status());
  DR_CUDA_TRY(contributions.status());
  DR_CUDA_TRY(keys.status());
  shade_pixels_backward<T><<<blocks_for(total), kThreads, 0, stream>>>(
      in, grad_rgba, grads[2], grads[1], rows.get(), row_size, keys.get(), contributions.get());
  DR_CUDA_TRY(cudaGetLastError());
  DR_CUDA_TRY(ordered_scatter_add(keys.get(), contributions.get(), 3 * total, in.channels,
                                  in.batch * in.num_vertices, grads[0], stream));
  return reduce_batch_rows(rows.get(), in.batch, in.pixels, in.lights, grads + 3, stream);
}

template cudaError_t phong_forward_cuda<float>(const PhongArrays<float>&, float*, cudaStream_t);
template cudaError_t phong_forward_cuda<double>(const PhongArrays<double>&, double*, cudaStream_t);
template cudaError_t phong_backward_cuda<float>(const PhongArrays<float>&, const float*, float* const[9],
                                                cudaStream_t);
template cudaError_t phong_backward_cuda<double>(const PhongArrays<double>&, const double*, double* const[9],
                                                 cudaStream_t);
template cudaError_t shade_pixels_forward_cuda<float>(const PixelShadingArrays<float>&, float*, cudaStream_t);
template cudaError_t shade_pixels_forward_cuda<double>(const PixelShadingArrays<double>&, double*, cudaStream_t);
template cudaError_t shade_pixels_backward_cuda<float>(const PixelShadingArrays<float>&,
                                                       const PixelGradient<float>&, float* const[7], cudaStream_t);
template cudaError_t shade_pixels_backward_cuda<double>(const PixelShadingArrays<double>&,
                                                        const PixelGradient<double>&, double* const[7], cudaStream_t);

}  // namespace diffrender
