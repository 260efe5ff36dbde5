// CUDA kernels of the soft rasterizer, sharing soft_math.h with the CPU kernels (soft_cpu.cpp).
//
// Forward: triangles are binned into 16×16 tiles by their blurred bounding boxes (count, scan,
// fill), each tile's list is sorted by triangle index (the fill uses atomics, so its order is
// arbitrary), then one thread block per tile stages triangle setups in shared memory and each
// thread folds the tile's triangles into its pixel's running aggregates in index order. This is
// the CPU's per-pixel order, with the same row-span prefilter and the same early outs, so the two
// agree to rounding (exp and division may differ in the last bit) and every run gives the same bits.
//
// Backward: as on the CPU, nothing per (pixel, triangle) is stored untextured (memory
// O(pixels + F)). A per-pixel pass turns the saved aggregates into the few numbers each triangle
// needs. Then each triangle's blurred bounding box is cut into the CPU's walk chunks of whole rows
// (soft_walk_chunk_rows), and one thread per chunk walks it in raster order, recomputing the
// triangle's coverage, depth and colour at each pixel, and writes the chunk's per-corner gradients
// [3, 3+A]: a screen-sized triangle is walked by many threads, not one. The corners go to the
// vertices with ordered_scatter_add (stable sort by vertex, summed in (triangle, chunk) order).
// Textured, a first walk counts each chunk's texture-gradient records, so that the second writes
// them into an exactly sized buffer in the CPU's order (triangle, then pixel); soft_ops.cpp hands
// them to the texture op's sort-based scatter. No atomics anywhere: the same bits on every run.
#include "soft/soft_cuda.h"

#include "common/cuda_scratch.cuh"
#include "common/cuda_tiles.cuh"
#include "soft/soft_math.h"

namespace diffrender {
namespace {

// What each kernel needs to know of the settings besides SoftConstants.
struct SoftModes {
  int64_t channels;       // colour channels C
  int64_t attr_channels;  // attribute channels per vertex
  int alpha_mode;
  bool softmax;   // colour by the depth softmax (C > 0)
  bool hard_rgb;  // colour of the z-buffer winner (C > 0)
  bool lean;      // no attributes and Euclidean distances: soft_sample_distance suffices
};

template <typename T>
SoftModes make_modes(const SoftParams& params, int64_t channels, const SoftTexture<T>& tex) {
  SoftModes m;
  m.channels = channels;
  m.attr_channels = soft_attribute_channels(tex, channels);
  m.alpha_mode = params.aggr_alpha;
  m.softmax = channels > 0 && params.aggr_rgb == kSoftRgbSoftmax;
  m.hard_rgb = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  m.lean = channels == 0 && params.dist_func == kSoftDistEuclidean;
  return m;
}

// Whether the terms folded in so far fix the pixel's alpha and make its gradient zero (as in
// soft_cpu.cpp).
template <typename T>
__device__ __forceinline__ bool alpha_settled(int alpha_mode, T a2, T a3) {
  if (alpha_mode == kSoftAlphaProd) return a3 > T(0);
  if (alpha_mode == kSoftAlphaSum) return a2 > T(1);
  return a2 > T(0);
}

template <typename T>
__device__ __forceinline__ bool sample_pair(const SoftTriangle<T>& tri, T X, T Y, const SoftConstants<T>& c,
                                            bool lean, SoftSample<T>& s) {
  return (lean && !(tri.flags & kSoftCheckZ)) ? soft_sample_distance(tri, X, Y, c, s) : soft_sample(tri, X, Y, c, s);
}

// The number of walk chunks of each (batch item, triangle) i into counts[i], for i < items.
template <typename T>
__global__ void count_walk_chunks(const SoftTriangle<T>* setups, int64_t items, int64_t* counts) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < items) counts[i] = soft_walk_chunk_count(setups[i]);
}

// What the backward thread of walk chunk j knows: its (batch item b, triangle f), found by
// binary search in the running sum of the chunk counts chunk_offsets [B*F + 1], its rows
// [y_first, y_last], the triangle's setup and the attribute rows of its corners.
template <typename T>
struct WalkChunk {
  int64_t b, f;
  int y_first, y_last;
  SoftTriangle<T> tri;
  const T* corner[3];
  T vmax;  // no pair of the triangle has a larger softmax logit

