// The tf_mesh_renderer rasterizer's math: 2-D homogeneous rasterization (Olano & Greer 1997).
// A triangle's clip-space (x, y, w) columns form M; the edge functions at pixel p = (px, py, 1)
// are adj(M)·p, which are b_k / w_p up to a common scale. Triangles behind the eye or crossing
// w = 0 therefore need no clipping: the signs of the edge functions sort it out.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace diffrender {

template <typename T>
struct TriangleSetup {
  T edge[9];    // adj(M) rows times sign(det): edge_k(p) = edge[3k]·px + edge[3k+1]·py + edge[3k+2]
  T z[3];       // clip-space z of the three vertices
  T w[3];       // clip-space w of the three vertices
  int x_min, x_max, y_min, y_max;  // inclusive pixel bounds; x_min > x_max when nothing is covered
};

// The edge functions, z and w of a triangle from its clip vertices (x, y, z, w), the columns of
// M. Returns false when det(M) == 0: the triangle is degenerate (zero area, or seen edge-on); and
// when det(M) is not finite: a coordinate is infinite or NaN, and the triangle has no pixels.
template <typename T>
HOST_DEVICE bool setup_triangle_edges(const T* v0, const T* v1, const T* v2, TriangleSetup<T>& s) {
  const T x0 = v0[0], y0 = v0[1], w0 = v0[3];
  const T x1 = v1[0], y1 = v1[1], w1 = v1[3];
  const T x2 = v2[0], y2 = v2[1], w2 = v2[3];
  T* m = s.edge;
  m[0] = y1 * w2 - w1 * y2;
  m[1] = w1 * x2 - x1 * w2;
  m[2] = x1 * y2 - y1 * x2;
  m[3] = w0 * y2 - y0 * w2;
  m[4] = x0 * w2 - w0 * x2;
  m[5] = y0 * x2 - x0 * y2;
  m[6] = y0 * w1 - w0 * y1;
  m[7] = w0 * x1 - x0 * w1;
  m[8] = x0 * y1 - y0 * x1;
  const T det = x0 * m[0] + x1 * m[3] + x2 * m[6];
  s.z[0] = v0[2]; s.z[1] = v1[2]; s.z[2] = v2[2];
  s.w[0] = w0; s.w[1] = w1; s.w[2] = w2;
  if (!(det != T(0)) || !is_finite(det)) return false;
  if (det < T(0)) {
    for (int i = 0; i < 9; ++i) m[i] = -m[i];
  }
  return true;
}

// The edge functions plus the pixel bounds; degenerate triangles get an empty box.
template <typename T>
HOST_DEVICE void setup_triangle(const T* v0, const T* v1, const T* v2, int width, int height,
                                TriangleSetup<T>& s) {
  s.x_min = 0; s.x_max = width - 1; s.y_min = 0; s.y_max = height - 1;
  if (!setup_triangle_edges(v0, v1, v2, s)) {
    s.x_min = 1; s.x_max = 0;
    return;
  }
  const T x0 = v0[0], y0 = v0[1], w0 = v0[3];
  const T x1 = v1[0], y1 = v1[1], w1 = v1[3];
  const T x2 = v2[0], y2 = v2[1], w2 = v2[3];
  if (w0 > T(0) && w1 > T(0) && w2 > T(0)) {
    // In front of the eye: the projected vertices bound the triangle, and only pixel centres
    // inside that box can pass the edge test. A small margin absorbs the rounding of x/w, so
    // the box never drops a centre the exact test accepts, while the many sub-pixel triangles
    // of dense meshes that straddle no centre get an empty box and cost nothing more.
    const T nx0 = x0 / w0, nx1 = x1 / w1, nx2 = x2 / w2;
    const T ny0 = y0 / w0, ny1 = y1 / w1, ny2 = y2 / w2;
    const T to_px = T(0.5) * T(width), to_py = T(0.5) * T(height);
    const T margin = T(0.01);
    const T left = ceil((min3(nx0, nx1, nx2) + T(1)) * to_px - T(0.5) - margin);
    const T right = floor((max3(nx0, nx1, nx2) + T(1)) * to_px - T(0.5) + margin);
    const T bottom = ceil((min3(ny0, ny1, ny2) + T(1)) * to_py - T(0.5) - margin);
    const T top = floor((max3(ny0, ny1, ny2) + T(1)) * to_py - T(0.5) + margin);
    // Clamp in floating point first: far off-screen vertices must not overflow int.
    s.x_min = int(clamp_value(left, T(0), T(width)));
    s.x_max = int(clamp_value(right, T(-1), T(width - 1)));
    s.y_min = int(clamp_value(bottom, T(0), T(height)));
    s.y_max = int(clamp_value(top, T(-1), T(height - 1)));
  }
}

