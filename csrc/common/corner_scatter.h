// Per-triangle-corner gradients summed into their vertices on the CPU. Each vertex adds its
// corners in row order, whoever computes it, so the bits never depend on the
// thread count; it is also far cheaper than index_add_, whose per-row overhead dominates at
// these row widths.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace diffrender {

// vertices[b, triangles[t, k], :] += corners[r, k, :] for each row r of corners [keys.size(), 3, C],
// whose triangle is keys[r] = b * F + t. keys are non-decreasing: a triangle may have several
// rows, or none. vertices: [B,V,C]. Triangle indices must already be checked against V.
template <typename T>
void add_corners_to_vertices(const T* corners, const std::vector<int64_t>& keys, const int64_t* triangles,
                             int64_t batch, int64_t num_triangles, int64_t num_vertices, int64_t channels,
                             T* vertices) {
  const auto first_row_of = [&](int64_t image) {
    return std::lower_bound(keys.begin(), keys.end(), image * num_triangles) - keys.begin();
  };
  // Threads split the vertex range; each scans every row of its image and keeps its own vertices.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num_vertices));
  at::parallel_for(0, batch * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / parts, part = item % parts;
      const int64_t first = num_vertices * part / parts, last = num_vertices * (part + 1) / parts;
      T* out = vertices + b * num_vertices * channels;
      for (int64_t r = first_row_of(b); r < first_row_of(b + 1); ++r) {
        const int64_t t = keys[r] - b * num_triangles;
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

}  // namespace diffrender