  __device__ WalkChunk(const SoftTriangle<T>* setups, const int64_t* chunk_offsets, int64_t j, const int64_t* triangles,
                       const T* attributes, int64_t batch, int64_t num_vertices, int64_t num_triangles,
                       int64_t attr_channels, const SoftConstants<T>& c) {
    int64_t lo = 0, hi = batch * num_triangles;  // the first i with chunk_offsets[i] > j is in [1, B*F]
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (chunk_offsets[mid] <= j) lo = mid + 1; else hi = mid;
    }
    const int64_t item = lo - 1;
    b = item / num_triangles;
    f = item % num_triangles;
    tri = setups[item];
    soft_walk_chunk_rows(tri, static_cast<int>(j - chunk_offsets[item]), y_first, y_last);
    const T* batch_attr = attributes + b * num_vertices * attr_channels;
    for (int k = 0; k < 3; ++k) corner[k] = batch_attr + triangles[3 * f + k] * attr_channels;
    vmax = tri.zmax * c.inv_gamma;
  }

  // Whether pixel p's colour depends on the triangle: the depth softmax does not hide it there, or
  // it is the pixel's z-buffer winner. pr: the pixel's saved aggregates.
  __device__ bool colour_path(const T* pr, int64_t p, const int64_t* hard_ids, const SoftModes& modes) const {
    return modes.softmax ? vmax - pr[0] >= soft_softmax_cut<T>() : (modes.hard_rgb && hard_ids[p] == f);
  }

  // Visits the pairs (pixel, triangle) that the backward pass considers: the pixels of the chunk's
  // rows of the blurred box whose sample is kept, in raster order, as visit(pixel index, sample).
  template <typename Visit>
  __device__ void for_each_pair(const SoftConstants<T>& c, bool lean, Visit&& visit) const {
    const int64_t image_offset = b * int64_t(c.height) * c.width;
    for (int iy = y_first; iy <= y_last; ++iy) {
      const T Y = soft_pixel_center<T>(iy, c.height, c.scale_y);
      int lo, hi;
      soft_row_span(tri, Y, c, lo, hi);
      for (int ix = lo; ix <= hi; ++ix) {
        const T X = soft_pixel_center<T>(ix, c.width, c.scale_x);
        SoftSample<T> s;
        if (sample_pair(tri, X, Y, c, lean, s)) visit(image_offset + int64_t(iy) * c.width + ix, s);
      }
    }
  }
};

// Setup of every (batch item, triangle); with tile_counts, also counts the tiles each touches.
template <typename T>
__global__ void setup_and_count(const T* screen, const int64_t* triangles, int64_t num_vertices,
                                int64_t num_triangles, SoftConstants<T> c, TileGrid grid, SoftTriangle<T>* setups,
                                int64_t* tile_counts) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= grid.batch * num_triangles) return;
  const T* v = screen + (i / num_triangles) * num_vertices * 3;
  const int64_t* t = triangles + (i % num_triangles) * 3;
  SoftTriangle<T> s;
  soft_setup_triangle(v + 3 * t[0], v + 3 * t[1], v + 3 * t[2], c, s);
  setups[i] = s;
  if (tile_counts) count_tiles(s, i / num_triangles, grid, tile_counts);
}

// Triangles staged in shared memory per round: SoftTriangle<double> is 280 bytes, so 128 of them
// (35 KB) fit the 48 KB static limit; 256 floats take 37 KB.
template <typename T>
struct Stage {
  static constexpr int kCount = sizeof(T) == 4 ? kTile * kTile : kTile * kTile / 2;
};

