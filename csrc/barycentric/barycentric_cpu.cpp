// CPU kernels of the barycentric rasterizer. Triangles are binned into bands of rows; each band is
// rasterized by one thread, visiting its triangles in index order, so the z-test (later triangle
// wins ties) gives the same bits for any thread count.
#include "barycentric/barycentric.h"

#include <ATen/Dispatch.h>

#include "barycentric/barycentric_math.h"
#include "barycentric/won_pixel_sums.h"
#include "common/corner_scatter.h"
#include "common/parallel.h"

namespace diffrender {
namespace {

constexpr int kBandRows = 8;
constexpr int64_t kPrefetchAhead = 16;

// A triangle whose box holds pixel centres, with its setup.
template <typename T>
struct Candidate {
  TriangleSetup<T> setup;
  int64_t key;  // image * F + triangle
};

// The candidates touching each band of rows of each image, in triangle order.
template <typename T>
struct BandBins {
  std::vector<std::vector<Candidate<T>>> candidates;  // per chunk of triangles
  std::vector<int64_t> offsets;                      // [B * bands + 1] into entries
  std::vector<const Candidate<T>*> entries;
};

// Sets the triangles up and bins them by band in one parallel counting sort. Fixed chunks of
// consecutive triangles each keep their candidates (dense meshes have many triangles that cover
// no pixel centre: they cost a setup and nothing more) and count them per bin, then fill their
// own slots, chunk after chunk within each bin, so every bin lists its triangles in index order
// whatever the thread count.
template <typename T>
BandBins<T> setup_and_bin(const T* clip, const int64_t* tris, int64_t batch, int64_t num_vertices,
                          int64_t num_triangles, int width, int height, int64_t bands) {
  const int64_t total = batch * num_triangles, bins_count = batch * bands;
  const int64_t chunks = std::min<int64_t>(128, std::max<int64_t>(1, total / 1024));
  auto chunk_begin = [&](int64_t chunk) { return total * chunk / chunks; };
  auto bins_of = [&](const Candidate<T>& c) {
    const int64_t image_bins = c.key / num_triangles * bands;
    return std::pair{image_bins + c.setup.y_min / kBandRows, image_bins + c.setup.y_max / kBandRows};
  };
  BandBins<T> bins;
  bins.candidates.resize(chunks);
  std::vector<int64_t> cursor(chunks * bins_count, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t last = chunk_begin(chunk + 1);
      for (int64_t i = chunk_begin(chunk); i < last; ++i) {
        const T* v = clip + (i / num_triangles) * num_vertices * 4;
        const int64_t* t = tris + (i % num_triangles) * 3;
        // Dense meshes index vertices far apart: start loading those of a later triangle now.
        if (i + kPrefetchAhead < last && (i + kPrefetchAhead) % num_triangles >= kPrefetchAhead) {
          const int64_t* later = t + 3 * kPrefetchAhead;
          for (int k = 0; k < 3; ++k) __builtin_prefetch(v + 4 * later[k]);
        }
        Candidate<T> c;
        setup_triangle(v + 4 * t[0], v + 4 * t[1], v + 4 * t[2], width, height, c.setup);
        if (c.setup.x_min > c.setup.x_max || c.setup.y_min > c.setup.y_max) continue;
        c.key = i;
        bins.candidates[chunk].push_back(c);
        const auto [first_bin, last_bin] = bins_of(c);
        for (int64_t bin = first_bin; bin <= last_bin; ++bin) ++cursor[chunk * bins_count + bin];
      }
    }
  });
  bins.offsets.assign(bins_count + 1, 0);
  int64_t running = 0;
  for (int64_t bin = 0; bin < bins_count; ++bin) {
    bins.offsets[bin] = running;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t count = cursor[chunk * bins_count + bin];
      cursor[chunk * bins_count + bin] = running;
      running += count;
    }
  }
  bins.offsets[bins_count] = running;
  bins.entries.resize(running);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      for (const Candidate<T>& c : bins.candidates[chunk]) {
        const auto [first_bin, last_bin] = bins_of(c);
        for (int64_t bin = first_bin; bin <= last_bin; ++bin) bins.entries[cursor[chunk * bins_count + bin]++] = &c;
      }
    }
  });
  return bins;
}

template <typename T>
void rasterize_band(const Candidate<T>* const* band_entries, int64_t count, int64_t num_triangles, int y0, int y1,
                    int width, int height, int64_t* ids, T* bary, T* zbuf) {
  for (int64_t n = 0; n < count; ++n) {
    const TriangleSetup<T>& s = band_entries[n]->setup;
    const int64_t tri = band_entries[n]->key % num_triangles;
    const int row_begin = std::max(y0, s.y_min), row_end = std::min(y1 - 1, s.y_max);
    for (int iy = row_begin; iy <= row_end; ++iy) {
      const T py = pixel_center_ndc<T>(iy, height);
      int lo, hi;
      row_span(s, py, width, lo, hi);
      lo = std::max(lo, s.x_min);
      hi = std::min(hi, s.x_max);
      for (int ix = lo; ix <= hi; ++ix) {
        T e[3];
        edge_values(s, pixel_center_ndc<T>(ix, width), py, e);
        if (!is_inside(e)) continue;
        T b[3];
        const T z = barycentrics_and_depth(s, e, b);
        const int64_t p = int64_t(iy) * width + ix;
        // Near and far planes come from the z test; ties go to the later triangle, as in tf.
        if (!in_depth_range(z) || z > zbuf[p]) continue;
        zbuf[p] = z;
        ids[p] = tri;
        bary[3 * p] = b[0];
        bary[3 * p + 1] = b[1];
        bary[3 * p + 2] = b[2];
      }
    }
  }
}

