// CPU kernels of the soft rasterizer.
//
// Forward: triangles are binned into bands of rows by their blurred bounding boxes; each band is
// rasterized by one thread, which visits its triangles in index order and folds them into per-pixel
// running aggregates (an online softmax for colour, a product or sum for alpha). Every pixel is
// therefore updated by one thread in a fixed order: the same bits for any thread count.
//
// Backward: each triangle's blurred bounding box is cut into walk chunks of whole rows
// (soft_walk_chunk_rows, shared with the GPU), so that a screen-sized triangle is split over the
// threads. One thread walks each chunk in raster order, recomputing the triangle's coverage, depth
// and colour at each pixel and turning the pixel's saved aggregates into the triangle's gradient;
// the chunks' per-corner sums then go to the vertices in (triangle, chunk) order. Untextured,
// nothing per (pixel, triangle) is ever stored. Textured, each pair that samples the texture also
// leaves a record (uv and d(loss)/d(albedo), memory O(pairs)); gathered in (triangle, chunk)
// order, the records go through the texture op's deterministic scatter (soft_ops.cpp).
//
// Both passes evaluate a triangle against a run of pixels in two phases: a branch-free loop over
// up to kBlock pixels that the compiler vectorises (soft_sample for every pixel), then a scalar
// loop over the pixels that the triangle really reaches.

// GCC if-converts (and so vectorises) the branch-free pixel loop only when comparisons may be
// evaluated unconditionally, which -ftrapping-math forbids. This changes no result (it only
// concerns floating-point exception flags, which nothing reads); it must precede every include so
// that the inline math functions and their callers agree, or GCC refuses to inline them.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "soft/soft.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include "common/corner_scatter.h"
#include "common/parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace diffrender {
namespace {

constexpr int kBandRows = 8;
constexpr int kBlock = 64;

// Structure-of-arrays copies of SoftSample for a run of pixels, filled by a vectorised loop.
template <typename T>
struct SampleBlock {
  using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;  // lane-sized ints
  T px[kBlock], py[kBlock], e0[kBlock], e1[kBlock], e2[kBlock], esum[kBlock], d2[kBlock];
  T l0[kBlock], l1[kBlock], l2[kBlock], t[kBlock], iw[kBlock], z[kBlock];
  I k0[kBlock], kb[kBlock], inside[kBlock], t_free[kBlock], keep[kBlock];

  // Evaluates pixels xs[0..n) of the row at height Y. With distance_only (see
  // soft_sample_distance) the barycentric fields are left unset.
  void fill(const SoftTriangle<T>& triangle, const T* xs, T Y, const SoftConstants<T>& constants, int n,
            bool distance_only) {
    // Local copies: the stores below cannot alias them, so their fields stay in registers.
    const SoftTriangle<T> tri = triangle;
    const SoftConstants<T> c = constants;
    if (distance_only) {
#pragma omp simd
      for (int i = 0; i < n; ++i) {
        SoftSample<T> s;
        keep[i] = soft_sample_distance(tri, xs[i], Y, c, s);
        px[i] = s.px; py[i] = s.py;
        e0[i] = s.E[0]; e1[i] = s.E[1]; e2[i] = s.E[2]; esum[i] = s.esum;
        d2[i] = s.d2; t[i] = s.t; k0[i] = s.k0; inside[i] = s.inside; t_free[i] = s.t_free;
      }
      return;
    }
#pragma omp simd
    for (int i = 0; i < n; ++i) {
      SoftSample<T> s;
      keep[i] = soft_sample(tri, xs[i], Y, c, s);
      px[i] = s.px; py[i] = s.py;
      e0[i] = s.E[0]; e1[i] = s.E[1]; e2[i] = s.E[2]; esum[i] = s.esum;
      d2[i] = s.d2; l0[i] = s.lambda[0]; l1[i] = s.lambda[1]; l2[i] = s.lambda[2];
      t[i] = s.t; iw[i] = s.iw; z[i] = s.z;
      k0[i] = s.k0; kb[i] = s.kb; inside[i] = s.inside; t_free[i] = s.t_free;
    }
  }