// One block per tile, one thread per pixel: the forward loop of soft_cpu.cpp for one pixel, over
// the tile's triangles in index order.
template <typename T>
__global__ void __launch_bounds__(kTile * kTile)
    aggregate_tiles(const SoftTriangle<T>* setups, const int64_t* triangles, const T* attributes,
                    const T* background, SoftTexture<T> tex, int64_t num_vertices, int64_t num_triangles,
                    SoftConstants<T> c, SoftModes modes, TileGrid grid, const int64_t* offsets, const int32_t* entries,
                    T* image, T* aux, int64_t* hard_ids) {
  constexpr int kStage = Stage<T>::kCount;
  __shared__ SoftTriangle<T> staged[kStage];
  __shared__ int32_t staged_ids[kStage];
  const TilePixel t = tile_pixel(grid);
  const int64_t b = t.image;
  const int ix = t.ix, iy = t.iy;
  const int width = c.width, height = c.height;
  const bool in_image = ix < width && iy < height;
  const int64_t channels = modes.channels, stride = channels + 1;
  const bool softmax = modes.softmax, hard_rgb = modes.hard_rgb;
  const int alpha_mode = modes.alpha_mode;
  const T X = soft_pixel_center<T>(ix, width, c.scale_x), Y = soft_pixel_center<T>(iy, height, c.scale_y);
  const int64_t p = (b * height + iy) * int64_t(width) + ix;
  T* px = image + p * stride;
  // The running aggregates (aux channels 0-3, see kSoftAuxChannels).
  T a0 = softmax ? c.eps_logit : (hard_rgb ? T(-1) : T(0));
  T a1 = softmax ? T(1) : T(0);
  T a2 = alpha_mode == kSoftAlphaProd ? T(1) : T(0);
  T a3 = T(0);
  int64_t best = -1;
  if (in_image)
    for (int64_t ch = 0; ch < channels; ++ch) px[ch] = background[ch];
  const SoftTriangle<T>* image_setups = setups + b * num_triangles;
  const int64_t attr_channels = modes.attr_channels;
  const T* batch_attr = attributes + b * num_vertices * attr_channels;
  const T cut = soft_softmax_cut<T>();
  for_each_binned_triangle<kStage>(
      t, offsets, entries, image_setups, staged, staged_ids, in_image, [&](const SoftTriangle<T>& tri, int32_t f) {
        if (iy < tri.y_min || iy > tri.y_max || ix < tri.x_min || ix > tri.x_max) return;
        // Alpha settled and the softmax cannot see this triangle: nothing changes (as on the CPU).
        const T vmax = tri.zmax * c.inv_gamma;
        if (!hard_rgb && alpha_settled(alpha_mode, a2, a3) && (!softmax || vmax - a0 < cut)) return;
        int lo, hi;
        soft_row_span(tri, Y, c, lo, hi);
        if (ix < lo || ix > hi) return;
        SoftSample<T> s;
        if (!sample_pair(tri, X, Y, c, modes.lean, s)) return;
        T D, q;
        const bool saturated = soft_coverage(s, c, D, q);
        if (alpha_mode == kSoftAlphaProd) {
          if (saturated) a3 += T(1);
          else a2 *= q;
        } else if (alpha_mode == kSoftAlphaSum) {
          a2 += D;
        } else if (s.inside) {
          a2 = T(1);
        }
        if (!softmax && !hard_rgb) return;
        const T* corner[3] = {batch_attr + triangles[3 * int64_t(f)] * attr_channels,
                              batch_attr + triangles[3 * int64_t(f) + 1] * attr_channels,
                              batch_attr + triangles[3 * int64_t(f) + 2] * attr_channels};
        if (softmax) {
          // Online softmax: rescale the running sums when the maximum grows.
          const T v = s.z * c.inv_gamma;
          if (v > a0) {
            const T scale = exp(a0 - v);
            a1 *= scale;
            for (int64_t ch = 0; ch < channels; ++ch) px[ch] *= scale;
            a0 = v;
          }
          const T shifted = v - a0;
          const T u = shifted < cut ? T(0) : D * exp(shifted);
          if (u > T(0)) {
            T beta[3];
            soft_perspective_weights(tri, s, beta);
            const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, b, channels, beta, corner);
            a1 += u;
            for (int64_t ch = 0; ch < channels; ++ch)
              px[ch] += u * soft_pair_color(tex, footprint, beta, corner, channels, ch);
          }
        } else if (s.inside && s.z >= a0) {  // hard rgb; ties go to the later triangle
          T beta[3];
          soft_perspective_weights(tri, s, beta);
          const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, b, channels, beta, corner);
          a0 = s.z;
          best = f;
          for (int64_t ch = 0; ch < channels; ++ch)
            px[ch] = soft_pair_color(tex, footprint, beta, corner, channels, ch);
        }
      });
  if (!in_image) return;
  T* a = aux + p * kSoftAuxChannels;
  a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
  if (hard_rgb) hard_ids[p] = best;
  if (softmax) {
    const T inv = T(1) / a1;
    for (int64_t ch = 0; ch < channels; ++ch) px[ch] *= inv;
  }
  if (alpha_mode == kSoftAlphaProd) px[channels] = a3 > T(0) ? T(1) : T(1) - a2;
  else if (alpha_mode == kSoftAlphaSum) px[channels] = a2 < T(1) ? a2 : T(1);
  else px[channels] = a2;
}

