// Backward passes over rasterized pixels reduce per-pixel gradients into per-triangle sums. The
// image is streamed in raster order, one band of rows per task: a band sums into its own record
// for each triangle it meets, and the records are then added per triangle in band order. Every
// sum thus has one fixed order whatever the thread count, needs no atomics, and the pixels are
// read front to back, which the hardware prefetcher follows (a per-triangle walk jumping from row
// to row stalls on memory instead).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace diffrender {

constexpr int kSumBandRows = 16;

inline int64_t sum_bands_per_image(int height) { return (height + kSumBandRows - 1) / kSumBandRows; }

// One band's running sums: sums[r * sum_size ...] belongs to triangles[r].
template <typename T>
struct BandSums {
  std::vector<int32_t> triangles;
  std::vector<T> sums;
};

// What a visit sees of one covered pixel.
template <typename T>
struct WonPixel {
  int64_t pixel;     // index in the [B*H*W] stack
  int64_t triangle;  // the triangle that won it
  const T* weights;  // its barycentrics
  T* sum;            // the triangle's running sum in this band (sum_size values)
  int64_t band;      // in [0, B * sum_bands_per_image(H)), one thread's at a time
  int32_t record;    // the triangle's record in this band, numbered from 0 as the band meets them
};

// The triangles that won pixels, with their sums over those pixels.
template <typename T>
struct WonTriangleSums {
  std::vector<int64_t> keys;  // image * F + triangle, increasing
  std::vector<T> sums;        // [keys.size(), sum_size]
};

// Streams every covered pixel (barycentrics summing to about 1; uncovered pixels carry zeros) of
// ids [B,H,W] and bary [B,H,W,3], band by band, calling visit(const WonPixel<T>&); uncovered
// pixels go to skip(pixel). Returns, per triangle that won pixels, its total over them. The id of
// a covered pixel is checked before it is used.
template <typename T, typename Visit, typename Skip>
WonTriangleSums<T> sum_over_won_pixels(const int64_t* ids, const T* bary, int64_t batch, int height, int width,
                                       int64_t num_triangles, int64_t sum_size, const Visit& visit,
                                       const Skip& skip) {
  const int64_t bands = sum_bands_per_image(height);
  std::vector<BandSums<T>> band_sums(batch * bands);
  std::atomic<bool> out_of_range{false};
  parallel_for_interleaved_with_scratch(
      batch * bands, [&] { return std::vector<int32_t>(num_triangles, -1); },
      [&](int64_t band, std::vector<int32_t>& slot_of) {
        const int64_t image = band / bands;
        const int y0 = static_cast<int>(band % bands) * kSumBandRows;
        const int64_t first = (image * height + y0) * int64_t(width);
        const int64_t last = (image * height + std::min(height, y0 + kSumBandRows)) * int64_t(width);
        BandSums<T>& own = band_sums[band];
        for (int64_t p = first; p < last; ++p) {
          const T* weights = bary + 3 * p;
          if (weights[0] + weights[1] + weights[2] < T(0.5)) {
            skip(p);
            continue;
          }
          const int64_t tri = ids[p];
          if (tri < 0 || tri >= num_triangles) {
            out_of_range.store(true, std::memory_order_relaxed);
            continue;
          }
          int32_t slot = slot_of[tri];
          if (slot < 0) {
            slot = slot_of[tri] = static_cast<int32_t>(own.triangles.size());
            own.triangles.push_back(static_cast<int32_t>(tri));
            own.sums.resize(own.sums.size() + sum_size, T(0));
          }
          visit(WonPixel<T>{p, tri, weights, own.sums.data() + slot * sum_size, band, slot});
        }
        for (int32_t tri : own.triangles) slot_of[tri] = -1;
      });
  TORCH_CHECK_INDEX(!out_of_range.load(), "triangle_ids must lie in [0, ", num_triangles, ") on covered pixels");

  // Per triangle, its band records in band order (a counting sort), then one sum per triangle.
  std::vector<int64_t> offsets(batch * num_triangles + 1, 0);
  for (int64_t band = 0; band < batch * bands; ++band)
    for (int32_t tri : band_sums[band].triangles) ++offsets[(band / bands) * num_triangles + tri + 1];
  WonTriangleSums<T> won;
  for (int64_t key = 0; key < batch * num_triangles; ++key)
    if (offsets[key + 1] > 0) won.keys.push_back(key);
  for (size_t i = 1; i < offsets.size(); ++i) offsets[i] += offsets[i - 1];
  std::vector<const T*> records(offsets.back());
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t band = 0; band < batch * bands; ++band) {
    const BandSums<T>& own = band_sums[band];
    for (size_t r = 0; r < own.triangles.size(); ++r)
      records[cursor[(band / bands) * num_triangles + own.triangles[r]]++] = own.sums.data() + r * sum_size;
  }
  won.sums.assign(won.keys.size() * sum_size, T(0));
  at::parallel_for(0, static_cast<int64_t>(won.keys.size()), 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* out = won.sums.data() + i * sum_size;
      const int64_t key = won.keys[i];
      for (int64_t r = offsets[key]; r < offsets[key + 1]; ++r)
        for (int64_t c = 0; c < sum_size; ++c) out[c] += records[r][c];
    }
  });
  return won;
}

}  // namespace diffrender