  // Copies pixel i back, with only the fields that fill set.
  void get(int i, SoftSample<T>& s, bool distance_only) const {
    if (!distance_only) {
      get(i, s);
      return;
    }
    s.px = px[i]; s.py = py[i];
    s.E[0] = e0[i]; s.E[1] = e1[i]; s.E[2] = e2[i]; s.esum = esum[i];
    s.d2 = d2[i]; s.t = t[i]; s.k0 = static_cast<int>(k0[i]); s.kb = 0;
    s.inside = inside[i] != 0; s.t_free = t_free[i] != 0;
  }

  void get(int i, SoftSample<T>& s) const {
    s.px = px[i]; s.py = py[i];
    s.E[0] = e0[i]; s.E[1] = e1[i]; s.E[2] = e2[i]; s.esum = esum[i];
    s.d2 = d2[i]; s.lambda[0] = l0[i]; s.lambda[1] = l1[i]; s.lambda[2] = l2[i];
    s.t = t[i]; s.iw = iw[i]; s.z = z[i];
    s.k0 = static_cast<int>(k0[i]); s.kb = static_cast<int>(kb[i]);
    s.inside = inside[i] != 0; s.t_free = t_free[i] != 0;
  }
};

// Per-triangle setups of every batch item ([B*F], left uninitialised until filled in parallel),
// and their row ranges in a compact array for binning ([B*F][2]; y_min > y_max when empty).
template <typename T>
struct Setups {
  std::unique_ptr<SoftTriangle<T>[]> triangles;
  std::vector<int32_t> rows;
};

template <typename T>
Setups<T> setup_triangles(const T* screen, const int64_t* tris, int64_t batch, int64_t num_vertices,
                          int64_t num_triangles, const SoftConstants<T>& c) {
  Setups<T> setups;
  setups.triangles.reset(new SoftTriangle<T>[batch * num_triangles]);
  setups.rows.resize(2 * batch * num_triangles);
  at::parallel_for(0, batch * num_triangles, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* v = screen + (i / num_triangles) * num_vertices * 3;
      const int64_t* t = tris + (i % num_triangles) * 3;
      SoftTriangle<T>& s = setups.triangles[i];
      soft_setup_triangle(v + 3 * t[0], v + 3 * t[1], v + 3 * t[2], c, s);
      const bool empty = s.x_min > s.x_max || s.y_min > s.y_max;
      setups.rows[2 * i] = empty ? 1 : s.y_min;
      setups.rows[2 * i + 1] = empty ? 0 : s.y_max;
    }
  });
  return setups;
}

// Compressed lists of the triangles touching each band of each batch item, in triangle order.
struct BandBins {
  std::vector<int64_t> offsets;  // [batch * bands + 1]
  std::vector<int32_t> triangles;
};

inline BandBins bin_by_band(const std::vector<int32_t>& rows, int64_t batch, int64_t num_triangles,
                            int64_t bands) {
  BandBins bins;
  bins.offsets.assign(batch * bands + 1, 0);
  for (int64_t i = 0; i < batch * num_triangles; ++i) {
    const int32_t y_min = rows[2 * i], y_max = rows[2 * i + 1];
    if (y_min > y_max) continue;
    int64_t* row = bins.offsets.data() + (i / num_triangles) * bands + 1;
    for (int band = y_min / kBandRows; band <= y_max / kBandRows; ++band) ++row[band];
  }
  for (size_t k = 1; k < bins.offsets.size(); ++k) bins.offsets[k] += bins.offsets[k - 1];
  bins.triangles.resize(bins.offsets.back());
  std::vector<int64_t> cursor(bins.offsets.begin(), bins.offsets.end() - 1);
  for (int64_t i = 0; i < batch * num_triangles; ++i) {
    const int32_t y_min = rows[2 * i], y_max = rows[2 * i + 1];
    if (y_min > y_max) continue;
    int64_t* row = cursor.data() + (i / num_triangles) * bands;
    for (int band = y_min / kBandRows; band <= y_max / kBandRows; ++band)
      bins.triangles[row[band]++] = static_cast<int32_t>(i % num_triangles);
  }
  return bins;
}