// Per pixel: prep = {m, 1/S, g·I, alpha coefficient} (see soft_cpu.cpp's backward).
template <typename T>
__global__ void prepare_pixels(const T* aux, const T* image, const T* grad_image, int64_t total, SoftModes modes,
                               T* prep) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= total) return;
  const int64_t channels = modes.channels, stride = channels + 1;
  const T* a = aux + p * kSoftAuxChannels;
  const T* g = grad_image + p * stride;
  const T* px = image + p * stride;
  T* out = prep + p * 4;
  const T gA = g[channels];
  out[0] = a[0];
  out[1] = modes.softmax ? T(1) / a[1] : T(0);
  T gI = T(0);
  for (int64_t ch = 0; ch < channels; ++ch) gI += g[ch] * px[ch];
  out[2] = gI;
  if (modes.alpha_mode == kSoftAlphaProd) out[3] = a[3] > T(0) ? T(0) : gA * a[2];
  else if (modes.alpha_mode == kSoftAlphaSum) out[3] = a[2] <= T(1) ? gA : T(0);
  else out[3] = T(0);
}

// The background's gradient per image row and channel, summed over the row's pixels in order.
template <typename T>
__global__ void background_rows(const T* grad_image, const T* prep, const int64_t* hard_ids, int64_t rows, int width,
                                SoftConstants<T> c, SoftModes modes, T* row_bg) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t channels = modes.channels, stride = channels + 1;
  if (i >= rows * channels) return;
  const int64_t row = i / channels, ch = i % channels;
  T sum = T(0);
  for (int64_t p = row * width; p < (row + 1) * width; ++p) {
    const T g = grad_image[p * stride + ch];
    if (modes.softmax) {
      const T* pr = prep + p * 4;
      sum += g * (exp(c.eps_logit - pr[0]) * pr[1]);
    } else if (modes.hard_rgb && hard_ids[p] < 0) {
      sum += g;
    }
  }
  row_bg[i] = sum;
}

template <typename T>
__global__ void background_total(const T* row_bg, int64_t rows, int64_t channels, T* grad_background) {
  const int64_t ch = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (ch >= channels) return;
  T sum = T(0);
  for (int64_t row = 0; row < rows; ++row) sum += row_bg[row * channels + ch];
  grad_background[ch] = sum;
}

// Textured: the number of texture-gradient records the walk of chunk_grads will write for each
// walk chunk, into counts[j]: the pairs on the colour path that the softmax does not hide, with a
// finite uv and a non-zero image gradient (soft_pair_backward's condition).
template <typename T>
__global__ void count_texture_records(const SoftTriangle<T>* setups, const int64_t* chunk_offsets, int64_t chunks,
                                      const int64_t* triangles, const T* attributes, SoftTexture<T> tex,
                                      int64_t batch, int64_t num_vertices, int64_t num_triangles, SoftConstants<T> c,
                                      SoftModes modes, const T* prep, const int64_t* hard_ids, const T* grad_image,
                                      int64_t* counts) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= chunks) return;
  const WalkChunk<T> w(setups, chunk_offsets, j, triangles, attributes, batch, num_vertices, num_triangles,
                       modes.attr_channels, c);
  const int64_t channels = modes.channels, stride = channels + 1;
  int64_t count = 0;
  w.for_each_pair(c, modes.lean, [&](int64_t p, const SoftSample<T>& s) {
    const T* pr = prep + p * 4;
    if (!w.colour_path(pr, p, hard_ids, modes) || !(soft_color_exp(s, c, pr, modes.softmax) > T(0))) return;
    T beta[3];
    soft_perspective_weights(w.tri, s, beta);
    const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, w.b, channels, beta, w.corner);
    count += soft_texture_record_wanted(footprint, grad_image + p * stride, channels);
  });
  counts[j] = count;
}

