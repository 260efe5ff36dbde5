// Backward passes reduce per triangle: one thread walks the pixels a triangle won in the z-test,
// in raster order, so gradient sums need neither atomics nor per-thread copies and are
// bit-identical for any thread count.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace diffrender {

// Asks the CPU to start loading [begin, begin + bytes) into the cache.
inline void prefetch_span(const void* begin, int64_t bytes) {
  const char* first = static_cast<const char*>(begin);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(first + offset);
  if (bytes > 0) __builtin_prefetch(first + bytes - 1);
}

struct NoPrefetch {
  void operator()(int64_t, int) const {}
};

// Calls visit(pixel_index, barycentrics) for each covered pixel in [x0,x1]×[y0,y1] whose visible
// triangle is `tri`. Uncovered pixels carry id 0 with zero barycentrics. A walk jumps from row to
// row, which the hardware prefetcher cannot follow, so the next row's ids and barycentrics (and
// whatever prefetch_row(first pixel, count) loads) are requested while this row is visited.
template <typename T, typename Visit, typename PrefetchRow = NoPrefetch>
inline void for_each_owned_pixel(const int64_t* ids, const T* bary, int64_t tri, int x0, int x1, int y0,
                                 int y1, int width, Visit&& visit, PrefetchRow&& prefetch_row = NoPrefetch()) {
  const int span = x1 - x0 + 1;
  for (int iy = y0; iy <= y1; ++iy) {
    if (iy < y1) {
      const int64_t next = int64_t(iy + 1) * width + x0;
      prefetch_span(ids + next, span * int64_t(sizeof(int64_t)));
      prefetch_span(bary + 3 * next, 3 * span * int64_t(sizeof(T)));
      prefetch_row(next, span);
    }
    for (int ix = x0; ix <= x1; ++ix) {
      const int64_t p = int64_t(iy) * width + ix;
      if (ids[p] != tri) continue;
      const T* b = bary + 3 * p;
      if (b[0] + b[1] + b[2] < T(0.5)) continue;
      visit(p, b);
    }
  }
}

// Pixel bounding boxes {x_min, x_max, y_min, y_max} of what each triangle won, [B*F*4]; empty
// boxes have x_min > x_max. Min and max commute, so the parallel atomic updates give one answer.
// This is the first pass of every CPU backward over rasterized pixels, so it also validates the
// ids of covered pixels (the only ones any kernel dereferences), which saves a separate pass.
template <typename T>
std::vector<int32_t> owned_pixel_bounds(const int64_t* ids, const T* bary, int64_t batch, int height,
                                        int width, int64_t num_triangles) {
  std::vector<int32_t> bounds(batch * num_triangles * 4);
  for (int64_t i = 0; i < batch * num_triangles; ++i) {
    bounds[4 * i] = width;
    bounds[4 * i + 1] = -1;
    bounds[4 * i + 2] = height;
    bounds[4 * i + 3] = -1;
  }
  auto atomic_min = [](int32_t* slot, int32_t value) {
    int32_t current = __atomic_load_n(slot, __ATOMIC_RELAXED);
    while (value < current &&
           !__atomic_compare_exchange_n(slot, &current, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  };
  auto atomic_max = [](int32_t* slot, int32_t value) {
    int32_t current = __atomic_load_n(slot, __ATOMIC_RELAXED);
    while (value > current &&
           !__atomic_compare_exchange_n(slot, &current, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  };
  std::atomic<bool> out_of_range{false};
  at::parallel_for(0, batch * height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / height;
      const int iy = static_cast<int>(row % height);
      int64_t run_tri = -1;
      int run_start = 0;
      // Runs of equal ids along a row update the bounds once per run, not once per pixel.
      auto flush = [&](int run_end) {
        if (run_tri < 0) return;
        int32_t* box = bounds.data() + 4 * (b * num_triangles + run_tri);
        atomic_min(box, run_start);
        atomic_max(box + 1, run_end);
        atomic_min(box + 2, iy);
        atomic_max(box + 3, iy);
      };
      for (int ix = 0; ix < width; ++ix) {
        const int64_t p = row * width + ix;
        const T* bb = bary + 3 * p;
        const bool covered = bb[0] + bb[1] + bb[2] >= T(0.5);
        int64_t tri = covered ? ids[p] : -1;
        if (covered && (tri < 0 || tri >= num_triangles)) {
          out_of_range.store(true, std::memory_order_relaxed);
          tri = -1;
        }
        if (tri != run_tri) {
          flush(ix - 1);
          run_tri = tri;
          run_start = ix;
        }
      }
      flush(width - 1);
    }
  });
  TORCH_CHECK_INDEX(!out_of_range.load(), "triangle_ids must lie in [0, ", num_triangles, ") on covered pixels");
  return bounds;
}

// Per-triangle corner gradients of per-pixel attribute gradients: corners[b,f,k,c] = Σ over the
// pixels p that triangle f won of b_k(p) · pixel_grads[b,p,c]. corners: [B,F,3,C]; pixel_grads:
// [B,H,W,C], read only at covered pixels.
template <typename T>
void accumulate_corner_gradients(const T* pixel_grads, const int64_t* ids, const T* bary, int64_t batch,
                                 int height, int width, int64_t num_triangles, int64_t channels, T* corners) {
  const int64_t pixels = int64_t(height) * width;
  const auto bounds = owned_pixel_bounds(ids, bary, batch, height, width, num_triangles);
  parallel_for_interleaved(batch * num_triangles, [&](int64_t i) {
    T* acc = corners + i * 3 * channels;
    std::fill_n(acc, 3 * channels, T(0));
    const int64_t image = (i / num_triangles) * pixels;
    const int32_t* box = bounds.data() + 4 * i;
    for_each_owned_pixel(ids + image, bary + 3 * image, i % num_triangles, box[0], box[1], box[2], box[3], width,
                         [&](int64_t p, const T* weights) {
                           const T* gp = pixel_grads + (image + p) * channels;
                           for (int k = 0; k < 3; ++k)
                             for (int64_t c = 0; c < channels; ++c) acc[k * channels + c] += weights[k] * gp[c];
                         });
  });
}

}  // namespace diffrender