// Calls visit(ix, sample) for each pixel ix of the row at height Y that the triangle reaches,
// left to right. Short runs (small triangles) skip the block machinery: the scalar and the
// vectorised evaluations compute the same IEEE operations, so they agree bit for bit.
template <typename T, typename Visit>
inline void for_each_pixel_in_row(const SoftTriangle<T>& tri, T Y, const T* xs, const SoftConstants<T>& c,
                                  bool distance_only, SampleBlock<T>& block, const Visit& visit) {
  constexpr int kScalarRun = 8;
  int lo, hi;
  soft_row_span(tri, Y, c, lo, hi);
  if (hi - lo < kScalarRun) {
    for (int ix = lo; ix <= hi; ++ix) {
      SoftSample<T> s;
      const bool keep = distance_only ? soft_sample_distance(tri, xs[ix], Y, c, s) : soft_sample(tri, xs[ix], Y, c, s);
      if (keep) visit(ix, s);
    }
    return;
  }
  for (int run = lo; run <= hi; run += kBlock) {
    const int count = std::min(kBlock, hi - run + 1);
    block.fill(tri, xs + run, Y, c, count, distance_only);
    for (int i = 0; i < count; ++i) {
      if (!block.keep[i]) continue;
      SoftSample<T> s;
      block.get(i, s, distance_only);
      visit(run + i, s);
    }
  }
}

template <typename T>
std::vector<T> pixel_centers(int extent, T scale) {
  std::vector<T> centers(extent);
  for (int i = 0; i < extent; ++i) centers[i] = soft_pixel_center<T>(i, extent, scale);
  return centers;
}

// Whether the terms folded in so far fix the pixel's alpha and make its gradient zero.
template <typename T>
inline bool alpha_settled(int alpha_mode, const T* a) {
  if (alpha_mode == kSoftAlphaProd) return a[3] > T(0);
  if (alpha_mode == kSoftAlphaSum) return a[2] > T(1);
  return a[2] > T(0);
}