// One thread per walk chunk: the backward walk of soft_cpu.cpp over the chunk's rows, writing the
// chunk's corner gradients [3, 3+A] and the vertex keys of its triangle's corners, and, when
// textured, its texture-gradient records into rows [record_offsets[j], record_offsets[j+1]).
template <typename T>
__global__ void chunk_grads(const SoftTriangle<T>* setups, const int64_t* chunk_offsets, int64_t chunks,
                            const int64_t* triangles, const T* attributes, SoftTexture<T> tex, int64_t batch,
                            int64_t num_vertices, int64_t num_triangles, SoftConstants<T> c, SoftModes modes,
                            const T* prep, const int64_t* hard_ids, const T* grad_image, T* corners, int64_t* keys,
                            const int64_t* record_offsets, T* records) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= chunks) return;
  const WalkChunk<T> w(setups, chunk_offsets, j, triangles, attributes, batch, num_vertices, num_triangles,
                       modes.attr_channels, c);
  const int64_t channels = modes.channels, stride = channels + 1;
  const int64_t corner_stride = 3 + modes.attr_channels, record_size = 2 + channels;
  T* out = corners + j * 3 * corner_stride;
  for (int k = 0; k < 3; ++k) keys[3 * j + k] = w.b * num_vertices + triangles[3 * w.f + k];
  for (int64_t k = 0; k < 3 * corner_stride; ++k) out[k] = T(0);
  T* gattr[3] = {out + 3, out + corner_stride + 3, out + 2 * corner_stride + 3};
  int64_t next_record = records ? record_offsets[j] : 0;
  const int64_t record_end = records ? record_offsets[j + 1] : 0;
  T gp[3][2] = {{T(0), T(0)}, {T(0), T(0)}, {T(0), T(0)}};
  T giw[3] = {T(0), T(0), T(0)};
  w.for_each_pair(c, modes.lean, [&](int64_t p, const SoftSample<T>& s) {
    const T* pr = prep + p * 4;
    // Pixels where this triangle can receive no gradient: no alpha gradient, and no colour.
    const bool colour_path = w.colour_path(pr, p, hard_ids, modes);
    if (pr[3] == T(0) && !colour_path) return;
    // count_texture_records sized this chunk's rows; the bound only guards memory.
    T* record = next_record < record_end ? records + next_record * record_size : nullptr;
    next_record += soft_pair_backward(w.tri, s, c, pr, colour_path, modes.softmax,
                                      modes.alpha_mode == kSoftAlphaProd, grad_image + p * stride, w.corner, channels,
                                      tex, w.b, gattr, giw, gp, record);
  });
  for (int k = 0; k < 3; ++k) {
    out[k * corner_stride + 0] = gp[k][0] * c.scale_x;
    out[k * corner_stride + 1] = gp[k][1] * c.scale_y;
    out[k * corner_stride + 2] = giw[k];
  }
}

// Batch item b's first texture-gradient record, for b in [0, batch]: that of its first triangle's
// first walk chunk.
__global__ void batch_record_offsets(const int64_t* chunk_offsets, const int64_t* record_offsets, int64_t batch,
                                     int64_t num_triangles, int64_t* out) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b <= batch) out[b] = record_offsets[chunk_offsets[b * num_triangles]];
}

}  // namespace

