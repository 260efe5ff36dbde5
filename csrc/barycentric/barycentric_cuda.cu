// CUDA kernels of the barycentric rasterizer, sharing barycentric_math.h with the CPU kernels.
// Forward: triangles are binned into 16×16 tiles, then one thread block rasterizes each tile with
// triangles staged in shared memory. Each pixel keeps the smallest depth, ties to the highest
// triangle index: the same answer as the CPU's in-order z-test, whatever order the bins hold.
// Backward: per-pixel gradients are scattered to vertices with an ordered (sort-based) sum, so
// the result is the same on every run.
#include "barycentric/barycentric_cuda.h"
#include "barycentric/barycentric_math.h"
#include "common/cuda_scratch.cuh"
#include "common/cuda_tiles.cuh"

namespace diffrender {
namespace {

template <typename T>
__global__ void setup_and_count(const T* clip, const int64_t* triangles, int64_t num_vertices, int64_t num_triangles,
                                int width, int height, TileGrid grid, TriangleSetup<T>* setups,
                                int64_t* tile_counts) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= grid.batch * num_triangles) return;
  const T* v = clip + (i / num_triangles) * num_vertices * 4;
  const int64_t* t = triangles + (i % num_triangles) * 3;
  TriangleSetup<T>& s = setups[i];
  setup_triangle(v + 4 * t[0], v + 4 * t[1], v + 4 * t[2], width, height, s);
  count_tiles(s, i / num_triangles, grid, tile_counts);
}

template <typename T>
__global__ void rasterize_tiles(const TriangleSetup<T>* setups, int64_t num_triangles, TileGrid grid,
                                const int64_t* offsets, const int32_t* entries, int width, int height, int64_t* ids,
                                T* bary, T* zbuf) {
  __shared__ TriangleSetup<T> staged[kTile * kTile];
  __shared__ int32_t staged_ids[kTile * kTile];
  const TilePixel t = tile_pixel(grid);
  const int ix = t.ix, iy = t.iy;
  const bool in_image = ix < width && iy < height;
  const T px = pixel_center_ndc<T>(ix, width), py = pixel_center_ndc<T>(iy, height);
  T best_z = T(0), best_b[3] = {T(0), T(0), T(0)};
  int32_t best_tri = -1;
  for_each_binned_triangle<kTile * kTile>(
      t, offsets, entries, setups + t.image * num_triangles, staged, staged_ids, in_image,
      [&](const TriangleSetup<T>& s, int32_t tri) {
        if (ix < s.x_min || ix > s.x_max || iy < s.y_min || iy > s.y_max) return;
        T e[3];
        edge_values(s, px, py, e);
        if (!is_inside(e)) return;
        T bk[3];
        const T z = barycentrics_and_depth(s, e, bk);
        if (!in_depth_range(z)) return;
        if (best_tri < 0 || z < best_z || (z == best_z && tri > best_tri)) {
          best_tri = tri;
          best_z = z;
          best_b[0] = bk[0]; best_b[1] = bk[1]; best_b[2] = bk[2];
        }
      });
  if (!in_image) return;
  const int64_t p = (t.image * height + iy) * int64_t(width) + ix;
  ids[p] = best_tri < 0 ? 0 : best_tri;
  zbuf[p] = best_tri < 0 ? T(1) : best_z;
  for (int k = 0; k < 3; ++k) bary[3 * p + k] = best_b[k];
}

template <typename T>
__global__ void pixel_vertex_grads(const T* clip, const int64_t* triangles, int64_t num_vertices, int64_t pixels,
                                   int64_t total, int width, int height, const int64_t* ids, const T* bary,
                                   const T* grad_bary, int64_t* keys, T* contributions) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const int64_t b = p / pixels;
  const T* bp = bary + 3 * p;
  const int64_t* t = triangles + 3 * ids[p];
  const int64_t sentinel = (total / pixels) * num_vertices;
  if (bp[0] + bp[1] + bp[2] < T(0.5)) {
    for (int k = 0; k < 3; ++k) keys[3 * p + k] = sentinel;
    return;
  }
  const T* v = clip + b * num_vertices * 4;
  TriangleSetup<T> s;
  setup_triangle(v + 4 * t[0], v + 4 * t[1], v + 4 * t[2], width, height, s);
  T g[3][3];
  barycentric_vertex_grads(s, bp, grad_bary + 3 * p, g);
  for (int k = 0; k < 3; ++k) {
    keys[3 * p + k] = b * num_vertices + t[k];
    T* out = contributions + 4 * (3 * p + k);
    out[0] = g[k][0]; out[1] = g[k][1]; out[2] = T(0); out[3] = g[k][2];
  }
}

template <typename T>
__global__ void interpolate_pixels(const T* attributes, const int64_t* triangles, int64_t num_vertices,
                                   int64_t channels, int64_t pixels, int64_t total, const int64_t* ids,
                                   const T* bary, T* out) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const T* a = attributes + (p / pixels) * num_vertices * channels;
  const int64_t* t = triangles + 3 * ids[p];
  const T* b = bary + 3 * p;
  for (int64_t c = 0; c < channels; ++c)
    out[p * channels + c] = b[0] * a[t[0] * channels + c] + b[1] * a[t[1] * channels + c] + b[2] * a[t[2] * channels + c];
}