template <typename T>
void forward_impl(const SoftParams& params, const at::Tensor& screen, const at::Tensor& triangles,
                  const at::Tensor& attributes, const at::Tensor& background, const SoftTexture<T>& tex,
                  at::Tensor& image, at::Tensor& aux, at::Tensor& hard_ids) {
  const SoftConstants<T> c = make_soft_constants<T>(params);
  const int64_t batch = screen.size(0), num_vertices = screen.size(1);
  const int64_t num_triangles = triangles.size(0);
  const int64_t channels = image.size(3) - 1, stride = channels + 1;
  const int64_t attr_channels = attributes.size(2);
  const int height = params.height, width = params.width;
  const int64_t bands = (height + kBandRows - 1) / kBandRows;
  const bool softmax = channels > 0 && params.aggr_rgb == kSoftRgbSoftmax;
  const bool hard_rgb = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  const int alpha_mode = params.aggr_alpha;
  // Silhouettes with Euclidean distances need no barycentrics (see soft_sample_distance).
  const bool lean = channels == 0 && params.dist_func == kSoftDistEuclidean;

  const int64_t* tris = triangles.data_ptr<int64_t>();
  const auto setups = setup_triangles(screen.data_ptr<T>(), tris, batch, num_vertices, num_triangles, c);
  const BandBins bins = bin_by_band(setups.rows, batch, num_triangles, bands);
  const std::vector<T> xs = pixel_centers<T>(width, c.scale_x), ys = pixel_centers<T>(height, c.scale_y);
  const T* attr_ptr = attributes.data_ptr<T>();
  const T* bg = background.data_ptr<T>();
  T* img_ptr = image.data_ptr<T>();
  T* aux_ptr = aux.data_ptr<T>();
  int64_t* ids_ptr = hard_rgb ? hard_ids.data_ptr<int64_t>() : nullptr;

  parallel_for_interleaved(batch * bands, [&](int64_t item) {
    const int64_t b = item / bands;
    const int y0 = static_cast<int>(item % bands) * kBandRows;
    const int y1 = std::min(height, y0 + kBandRows);
    const int64_t image_offset = b * int64_t(height) * width;
    const int64_t first = image_offset + int64_t(y0) * width, last = image_offset + int64_t(y1) * width;
    // Each band initialises its own pixels: nothing is touched by two threads.
    for (int64_t p = first; p < last; ++p) {
      T* px = img_ptr + p * stride;
      for (int64_t ch = 0; ch < channels; ++ch) px[ch] = bg[ch];
      px[channels] = T(0);
      T* a = aux_ptr + p * kSoftAuxChannels;
      a[0] = softmax ? c.eps_logit : (hard_rgb ? T(-1) : T(0));  // hard: best z so far (z >= 0)
      a[1] = softmax ? T(1) : T(0);  // the background's e^{ε/γ - m} = 1
      a[2] = alpha_mode == kSoftAlphaProd ? T(1) : T(0);
      a[3] = T(0);
      if (hard_rgb) ids_ptr[p] = -1;
    }
    const T* batch_attr = attr_ptr + b * num_vertices * attr_channels;
    const SoftTriangle<T>* batch_setups = setups.triangles.get() + b * num_triangles;
    SampleBlock<T> block;
    for (int64_t n = bins.offsets[item]; n < bins.offsets[item + 1]; ++n) {
      const int32_t f = bins.triangles[n];
      const SoftTriangle<T>& tri = batch_setups[f];
      const T* corner[3] = {batch_attr + tris[3 * f] * attr_channels, batch_attr + tris[3 * f + 1] * attr_channels,
                            batch_attr + tris[3 * f + 2] * attr_channels};
      const T vmax = tri.zmax * c.inv_gamma;
      const bool distance_only = lean && !(tri.flags & kSoftCheckZ);
      const int row_begin = std::max(y0, tri.y_min), row_end = std::min(y1 - 1, tri.y_max);
      for (int iy = row_begin; iy <= row_end; ++iy) {
        const int64_t row = image_offset + int64_t(iy) * width;
        for_each_pixel_in_row(tri, ys[iy], xs.data(), c, distance_only, block,
                              [&](int ix, const SoftSample<T>& s) {
          const int64_t p = row + ix;
          T* a = aux_ptr + p * kSoftAuxChannels;
          // Once alpha is settled (a saturated term in the product, a sum past 1, a covered
          // pixel) later terms change neither alpha nor its gradient; with colour they still
          // count unless the softmax makes them vanish (m only grows).
          if (!hard_rgb && alpha_settled(alpha_mode, a) &&
              (!softmax || vmax - a[0] < soft_softmax_cut<T>()))
            return;
          T* px = img_ptr + p * stride;
          T D, q;
          const bool saturated = soft_coverage(s, c, D, q);
          if (alpha_mode == kSoftAlphaProd) {
            if (saturated) a[3] += T(1);
            else a[2] *= q;
          } else if (alpha_mode == kSoftAlphaSum) {
            a[2] += D;
          } else if (s.inside) {
            a[2] = T(1);
          }
          if (softmax) {
            // Online softmax: rescale the running sums when the maximum grows.
            const T v = s.z * c.inv_gamma;
            if (v > a[0]) {
              const T scale = std::exp(a[0] - v);
              a[1] *= scale;
              for (int64_t ch = 0; ch < channels; ++ch) px[ch] *= scale;
              a[0] = v;
            }
            const T shifted = v - a[0];
            const T u = shifted < soft_softmax_cut<T>() ? T(0) : D * std::exp(shifted);
            if (u > T(0)) {
              T beta[3];
              soft_perspective_weights(tri, s, beta);
              const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, b, channels, beta, corner);
              a[1] += u;
              for (int64_t ch = 0; ch < channels; ++ch)
                px[ch] += u * soft_pair_color(tex, footprint, beta, corner, channels, ch);
            }
          } else if (hard_rgb && s.inside && s.z >= a[0]) {  // ties go to the later triangle
            T beta[3];
            soft_perspective_weights(tri, s, beta);
            const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, b, channels, beta, corner);
            a[0] = s.z;
            ids_ptr[p] = f;
            for (int64_t ch = 0; ch < channels; ++ch)
              px[ch] = soft_pair_color(tex, footprint, beta, corner, channels, ch);
          }
        });
      }
    }
    for (int64_t p = first; p < last; ++p) {
      T* px = img_ptr + p * stride;
      const T* a = aux_ptr + p * kSoftAuxChannels;
      if (softmax) {
        const T inv = T(1) / a[1];
        for (int64_t ch = 0; ch < channels; ++ch) px[ch] *= inv;
      }
      if (alpha_mode == kSoftAlphaProd) px[channels] = a[3] > T(0) ? T(1) : T(1) - a[2];
      else if (alpha_mode == kSoftAlphaSum) px[channels] = std::min(a[2], T(1));
      else px[channels] = a[2];
    }
  });
}

