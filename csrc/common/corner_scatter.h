// Per-triangle-corner gradients summed into their vertices on the CPU. Each vertex adds its
// corners in corner order, whoever computes it, so the bits never depend on the thread count;
// it is also far cheaper than index_add_, whose per-row overhead dominates at these row widths.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace diffrender {

// vertices[b, triangles[i], :] += corners[b, i, :] for every corner i of [B, F*3, C] corners;
// vertices: [B,V,C]. Triangle indices must already be checked against V.
template <typename T>
void add_corners_to_vertices(const T* corners, const int64_t* triangles, int64_t batch, int64_t num_triangles,
                             int64_t num_vertices, int64_t channels, T* vertices) {
  // Threads split the vertex range; each scans every corner and keeps its own vertices.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num_vertices));
  at::parallel_for(0, batch * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / parts, part = item % parts;
      const int64_t first = num_vertices * part / parts, last = num_vertices * (part + 1) / parts;
      T* out = vertices + b * num_vertices * channels;
      const T* in = corners + b * num_triangles * 3 * channels;
      for (int64_t corner = 0; corner < num_triangles * 3; ++corner) {
        const int64_t v = triangles[corner];
        if (v < first || v >= last) continue;
        for (int64_t c = 0; c < channels; ++c) out[v * channels + c] += in[corner * channels + c];
      }
    }
  });
}

}  // namespace diffrender