template <typename T>
__global__ void interpolate_pixel_grads(const T* grad_out, const T* attributes, const int64_t* triangles,
                                        int64_t num_vertices, int64_t channels, int64_t pixels, int64_t total,
                                        const int64_t* ids, const T* bary, T* grad_bary, int64_t* keys,
                                        T* contributions) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const int64_t b = p / pixels;
  const T* a = attributes + b * num_vertices * channels;
  const int64_t* t = triangles + 3 * ids[p];
  const T* bp = bary + 3 * p;
  const T* g = grad_out + p * channels;
  const bool covered = bp[0] + bp[1] + bp[2] >= T(0.5);
  for (int k = 0; k < 3; ++k) {
    T sum = T(0);
    for (int64_t c = 0; c < channels; ++c) {
      sum += g[c] * a[t[k] * channels + c];
      contributions[(3 * p + k) * channels + c] = bp[k] * g[c];
    }
    grad_bary[3 * p + k] = sum;
    keys[3 * p + k] = covered ? b * num_vertices + t[k] : (total / pixels) * num_vertices;
  }
}

}  // namespace

template <typename T>
cudaError_t rasterize_forward_cuda(const T* clip, const int64_t* triangles, int64_t batch, int64_t num_vertices,
                                   int64_t num_triangles, int width, int height, int64_t* ids, T* bary, T* zbuf,
                                   cudaStream_t stream) {
  const TileGrid grid = tile_grid(width, height, batch);
  return with_tile_bins<TriangleSetup<T>>(
      grid, num_triangles, stream,
      [&](TriangleSetup<T>* setups, int64_t* counts) {
        setup_and_count<T><<<blocks_for(batch * num_triangles), kThreads, 0, stream>>>(
            clip, triangles, num_vertices, num_triangles, width, height, grid, setups, counts);
      },
      [&](const TriangleSetup<T>* setups, const int64_t* offsets, const int32_t* entries, int64_t) {
        rasterize_tiles<T><<<static_cast<unsigned>(grid.count()), dim3(kTile, kTile), 0, stream>>>(
            setups, num_triangles, grid, offsets, entries, width, height, ids, bary, zbuf);
        return cudaGetLastError();
      });
}

template <typename T>
cudaError_t rasterize_backward_cuda(const T* clip, const int64_t* triangles, int64_t batch, int64_t num_vertices,
                                    int64_t num_triangles, int width, int height, const int64_t* ids, const T* bary,
                                    const T* grad_bary, T* grad_clip, cudaStream_t stream) {
  const int64_t pixels = int64_t(width) * height, total = batch * pixels;
  if (total == 0) return cudaSuccess;
  Scratch<int64_t> keys(3 * total, stream);
  Scratch<T> contributions(12 * total, stream);
  DR_CUDA_TRY(keys.status());
  DR_CUDA_TRY(contributions.status());
  pixel_vertex_grads<T><<<blocks_for(total), kThreads, 0, stream>>>(clip, triangles, num_vertices, pixels, total,
                                                                    width, height, ids, bary, grad_bary, keys.get(),
                                                                    contributions.get());
  DR_CUDA_TRY(cudaGetLastError());
  return ordered_scatter_add(keys.get(), contributions.get(), 3 * total, 4, batch * num_vertices, grad_clip, stream);
}

template <typename T>
cudaError_t interpolate_forward_cuda(const T* attributes, const int64_t* triangles, int64_t batch,
                                     int64_t num_vertices, int64_t channels, int64_t pixels, const int64_t* ids,
                                     const T* bary, T* out, cudaStream_t stream) {
  const int64_t total = batch * pixels;
  if (total == 0) return cudaSuccess;
  interpolate_pixels<T><<<blocks_for(total), kThreads, 0, stream>>>(attributes, triangles, num_vertices, channels,
                                                                    pixels, total, ids, bary, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t interpolate_backward_cuda(const T* grad_out, const T* attributes, const int64_t* triangles,
                                      int64_t batch, int64_t num_vertices, int64_t channels, int64_t pixels,
                                      const int64_t* ids, const T* bary, T* grad_attributes, T* grad_bary,
                                      cudaStream_t stream) {
  const int64_t total = batch * pixels;
  if (total == 0) return cudaSuccess;
  Scratch<int64_t> keys(3 * total, stream);
  Scratch<T> contributions(3 * total * channels, stream);
  DR_CUDA_TRY(keys.status());
  DR_CUDA_TRY(contributions.status());
  interpolate_pixel_grads<T><<<blocks_for(total), kThreads, 0, stream>>>(
      grad_out, attributes, triangles, num_vertices, channels, pixels, total, ids, bary, grad_bary, keys.get(),
      contributions.get());
  DR_CUDA_TRY(cudaGetLastError());
  return ordered_scatter_add(keys.get(), contributions.get(), 3 * total, static_cast<int>(channels),
                             batch * num_vertices, grad_attributes, stream);
}

#define DR_INSTANTIATE(T)                                                                                      \
  template cudaError_t rasterize_forward_cuda<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, int, int,  \
                                                 int64_t*, T*, T*, cudaStream_t);                              \
  template cudaError_t rasterize_backward_cuda<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, int, int, \
                                                  const int64_t*, const T*, const T*, T*, cudaStream_t);       \
  template cudaError_t interpolate_forward_cuda<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, int64_t, \
                                                   const int64_t*, const T*, T*, cudaStream_t);                \
  template cudaError_t interpolate_backward_cuda<T>(const T*, const T*, const int64_t*, int64_t, int64_t,       \
                                                    int64_t, int64_t, const int64_t*, const T*, T*, T*,        \
                                                    cudaStream_t);
DR_INSTANTIATE(float)
DR_INSTANTIATE(double)

}  // namespace diffrender