// The walk chunks of every (batch item, triangle) (soft_walk_chunk_rows), numbered in
// (item, chunk) order: item i's are [offsets[i], offsets[i + 1]), and chunk j belongs to item[j].
template <typename T>
struct WalkChunks {
  std::vector<int64_t> offsets;  // [items + 1]
  std::vector<int64_t> item;     // [chunks]

  WalkChunks(const SoftTriangle<T>* setups, int64_t items) : offsets(items + 1, 0) {
    for (int64_t i = 0; i < items; ++i) offsets[i + 1] = offsets[i] + soft_walk_chunk_count(setups[i]);
    item.resize(offsets[items]);
    at::parallel_for(0, items, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) std::fill(item.begin() + offsets[i], item.begin() + offsets[i + 1], i);
    });
  }

  int64_t count() const { return offsets.back(); }
};

// Texture-gradient records written by the chunk walks: each thread appends to its own arena, and
// each chunk remembers where its rows went, so that they can be gathered in (triangle, chunk)
// order whatever thread wrote them.
template <typename T>
struct RecordArenas {
  int64_t row_size;
  std::vector<std::vector<T>> arenas;  // per thread
  std::vector<int32_t> thread;         // per chunk: the arena holding its rows
  std::vector<int64_t> first, count;   // per chunk: its rows in that arena

  RecordArenas(int64_t row_size_, int64_t chunks)
      : row_size(row_size_), arenas(at::get_num_threads()), thread(chunks), first(chunks), count(chunks) {}

  // The rows in chunk order, with the first row of each batch item, whose first chunk is
  // first_chunk_of(b).
  template <typename FirstChunkOf>
  void gather(int64_t batch, const FirstChunkOf& first_chunk_of, const at::TensorOptions& options,
              SoftTextureRecords& out) const {
    const int64_t chunks = static_cast<int64_t>(count.size());
    std::vector<int64_t> offsets(chunks + 1, 0);
    for (int64_t j = 0; j < chunks; ++j) offsets[j + 1] = offsets[j] + count[j];
    out.batch_offsets.resize(batch + 1);
    for (int64_t b = 0; b <= batch; ++b) out.batch_offsets[b] = offsets[first_chunk_of(b)];
    out.rows = at::empty({offsets[chunks], row_size}, options);
    T* rows = out.rows.data_ptr<T>();
    at::parallel_for(0, chunks, 256, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j)
        std::copy_n(arenas[thread[j]].data() + first[j] * row_size, count[j] * row_size, rows + offsets[j] * row_size);
    });
  }
};

