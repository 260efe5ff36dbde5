// Per-triangle-corner gradients summed into their vertices on the CPU. Each vertex adds its
// corners in (triangle, corner) order, whoever computes it, so the bits never depend on the
// thread count; it is also far cheaper than index_add_, whose per-row overhead dominates at
// these row widths.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace diffrender {

// vertices[b, triangles[t, k], :] += corners[r, k, :] for rows r of corners [rows, 3, C], where
// image b's rows are [first_row_of(b), first_row_of(b + 1)) and row r holds triangle
// key_of(r) - b * F. vertices: [B,V,C]. Triangle indices must already be checked against V.
template <typename T, typename FirstRowOf, typename KeyOf>
void add_corner_rows_to_vertices(const T* corners, const FirstRowOf& first_row_of, const KeyOf& key_of,
                                 const int64_t* triangles, int64_t batch, int64_t num_triangles,
                                 int64_t num_vertices, int64_t channels, T* vertices) {
  // Threads split the vertex range; each scans every row of its image and keeps its own vertices.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num_vertices));
  at::parallel_for(0, batch * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / parts, part = item % parts;
      const int64_t first = num_vertices * part / parts, last = num_vertices * (part + 1) / parts;
      T* out = vertices + b * num_vertices * channels;
      for (int64_t r = first_row_of(b); r < first_row_of(b + 1); ++r) {
        const int64_t t = key_of(r) - b * num_triangles;
        for (int k = 0; k < 3; ++k) {
          const int64_t v = triangles[3 * t + k];
          if (v < first || v >= last) continue;
          const T* in = corners + (3 * r + k) * channels;
          for (int64_t c = 0; c < channels; ++c) out[v * channels + c] += in[c];
        }
      }
    }
  });
}

// Every triangle's corners: corners [B, F, 3, C].
template <typename T>
void add_corners_to_vertices(const T* corners, const int64_t* triangles, int64_t batch, int64_t num_triangles,
                             int64_t num_vertices, int64_t channels, T* vertices) {
  add_corner_rows_to_vertices(
      corners, [&](int64_t image) { return image * num_triangles; }, [](int64_t r) { return r; }, triangles,
      batch, num_triangles, num_vertices, channels, vertices);
}

// Some triangles' corners: corners [keys.size(), 3, C], row r for triangle keys[r] = b * F + t,
// keys increasing.
template <typename T>
void add_corners_to_vertices(const T* corners, const std::vector<int64_t>& keys, const int64_t* triangles,
                             int64_t batch, int64_t num_triangles, int64_t num_vertices, int64_t channels,
                             T* vertices) {
  add_corner_rows_to_vertices(
      corners,
      [&](int64_t image) { return std::lower_bound(keys.begin(), keys.end(), image * num_triangles) - keys.begin(); },
      [&](int64_t r) { return keys[r]; }, triangles, batch, num_triangles, num_vertices, channels, vertices);
}

}  // namespace diffrender