template <typename T>
cudaError_t soft_rasterize_forward_cuda(const SoftParams& params, const T* screen, const int64_t* triangles,
                                        const T* attributes, const T* background, const SoftTexture<T>& texture,
                                        int64_t batch, int64_t num_vertices, int64_t num_triangles, int64_t channels,
                                        T* image, T* aux, int64_t* hard_ids, SoftCudaCounts& counts,
                                        cudaStream_t stream) {
  const SoftConstants<T> c = make_soft_constants<T>(params);
  const SoftModes modes = make_modes(params, channels, texture);
  const TileGrid grid = tile_grid(params.width, params.height, batch);
  // CUB's segmented sort counts its segments, the tiles, in int (2^31 tiles: terabytes of image).
  if (grid.count() > INT32_MAX) return cudaErrorInvalidValue;
  return with_tile_bins<SoftTriangle<T>>(
      grid, num_triangles, stream,
      [&](SoftTriangle<T>* setups, int64_t* tile_counts) {
        setup_and_count<T><<<blocks_for(batch * num_triangles), kThreads, 0, stream>>>(
            screen, triangles, num_vertices, num_triangles, c, grid, setups, tile_counts);
      },
      [&](const SoftTriangle<T>* setups, const int64_t* offsets, const int32_t* entries, int64_t total) {
        // Each tile's triangles in index order: the CPU's order, whatever order the atomics filled.
        Scratch<int32_t> sorted(total, stream);
        DR_CUDA_TRY(sorted.status());
        if (total > 0) {
          const int tiles = static_cast<int>(grid.count()), end_bit = bits_for(num_triangles);
          size_t sort_bytes = 0;
          DR_CUDA_TRY(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, sort_bytes, entries, sorted.get(),
                                                              static_cast<int>(total), tiles, offsets, offsets + 1,
                                                              0, end_bit, stream));
          Scratch<unsigned char> sort_temp(sort_bytes, stream);
          DR_CUDA_TRY(sort_temp.status());
          DR_CUDA_TRY(cub::DeviceSegmentedRadixSort::SortKeys(sort_temp.get(), sort_bytes, entries, sorted.get(),
                                                              static_cast<int>(total), tiles, offsets, offsets + 1,
                                                              0, end_bit, stream));
        }
        aggregate_tiles<T><<<static_cast<unsigned>(grid.count()), dim3(kTile, kTile), 0, stream>>>(
            setups, triangles, attributes, background, texture, num_vertices, num_triangles, c, modes, grid, offsets,
            sorted.get(), image, aux, hard_ids);
        return cudaGetLastError();
      },
      kSoftCudaMaxBinnedPairs, &counts.binned_pairs);
}