template <typename T>
void backward_impl(const SoftParams& params, const at::Tensor& screen, const at::Tensor& triangles,
                   const at::Tensor& attributes, const SoftTexture<T>& tex, const at::Tensor& image,
                   const at::Tensor& aux, const at::Tensor& hard_ids, const at::Tensor& grad_image,
                   at::Tensor& grad_vertices, at::Tensor& grad_background, SoftTextureRecords& records) {
  const SoftConstants<T> c = make_soft_constants<T>(params);
  const int64_t batch = screen.size(0), num_vertices = screen.size(1);
  const int64_t num_triangles = triangles.size(0);
  const int64_t channels = image.size(3) - 1, stride = channels + 1;
  const int64_t attr_channels = attributes.size(2);
  const int height = params.height, width = params.width;
  const int64_t pixels = int64_t(height) * width;
  const bool softmax = channels > 0 && params.aggr_rgb == kSoftRgbSoftmax;
  const bool hard_rgb = channels > 0 && params.aggr_rgb == kSoftRgbHard;
  const int alpha_mode = params.aggr_alpha;
  // Silhouettes with Euclidean distances need no barycentrics (see soft_sample_distance).
  const bool lean = channels == 0 && params.dist_func == kSoftDistEuclidean;

  const T* img_ptr = image.data_ptr<T>();
  const T* aux_ptr = aux.data_ptr<T>();
  const T* grad_ptr = grad_image.data_ptr<T>();
  const int64_t* ids_ptr = hard_rgb ? hard_ids.data_ptr<int64_t>() : nullptr;

  // Per-pixel pass: the aggregates each triangle needs, and the background's gradient row by row.
  // prep: {m, 1/S, g·I, alpha coefficient} where dL/ds_j (alpha part) = coef·D_j (prod) or
  // coef·D_j(1-D_j) (sum).
  constexpr int kPrep = 4;
  std::vector<T> prep(batch * pixels * kPrep);
  std::vector<T> row_bg(batch * height * channels, T(0));
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      T* bg_sum = row_bg.data() + row * channels;
      for (int64_t p = row * width; p < (row + 1) * width; ++p) {
        const T* a = aux_ptr + p * kSoftAuxChannels;
        const T* g = grad_ptr + p * stride;
        const T* px = img_ptr + p * stride;
        T* out = prep.data() + p * kPrep;
        const T gA = g[channels];
        out[0] = a[0];
        out[1] = softmax ? T(1) / a[1] : T(0);
        T gI = T(0);
        for (int64_t ch = 0; ch < channels; ++ch) gI += g[ch] * px[ch];
        out[2] = gI;
        if (alpha_mode == kSoftAlphaProd) out[3] = a[3] > T(0) ? T(0) : gA * a[2];
        else if (alpha_mode == kSoftAlphaSum) out[3] = a[2] <= T(1) ? gA : T(0);
        else out[3] = T(0);
        if (softmax) {
          const T wb = std::exp(c.eps_logit - a[0]) * out[1];
          for (int64_t ch = 0; ch < channels; ++ch) bg_sum[ch] += g[ch] * wb;
        } else if (hard_rgb && ids_ptr[p] < 0) {
          for (int64_t ch = 0; ch < channels; ++ch) bg_sum[ch] += g[ch];
        }
      }
    }
  });
  T* gbg = grad_background.data_ptr<T>();
  for (int64_t ch = 0; ch < channels; ++ch) gbg[ch] = T(0);
  for (int64_t row = 0; row < batch * height; ++row)
    for (int64_t ch = 0; ch < channels; ++ch) gbg[ch] += row_bg[row * channels + ch];

  const int64_t* tris = triangles.data_ptr<int64_t>();
  const auto setups = setup_triangles(screen.data_ptr<T>(), tris, batch, num_vertices, num_triangles, c);
  const WalkChunks<T> chunks(setups.triangles.get(), batch * num_triangles);
  const std::vector<T> xs = pixel_centers<T>(width, c.scale_x), ys = pixel_centers<T>(height, c.scale_y);
  const T* attr_ptr = attributes.data_ptr<T>();
  const int64_t corner_stride = 3 + attr_channels;
  std::vector<T> corners(chunks.count() * 3 * corner_stride);  // [chunks,3,3+A]
  const bool textured = tex.texels != nullptr;
  RecordArenas<T> arenas(2 + channels, textured ? chunks.count() : 0);

  parallel_for_interleaved(chunks.count(), [&](int64_t j) {
    const int64_t i = chunks.item[j], b = i / num_triangles, f = i % num_triangles;
    T* out = corners.data() + j * 3 * corner_stride;
    std::fill_n(out, 3 * corner_stride, T(0));
    std::vector<T>* arena = nullptr;
    if (textured) {
      const int thread = at::get_thread_num();
      arena = &arenas.arenas[thread];
      arenas.thread[j] = thread;
      arenas.first[j] = static_cast<int64_t>(arena->size()) / arenas.row_size;
      arenas.count[j] = 0;
    }
    const SoftTriangle<T>& tri = setups.triangles[i];
    int y_first, y_last;
    soft_walk_chunk_rows(tri, static_cast<int>(j - chunks.offsets[i]), y_first, y_last);
    const T* batch_attr = attr_ptr + b * num_vertices * attr_channels;
    const T* corner[3] = {batch_attr + tris[3 * f] * attr_channels, batch_attr + tris[3 * f + 1] * attr_channels,
                          batch_attr + tris[3 * f + 2] * attr_channels};
    T* gattr[3] = {out + 3, out + corner_stride + 3, out + 2 * corner_stride + 3};
    T gp[3][2] = {{0, 0}, {0, 0}, {0, 0}};
    T giw[3] = {0, 0, 0};
    const T vmax = tri.zmax * c.inv_gamma;
    const bool distance_only = lean && !(tri.flags & kSoftCheckZ);
    SampleBlock<T> block;
    const int64_t image_offset = b * pixels;
    for (int iy = y_first; iy <= y_last; ++iy) {
      const int64_t row = image_offset + int64_t(iy) * width;
      for_each_pixel_in_row(tri, ys[iy], xs.data(), c, distance_only, block,
                            [&](int ix, const SoftSample<T>& s) {
        const int64_t p = row + ix;
        const T* pr = prep.data() + p * kPrep;
        // Skip pixels where this triangle can receive no gradient: no alpha gradient, and no
        // colour (none, hidden by the softmax, or not the z-buffer winner).
        const bool colour_path = softmax ? vmax - pr[0] >= soft_softmax_cut<T>() : (hard_rgb && ids_ptr[p] == f);
        if (pr[3] == T(0) && !colour_path) return;
        T* record = nullptr;
        if (arena) {  // room for a row, given back unless the pair writes one
          arena->resize(arena->size() + arenas.row_size);
          record = arena->data() + arena->size() - arenas.row_size;
        }
        const bool recorded = soft_pair_backward(tri, s, c, pr, colour_path, softmax, alpha_mode == kSoftAlphaProd,
                                                 grad_ptr + p * stride, corner, channels, tex, b, gattr, giw, gp,
                                                 record);
        if (recorded) ++arenas.count[j];
        else if (arena) arena->resize(arena->size() - arenas.row_size);
      });
    }
    for (int k = 0; k < 3; ++k) {
      out[k * corner_stride + 0] = gp[k][0] * c.scale_x;
      out[k * corner_stride + 1] = gp[k][1] * c.scale_y;
      out[k * corner_stride + 2] = giw[k];
    }
  });

  // Each vertex adds its corners in (triangle, chunk) order, as ordered_scatter_add does on the GPU.
  grad_vertices.zero_();
  add_corners_to_vertices(corners.data(), chunks.item, tris, batch, num_triangles, num_vertices, corner_stride,
                          grad_vertices.data_ptr<T>());
  if (textured)
    arenas.gather(batch, [&](int64_t b) { return chunks.offsets[b * num_triangles]; }, screen.options(), records);
}

}  // namespace