template <typename T>
HOST_DEVICE void edge_values(const TriangleSetup<T>& s, T px, T py, T e[3]) {
  e[0] = s.edge[0] * px + s.edge[1] * py + s.edge[2];
  e[1] = s.edge[3] * px + s.edge[4] * py + s.edge[5];
  e[2] = s.edge[6] * px + s.edge[7] * py + s.edge[8];
}

// tf's rule: on or inside every edge, and not the degenerate all-zero case. Pixels on an edge
// count for either winding, so shared edges leave no cracks.
template <typename T>
HOST_DEVICE bool is_inside(const T e[3]) {
  return e[0] >= T(0) && e[1] >= T(0) && e[2] >= T(0) && (e[0] > T(0) || e[1] > T(0) || e[2] > T(0));
}

// Perspective-correct barycentrics and NDC depth from inside edge values.
template <typename T>
HOST_DEVICE T barycentrics_and_depth(const TriangleSetup<T>& s, const T e[3], T b[3]) {
  const T inv_sum = T(1) / (e[0] + e[1] + e[2]);
  b[0] = e[0] * inv_sum;
  b[1] = e[1] * inv_sum;
  b[2] = e[2] * inv_sum;
  const T clip_z = b[0] * s.z[0] + b[1] * s.z[1] + b[2] * s.z[2];
  const T clip_w = b[0] * s.w[0] + b[1] * s.w[1] + b[2] * s.w[2];
  return clip_z / clip_w;
}

// The near and far planes: NDC depth in [-1, 1]. NaN fails too, so a NaN depth never wins a pixel.
template <typename T>
HOST_DEVICE bool in_depth_range(T z) {
  return z >= T(-1) && z <= T(1);
}

// Column range [lo, hi] of row py where all three edge values may be non-negative, widened by a
// pixel so that rounding never drops a pixel the exact test accepts.
template <typename T>
HOST_DEVICE void row_span(const TriangleSetup<T>& s, T py, int width, int& lo, int& hi) {
  T px_lo = T(-1e30), px_hi = T(1e30);
  for (int k = 0; k < 3; ++k) {
    const T a = s.edge[3 * k], c = s.edge[3 * k + 1] * py + s.edge[3 * k + 2];
    if (a > T(0)) {
      const T root = -c / a;
      px_lo = root > px_lo ? root : px_lo;
    } else if (a < T(0)) {
      const T root = -c / a;
      px_hi = root < px_hi ? root : px_hi;
    } else if (c < T(0)) {
      lo = 1; hi = 0;
      return;
    }
  }
  // px = 2(ix+0.5)/W - 1  <=>  ix = (px+1)W/2 - 0.5
  const T half_w = T(0.5) * T(width);
  const T ix_lo = (px_lo + T(1)) * half_w - T(1.5);
  const T ix_hi = (px_hi + T(1)) * half_w + T(0.5);
  lo = int(clamp_value(ix_lo, T(0), T(width)));
  hi = int(clamp_value(ix_hi, T(-1), T(width - 1)));
}

// d(loss)/d(clip x, y, w) of the three vertices, given d(loss)/d(barycentrics) at a pixel.
// With e = M⁻¹p and b = e / Σe:  ∂b_i/∂M[c][k] = -b_k (M⁻¹[i][c] - b_i Σ_j M⁻¹[j][c]), so
// d(loss)/dM[c][k] = -b_k Σ_i (g_i - g·b) M⁻¹[i][c]. M⁻¹ = ±edge/|det| (the sign of edge rows was
// flipped to make det positive, which M⁻¹ = adj/det undoes).
template <typename T>
HOST_DEVICE void barycentric_vertex_grads(const TriangleSetup<T>& s, const T b[3], const T g[3],
                                          T grad_xyw[3][3]) {
  const T* m = s.edge;
  // (M·adj)[2][2] = det: the w row of M against the last column of the sign-adjusted adjugate.
  const T abs_det = m[2] * s.w[0] + m[5] * s.w[1] + m[8] * s.w[2];
  const T gb = g[0] * b[0] + g[1] * b[1] + g[2] * b[2];
  T h[3];
  for (int c = 0; c < 3; ++c) {
    h[c] = T(0);
    for (int i = 0; i < 3; ++i) h[c] += (g[i] - gb) * m[3 * i + c];
    h[c] /= abs_det;
  }
  for (int k = 0; k < 3; ++k)
    for (int c = 0; c < 3; ++c) grad_xyw[k][c] = -b[k] * h[c];
}

}  // namespace diffrender