template <typename T>
void forward_impl(const at::Tensor& clip_vertices, const at::Tensor& triangles, at::Tensor& ids,
                  at::Tensor& bary, at::Tensor& zbuf) {
  const int64_t batch = clip_vertices.size(0), num_vertices = clip_vertices.size(1);
  const int64_t num_triangles = triangles.size(0);
  const int height = static_cast<int>(ids.size(1)), width = static_cast<int>(ids.size(2));
  const int64_t bands = (height + kBandRows - 1) / kBandRows;
  const BandBins<T> bins = setup_and_bin(clip_vertices.data_ptr<T>(), triangles.data_ptr<int64_t>(), batch,
                                         num_vertices, num_triangles, width, height, bands);
  int64_t* ids_ptr = ids.data_ptr<int64_t>();
  T* bary_ptr = bary.data_ptr<T>();
  T* z_ptr = zbuf.data_ptr<T>();
  parallel_for_interleaved(batch * bands, [&](int64_t item) {
    const int64_t b = item / bands;
    const int y0 = static_cast<int>(item % bands) * kBandRows;
    const int y1 = std::min(height, y0 + kBandRows);
    const int64_t first = int64_t(y0) * width, pixels = int64_t(y1 - y0) * width;
    const int64_t image = b * int64_t(height) * width;
    // Each band clears its own rows so no memory is touched twice by different threads.
    std::fill_n(ids_ptr + image + first, pixels, int64_t(0));
    std::fill_n(bary_ptr + 3 * (image + first), 3 * pixels, T(0));
    std::fill_n(z_ptr + image + first, pixels, T(1));
    rasterize_band(bins.entries.data() + bins.offsets[item], bins.offsets[item + 1] - bins.offsets[item],
                   num_triangles, y0, y1, width, height, ids_ptr + image, bary_ptr + 3 * image, z_ptr + image);
  });
}

template <typename T>
void backward_impl(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                   const at::Tensor& ids, const at::Tensor& bary, const at::Tensor& grad_bary,
                   at::Tensor& grad_vertices) {
  const int64_t batch = clip_vertices.size(0), num_vertices = clip_vertices.size(1);
  const int64_t num_triangles = triangles.size(0);
  const int height = static_cast<int>(ids.size(1)), width = static_cast<int>(ids.size(2));
  const T* clip = clip_vertices.data_ptr<T>();
  const int64_t* tris = triangles.data_ptr<int64_t>();
  const T* grad_ptr = grad_bary.data_ptr<T>();
  const int64_t pixels = int64_t(height) * width;
  // Only triangles that won pixels need a setup: each band makes its own as it meets them, far
  // fewer than the triangles of a dense mesh.
  std::vector<std::vector<TriangleSetup<T>>> band_setups(batch * sum_bands_per_image(height));
  // Per corner the x, y and w gradients; z stays zero.
  const WonTriangleSums<T> corners = sum_over_won_pixels(
      ids.data_ptr<int64_t>(), bary.data_ptr<T>(), batch, height, width, num_triangles, 12,
      [&](const WonPixel<T>& won) {
        std::vector<TriangleSetup<T>>& setups = band_setups[won.band];
        if (won.record == static_cast<int32_t>(setups.size())) {
          const T* v = clip + (won.pixel / pixels) * num_vertices * 4;
          const int64_t* t = tris + 3 * won.triangle;
          setups.emplace_back();
          setup_triangle_edges(v + 4 * t[0], v + 4 * t[1], v + 4 * t[2], setups.back());
        }
        T g[3][3];
        barycentric_vertex_grads(setups[won.record], won.weights, grad_ptr + 3 * won.pixel, g);
        for (int k = 0; k < 3; ++k) {
          won.sum[4 * k + 0] += g[k][0];
          won.sum[4 * k + 1] += g[k][1];
          won.sum[4 * k + 3] += g[k][2];
        }
      },
      [](int64_t) {});
  add_corners_to_vertices(corners.sums.data(), corners.keys, tris, batch,
                          num_triangles, num_vertices, 4, grad_vertices.data_ptr<T>());
}

}  // namespace

void rasterize_triangles_forward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                     at::Tensor& triangle_ids, at::Tensor& barycentrics,
                                     at::Tensor& z_buffer) {
  AT_DISPATCH_FLOATING_TYPES(clip_vertices.scalar_type(), "rasterize_triangles_forward_cpu", [&] {
    forward_impl<scalar_t>(clip_vertices, triangles, triangle_ids, barycentrics, z_buffer);
  });
}

void rasterize_triangles_backward_cpu(const at::Tensor& clip_vertices, const at::Tensor& triangles,
                                      const at::Tensor& triangle_ids, const at::Tensor& barycentrics,
                                      const at::Tensor& grad_barycentrics, at::Tensor& grad_vertices) {
  AT_DISPATCH_FLOATING_TYPES(clip_vertices.scalar_type(), "rasterize_triangles_backward_cpu", [&] {
    backward_impl<scalar_t>(clip_vertices, triangles, triangle_ids, barycentrics, grad_barycentrics,
                            grad_vertices);
  });
}

}  // namespace diffrender
