// CPU kernels of the analytic antialiasing. Every pass is parallel over image rows and writes only
// its own rows; each output pixel gathers the pairs that touch it in a fixed order, and vertex
// gradients are written as rows in raster order and summed by index_add_, so the bits do not
// depend on the thread count.
#include "antialias/antialias.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>

#include "antialias/antialias_math.h"
#include "common/parallel.h"

namespace diffrender {
namespace {

template <typename T>
AntialiasBuffers<T> buffers(const at::Tensor& color, const at::Tensor& ids, const at::Tensor& clip,
                            const at::Tensor& triangles, const at::Tensor& neighbors, const at::Tensor& bary,
                            const at::Tensor& zbuf) {
  AntialiasBuffers<T> in;
  in.color = color.data_ptr<T>();
  in.ids = ids.data_ptr<int64_t>();
  in.clip = clip.data_ptr<T>();
  in.triangles = triangles.data_ptr<int64_t>();
  in.neighbors = neighbors.data_ptr<int64_t>();
  in.bary = bary.defined() ? bary.data_ptr<T>() : nullptr;
  in.zbuf = zbuf.defined() ? zbuf.data_ptr<T>() : nullptr;
  in.batch = color.size(0);
  in.num_vertices = clip.size(1);
  in.channels = color.size(3);
  in.height = static_cast<int>(color.size(1));
  in.width = static_cast<int>(color.size(2));
  return in;
}

template <typename T>
void forward_impl(const AntialiasBuffers<T>& in, T* out, T* pair_alpha, int32_t* pair_code) {
  const int64_t rows = in.batch * in.height;
  // Silhouettes are not spread evenly over the rows: deal rows out round-robin.
  parallel_for_interleaved(rows, [&](int64_t row) {
    const int64_t b = row / in.height;
    const int iy = static_cast<int>(row % in.height);
    const int64_t first = row * in.width;
    for (int ix = 0; ix < in.width; ++ix)
      analyze_pixel_pairs(in, b, ix, iy, pair_alpha + 2 * (first + ix), pair_code + 2 * (first + ix));
  });
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / in.height;
      const int iy = static_cast<int>(row % in.height);
      for (int ix = 0; ix < in.width; ++ix) blend_pixel(in, pair_alpha, b, ix, iy, out);
    }
  });
}

template <typename T>
void backward_impl(const AntialiasBuffers<T>& in, const T* pair_alpha, const int32_t* pair_code, const T* grad_out,
                   T* grad_color, at::Tensor& grad_clip) {
  const int64_t rows = in.batch * in.height;
  // Colour gradients, and per row the number of pairs that move vertices.
  std::vector<int64_t> offsets(rows + 1, 0);
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / in.height;
      const int iy = static_cast<int>(row % in.height);
      for (int ix = 0; ix < in.width; ++ix) color_grad_pixel(in, pair_alpha, grad_out, b, ix, iy, grad_color);
      const int32_t* codes = pair_code + 2 * row * in.width;
      int64_t count = 0;
      for (int64_t i = 0; i < 2 * int64_t(in.width); ++i) count += codes[i] != 0;
      offsets[row + 1] = count;
    }
  });
  // Vertex gradient rows go out in raster order.
  for (int64_t row = 0; row < rows; ++row) offsets[row + 1] += offsets[row];
  const int64_t pairs = offsets[rows];
  if (pairs == 0) return;
  auto keys = at::empty({2 * pairs}, grad_clip.options().dtype(at::kLong));
  auto values = at::empty({2 * pairs, 4}, grad_clip.options());
  int64_t* key_ptr = keys.data_ptr<int64_t>();
  T* value_ptr = values.data_ptr<T>();
  parallel_for_interleaved(rows, [&](int64_t row) {
    const int64_t b = row / in.height;
    const int iy = static_cast<int>(row % in.height);
    int64_t next = offsets[row];
    if (next == offsets[row + 1]) return;
    for (int ix = 0; ix < in.width; ++ix) {
      for (int slot = 0; slot < 2; ++slot) {
        int64_t k[2];
        T r[2][4];
        if (!pair_vertex_rows(in, pair_alpha, pair_code, grad_out, b, ix, iy, slot, k, r)) continue;
        for (int i = 0; i < 2; ++i) {
          key_ptr[2 * next + i] = k[i];
          for (int c = 0; c < 4; ++c) value_ptr[4 * (2 * next + i) + c] = r[i][c];
        }
        ++next;
      }
    }
  });
  grad_clip.view({-1, 4}).index_add_(0, keys, values);
}

}  // namespace

void antialias_forward_cpu(const at::Tensor& color, const at::Tensor& ids, const at::Tensor& clip,
                           const at::Tensor& triangles, const at::Tensor& neighbors, const at::Tensor& bary,
                           const at::Tensor& zbuf, at::Tensor& out, at::Tensor& pair_alpha, at::Tensor& pair_code) {
  AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_forward_cpu", [&] {
    forward_impl<scalar_t>(buffers<scalar_t>(color, ids, clip, triangles, neighbors, bary, zbuf),
                           out.data_ptr<scalar_t>(), pair_alpha.data_ptr<scalar_t>(), pair_code.data_ptr<int32_t>());
  });
}

void antialias_backward_cpu(const at::Tensor& grad_out, const at::Tensor& color, const at::Tensor& ids,
                            const at::Tensor& clip, const at::Tensor& triangles, const at::Tensor& neighbors,
                            const at::Tensor& pair_alpha, const at::Tensor& pair_code, at::Tensor& grad_color,
                            at::Tensor& grad_clip) {
  AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_backward_cpu", [&] {
    backward_impl<scalar_t>(buffers<scalar_t>(color, ids, clip, triangles, neighbors, at::Tensor(), at::Tensor()),
                            pair_alpha.data_ptr<scalar_t>(), pair_code.data_ptr<int32_t>(),
                            grad_out.data_ptr<scalar_t>(), grad_color.data_ptr<scalar_t>(), grad_clip);
  });
}

}  // namespace diffrender