void soft_rasterize_forward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                const at::Tensor& triangles, const at::Tensor& attributes,
                                const at::Tensor& background, const SoftTextureInput& texture,
                                at::Tensor& image, at::Tensor& aux, at::Tensor& hard_ids) {
  AT_DISPATCH_FLOATING_TYPES(screen_vertices.scalar_type(), "soft_rasterize_forward_cpu", [&] {
    forward_impl<scalar_t>(params, screen_vertices, triangles, attributes, background, texture.view<scalar_t>(),
                           image, aux, hard_ids);
  });
}

void soft_rasterize_backward_cpu(const SoftParams& params, const at::Tensor& screen_vertices,
                                 const at::Tensor& triangles, const at::Tensor& attributes,
                                 const SoftTextureInput& texture, const at::Tensor& image,
                                 const at::Tensor& aux, const at::Tensor& hard_ids,
                                 const at::Tensor& grad_image, at::Tensor& grad_vertices,
                                 at::Tensor& grad_background, SoftTextureRecords& records) {
  AT_DISPATCH_FLOATING_TYPES(screen_vertices.scalar_type(), "soft_rasterize_backward_cpu", [&] {
    backward_impl<scalar_t>(params, screen_vertices, triangles, attributes, texture.view<scalar_t>(), image, aux,
                            hard_ids, grad_image, grad_vertices, grad_background, records);
  });
}

}  // namespace diffrender