template <typename T>
cudaError_t soft_rasterize_backward_cuda(const SoftParams& params, const T* screen, const int64_t* triangles,
                                         const T* attributes, const SoftTexture<T>& texture, int64_t batch,
                                         int64_t num_vertices, int64_t num_triangles, int64_t channels, const T* image,
                                         const T* aux, const int64_t* hard_ids, const T* grad_image, T* grad_vertices,
                                         T* grad_background, const std::function<T*(int64_t)>& allocate_records,
                                         int64_t* batch_offsets, SoftCudaCounts& counts, cudaStream_t stream) {
  const SoftConstants<T> c = make_soft_constants<T>(params);
  const SoftModes modes = make_modes(params, channels, texture);
  const int64_t rows = batch * params.height, total = rows * params.width;
  const int64_t items = batch * num_triangles;
  if (total == 0) {
    if (channels > 0) DR_CUDA_TRY(cudaMemsetAsync(grad_background, 0, channels * sizeof(T), stream));
    return cudaSuccess;
  }
  Scratch<T> prep(4 * total, stream);
  DR_CUDA_TRY(prep.status());
  prepare_pixels<T><<<blocks_for(total), kThreads, 0, stream>>>(aux, image, grad_image, total, modes, prep.get());
  DR_CUDA_TRY(cudaGetLastError());
  if (channels > 0) {
    // Row sums in pixel order, then rows in order: the CPU's summation order.
    Scratch<T> row_bg(rows * channels, stream);
    DR_CUDA_TRY(row_bg.status());
    background_rows<T><<<blocks_for(rows * channels), kThreads, 0, stream>>>(grad_image, prep.get(), hard_ids, rows,
                                                                             params.width, c, modes, row_bg.get());
    background_total<T><<<blocks_for(channels), kThreads, 0, stream>>>(row_bg.get(), rows, channels,
                                                                       grad_background);
    DR_CUDA_TRY(cudaGetLastError());
  }
  if (items == 0) return cudaSuccess;
  Scratch<SoftTriangle<T>> setups(items, stream);
  Scratch<int64_t> chunk_counts(items + 1, stream), chunk_offsets(items + 1, stream);
  DR_CUDA_TRY(setups.status());
  DR_CUDA_TRY(chunk_counts.status());
  DR_CUDA_TRY(chunk_offsets.status());
  const TileGrid grid{0, 0, batch};
  setup_and_count<T><<<blocks_for(items), kThreads, 0, stream>>>(screen, triangles, num_vertices, num_triangles, c,
                                                                 grid, setups.get(), nullptr);
  count_walk_chunks<T><<<blocks_for(items), kThreads, 0, stream>>>(setups.get(), items, chunk_counts.get());
  DR_CUDA_TRY(cudaGetLastError());
  int64_t chunks = 0;
  DR_CUDA_TRY(running_sum(chunk_counts.get(), chunk_offsets.get(), items, stream, &chunks));
  counts.walk_chunks = chunks;
  if (chunks == 0 || chunks > kSoftCudaMaxWalkChunks) return cudaSuccess;  // 0: no box reaches a pixel centre
  // Textured: count the records per chunk, then give each chunk its rows by a running sum.
  Scratch<int64_t> record_offsets(texture.texels ? chunks + 1 : 0, stream);
  T* records = nullptr;
  if (texture.texels) {
    Scratch<int64_t> counts(chunks + 1, stream), first_records(batch + 1, stream);
    DR_CUDA_TRY(counts.status());
    DR_CUDA_TRY(first_records.status());
    DR_CUDA_TRY(record_offsets.status());
    count_texture_records<T><<<blocks_for(chunks), kThreads, 0, stream>>>(
        setups.get(), chunk_offsets.get(), chunks, triangles, attributes, texture, batch, num_vertices,
        num_triangles, c, modes, prep.get(), hard_ids, grad_image, counts.get());
    DR_CUDA_TRY(cudaGetLastError());
    DR_CUDA_TRY(running_sum(counts.get(), record_offsets.get(), chunks, stream));
    batch_record_offsets<<<blocks_for(batch + 1), kThreads, 0, stream>>>(
        chunk_offsets.get(), record_offsets.get(), batch, num_triangles, first_records.get());
    DR_CUDA_TRY(cudaMemcpyAsync(batch_offsets, first_records.get(), (batch + 1) * sizeof(int64_t),
                                cudaMemcpyDeviceToHost, stream));
    DR_CUDA_TRY(cudaStreamSynchronize(stream));
    records = allocate_records(batch_offsets[batch]);
  }
  const int64_t corner_stride = 3 + modes.attr_channels;
  Scratch<T> corners(chunks * 3 * corner_stride, stream);
  Scratch<int64_t> keys(3 * chunks, stream);
  DR_CUDA_TRY(corners.status());
  DR_CUDA_TRY(keys.status());
  chunk_grads<T><<<blocks_for(chunks), kThreads, 0, stream>>>(
      setups.get(), chunk_offsets.get(), chunks, triangles, attributes, texture, batch, num_vertices, num_triangles,
      c, modes, prep.get(), hard_ids, grad_image, corners.get(), keys.get(), record_offsets.get(), records);
  DR_CUDA_TRY(cudaGetLastError());
  // Corners to vertices: stable sort by vertex, each vertex's corners summed in (triangle, chunk) order.
  return ordered_scatter_add(keys.get(), corners.get(), 3 * chunks, static_cast<int>(corner_stride),
                             batch * num_vertices, grad_vertices, stream);
}

#define DR_INSTANTIATE(T)                                                                                        \
  template cudaError_t soft_rasterize_forward_cuda<T>(const SoftParams&, const T*, const int64_t*, const T*,      \
                                                      const T*, const SoftTexture<T>&, int64_t, int64_t, int64_t, \
                                                      int64_t, T*, T*, int64_t*, SoftCudaCounts&, cudaStream_t); \
  template cudaError_t soft_rasterize_backward_cuda<T>(                                                          \
      const SoftParams&, const T*, const int64_t*, const T*, const SoftTexture<T>&, int64_t, int64_t, int64_t,   \
      int64_t, const T*, const T*, const int64_t*, const T*, T*, T*, const std::function<T*(int64_t)>&,           \
      int64_t*, SoftCudaCounts&, cudaStream_t);
DR_INSTANTIATE(float)
DR_INSTANTIATE(double)

}  // namespace diffrender
