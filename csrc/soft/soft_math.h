// The SoftRas soft rasterizer's math (Liu et al. 2019), written once for the CPU kernels and the
// CUDA kernels. Nothing here may include torch.
//
// Conventions (see renderer/soft.py for the full statement):
// - Distances are measured in "square NDC": the projected x/w is scaled by W/min(W,H) and y/w by
//   H/min(W,H), so pixels are square and the shorter image side spans [-1,1].
// - Triangle j at pixel i: d = distance from the pixel centre to the 2-D triangle, δ = +1 inside,
//   -1 outside; coverage D = sigmoid(δ d²/σ). With dist_func 'barycentric', d = |min_k λ_k| with
//   λ the (unclamped) screen-space barycentrics of the pixel centre.
// - λ used for depth and attributes are the screen-space barycentrics of the pixel centre inside
//   the triangle, and those of the nearest point of the triangle (on its nearest edge) outside.
// - Depth z = (1/w - 1/far) / (1/near - 1/far), interpolated linearly with λ.
// - A pair is skipped when outside with d² >= σ log(1/dist_eps - 1), or when z is not in [0,1].
#pragma once

#include "common/host_device.h"
#include "soft/soft_color_math.h"

#include <math.h>

namespace diffrender {

enum SoftAggrRgb : int { kSoftRgbSoftmax = 0, kSoftRgbHard = 1 };
enum SoftAggrAlpha : int { kSoftAlphaProd = 0, kSoftAlphaSum = 1, kSoftAlphaHard = 2 };
enum SoftDistFunc : int { kSoftDistEuclidean = 0, kSoftDistBarycentric = 1 };

// Coverage terms with s = δd²/σ >= kSoftSaturation count as D = 1 exactly (1 - D < 4.3e-18, which
// already rounds to 0 in float64): their gradient dD/ds = D(1-D) is taken as 0, and the alpha
// product tracks them as a count so that no division by 1 - D is ever needed.
constexpr double kSoftSaturation = 40.0;

// Softmax terms e^{z/γ - m} with z/γ - m below this are treated as 0 (e^-80 < 2e-35 in float,
// e^-700 < 1e-304 in double), so that hidden triangles cost no exp and no colour work.
template <typename T>
HOST_DEVICE T soft_softmax_cut() { return sizeof(T) == 4 ? T(-80) : T(-700); }

// Every setting of the soft rasterizer.
struct SoftParams {
  double sigma = 1e-5;      // sharpness of the coverage sigmoid (NDC² units)
  double gamma = 1e-4;      // temperature of the depth softmax
  double dist_eps = 1e-4;   // coverage below which a triangle is cut off outside
  double eps = 1e-3;        // background depth in the softmax
  double near = 0.01, far = 10.0;
  int aggr_rgb = kSoftRgbSoftmax;
  int aggr_alpha = kSoftAlphaProd;
  int dist_func = kSoftDistEuclidean;
  bool cull_backfaces = false;
  int width = 0, height = 0;
};

// Aux channels written by the forward pass per pixel and read by the backward pass.
//   0: softmax: running max m of z/γ (including ε/γ)      | hard rgb: best z
//   1: softmax: denominator S = Σ D e^{z/γ-m} + e^{ε/γ-m}   | hard rgb: unused (0)
//   2: prod: Π (1-D) over unsaturated terms | sum: Σ D | hard: coverage flag
//   3: prod: number of saturated terms (D = 1)           | others: 0
constexpr int kSoftAuxChannels = 4;

// Settings turned into the constants the kernels use.
template <typename T>
struct SoftConstants {
  T inv_sigma;
  T d2_cut;      // σ log(1/dist_eps - 1): outside pairs with d² >= d2_cut are skipped
  T d2_sat;      // kSoftSaturation σ
  T radius;      // sqrt(d2_cut) (square-NDC units, or barycentric units for 'barycentric')
  T inv_gamma;
  T eps_logit;   // ε/γ
  T inv_far;     // 1/far
  T inv_range;   // 1/(1/near - 1/far)
  T scale_x, scale_y;  // square-NDC scale of x/w and y/w
  T inv_scale_x, inv_scale_y;
  int width, height;
  int dist_func;
  bool cull;
};

template <typename T>
inline SoftConstants<T> make_soft_constants(const SoftParams& p) {
  SoftConstants<T> c;
  c.inv_sigma = T(1.0 / p.sigma);
  const double cut = p.sigma * log(1.0 / p.dist_eps - 1.0);
  c.d2_cut = T(cut);
  c.d2_sat = T(kSoftSaturation * p.sigma);
  c.radius = T(cut > 0 ? sqrt(cut) : 0.0);
  c.inv_gamma = T(1.0 / p.gamma);
  c.eps_logit = T(p.eps / p.gamma);
  c.inv_far = T(1.0 / p.far);
  c.inv_range = T(1.0 / (1.0 / p.near - 1.0 / p.far));
  const double shorter = p.width < p.height ? p.width : p.height;
  c.scale_x = T(p.width / shorter);
  c.scale_y = T(p.height / shorter);
  c.inv_scale_x = T(shorter / p.width);
  c.inv_scale_y = T(shorter / p.height);
  c.width = p.width;
  c.height = p.height;
  c.dist_func = p.dist_func;
  c.cull = p.cull_backfaces;
  return c;
}

// How far (in pixels) the pixel bounds of a triangle reach beyond its blurred region, so that
// rounding never drops a pixel the exact test keeps: float32 rounding of the bounds stays below
// 1/100 pixel up to the 32768-pixel size limit. The bounds only prefilter (every pair is tested
// exactly), and a tighter prefilter is what makes small triangles cheap: a whole pixel of margin
// on each side tripled the pixels a sub-pixel triangle visits.
template <typename T>
HOST_DEVICE T soft_box_margin() { return T(1) / T(16); }

// Centre of pixel `index` along an axis of `extent` pixels, in square NDC.
template <typename T>
HOST_DEVICE T soft_pixel_center(int index, int extent, T scale) {
  return pixel_center_ndc<T>(index, extent) * scale;
}

enum SoftTriangleFlags : int {
  kSoftDegenerate = 1,  // zero signed area: never inside, no edge prefilter
  kSoftCheckZ = 2,      // some vertex depth lies outside [0,1]: test z per pixel
};

// Per-triangle setup, computed once per triangle (O(F) scratch).
// Edge k runs from vertex k1 = (k+1)%3 to k2 = (k+2)%3 (it is opposite vertex k). With p the pixel
// centre relative to vertex 0, E_k(p) = orient · cross(P_k1 - p, P_k2 - p), which is >= 0 inside,
// = ea[k]·px + eb[k]·py + (k == 0 ? area : 0), and λ_k = E_k / ΣE.
template <typename T>
struct SoftTriangle {
  T x0, y0;           // vertex 0 in square NDC
  T vx[3], vy[3];     // vertices relative to vertex 0 (vx[0] = vy[0] = 0)
  T iw[3];            // 1/w of the vertices
  T ea[3], eb[3];     // oriented edge-function coefficients
  T area;             // |cross(P1-P0, P2-P0)| (twice the triangle area)
  T orient;           // sign of the signed area (+1 for degenerate triangles)
  T ex[3], ey[3];     // edge vectors P_k2 - P_k1
  T inv_len2[3];      // 1/|P_k2 - P_k1|² (0 for a zero-length edge)
  T thr[3];           // E_k < -thr[k] proves the pixel is cut off
  T zmax;             // largest vertex depth: no pair of this triangle has a larger z
  int x_min, x_max, y_min, y_max;  // inclusive pixel bounds of the blurred triangle
  int flags;
};

// Builds the setup of one triangle from its screen vertices (x/w, y/w, 1/w). Triangles that can
// touch no pixel get x_min > x_max.
template <typename T>
HOST_DEVICE void soft_setup_triangle(const T* s0, const T* s1, const T* s2, const SoftConstants<T>& c,
                                     SoftTriangle<T>& t) {
  t.x_min = 1; t.x_max = 0; t.y_min = 1; t.y_max = 0; t.flags = 0;
  const T* s[3] = {s0, s1, s2};
  T px[3], py[3];
  for (int k = 0; k < 3; ++k) {
    px[k] = s[k][0] * c.scale_x;
    py[k] = s[k][1] * c.scale_y;
    t.iw[k] = s[k][2];
    // Behind the eye (w <= 0 gives 1/w <= 0), or not finite: SoftRas does not clip, it skips.
    if (!(t.iw[k] > T(0)) || !is_finite(t.iw[k]) || !is_finite(px[k]) || !is_finite(py[k]))
      return;
  }
  // Depth range: z is a convex combination of the vertex depths.
  T z[3];
  for (int k = 0; k < 3; ++k) z[k] = (t.iw[k] - c.inv_far) * c.inv_range;
  if (z[0] < T(0) && z[1] < T(0) && z[2] < T(0)) return;
  if (z[0] > T(1) && z[1] > T(1) && z[2] > T(1)) return;
  if (z[0] < T(0) || z[1] < T(0) || z[2] < T(0) || z[0] > T(1) || z[1] > T(1) || z[2] > T(1))
    t.flags |= kSoftCheckZ;
  t.zmax = max3(z[0], z[1], z[2]);

  t.x0 = px[0]; t.y0 = py[0];
  for (int k = 0; k < 3; ++k) {
    t.vx[k] = px[k] - px[0];
    t.vy[k] = py[k] - py[0];
  }
  const T signed_area = t.vx[1] * t.vy[2] - t.vy[1] * t.vx[2];
  if (c.cull && signed_area < T(0)) return;
  const bool degenerate = !(signed_area != T(0));
  if (degenerate) {
    if (c.dist_func == kSoftDistBarycentric) return;  // barycentrics undefined
    t.flags |= kSoftDegenerate;
  }
  t.orient = signed_area < T(0) ? T(-1) : T(1);
  t.area = signed_area * t.orient;
  for (int k = 0; k < 3; ++k) {
    const int k1 = (k + 1) % 3, k2 = (k + 2) % 3;
    // cross(P_k1 - p, P_k2 - p) = cross(P_k1, P_k2) + px (y_k1 - y_k2) + py (x_k2 - x_k1)
    t.ea[k] = t.orient * (t.vy[k1] - t.vy[k2]);
    t.eb[k] = t.orient * (t.vx[k2] - t.vx[k1]);
    const T ex = t.vx[k2] - t.vx[k1], ey = t.vy[k2] - t.vy[k1];
    t.ex[k] = ex;
    t.ey[k] = ey;
    const T len2 = ex * ex + ey * ey;
    t.inv_len2[k] = len2 > T(0) ? T(1) / len2 : T(0);
    // Euclidean: E_k / |e_k| is the signed distance to the edge's line, a lower bound of d.
    // Barycentric: E_k / area = λ_k, and λ_k <= -r means |min λ| >= r.
    t.thr[k] = c.dist_func == kSoftDistBarycentric ? c.radius * t.area : c.radius * sqrt(len2);
  }

  // Blurred bounding box in square NDC.
  T lo_x = min3(px[0], px[1], px[2]), hi_x = max3(px[0], px[1], px[2]);
  T lo_y = min3(py[0], py[1], py[2]), hi_y = max3(py[0], py[1], py[2]);
  if (c.dist_func == kSoftDistBarycentric) {
    // {λ_k > -r for all k} is the triangle scaled by 1 + 3r about its centroid.
    const T cx = (px[0] + px[1] + px[2]) / T(3), cy = (py[0] + py[1] + py[2]) / T(3);
    const T grow = T(1) + T(3) * c.radius;
    lo_x = cx + (lo_x - cx) * grow; hi_x = cx + (hi_x - cx) * grow;
    lo_y = cy + (lo_y - cy) * grow; hi_y = cy + (hi_y - cy) * grow;
  } else {
    lo_x -= c.radius; hi_x += c.radius;
    lo_y -= c.radius; hi_y += c.radius;
  }
  // Square NDC -> pixel index: ix = (X/scale + 1) W/2 - 0.5; the first and last pixel centres
  // inside, widened by soft_box_margin for rounding.
  const T half_w = T(0.5) * T(c.width), half_h = T(0.5) * T(c.height);
  const T left = (lo_x * c.inv_scale_x + T(1)) * half_w - T(0.5) - soft_box_margin<T>();
  const T right = (hi_x * c.inv_scale_x + T(1)) * half_w - T(0.5) + soft_box_margin<T>();
  const T bottom = (lo_y * c.inv_scale_y + T(1)) * half_h - T(0.5) - soft_box_margin<T>();
  const T top = (hi_y * c.inv_scale_y + T(1)) * half_h - T(0.5) + soft_box_margin<T>();
  if (!(right >= T(0)) || !(top >= T(0)) || !(left <= T(c.width)) || !(bottom <= T(c.height))) return;
  t.x_min = int(ceil(clamp_value(left, T(0), T(c.width))));
  t.x_max = int(clamp_value(right, T(0), T(c.width - 1)));
  t.y_min = int(ceil(clamp_value(bottom, T(0), T(c.height))));
  t.y_max = int(clamp_value(top, T(0), T(c.height - 1)));
}

// Columns [lo, hi] of the row at square-NDC height Y that may pass the edge prefilter (widened by
// soft_box_margin), clipped to the triangle's bounds. lo > hi when none can.
template <typename T>
HOST_DEVICE void soft_row_span(const SoftTriangle<T>& t, T Y, const SoftConstants<T>& c, int& lo, int& hi) {
  lo = t.x_min;
  hi = t.x_max;
  if (t.flags & kSoftDegenerate) return;
  const T dy = Y - t.y0;
  T x_lo = T(-1e30), x_hi = T(1e30);  // bounds on px = X - x0
  for (int k = 0; k < 3; ++k) {
    const T rest = t.eb[k] * dy + (k == 0 ? t.area : T(0)) + t.thr[k];  // need ea·px + rest > 0
    if (t.ea[k] > T(0)) {
      const T root = -rest / t.ea[k];
      x_lo = root > x_lo ? root : x_lo;
    } else if (t.ea[k] < T(0)) {
      const T root = -rest / t.ea[k];
      x_hi = root < x_hi ? root : x_hi;
    } else if (!(rest > T(0))) {
      lo = 1; hi = 0;
      return;
    }
  }
  const T half_w = T(0.5) * T(c.width);
  const T ix_lo = ((x_lo + t.x0) * c.inv_scale_x + T(1)) * half_w - T(0.5) - soft_box_margin<T>();
  const T ix_hi = ((x_hi + t.x0) * c.inv_scale_x + T(1)) * half_w - T(0.5) + soft_box_margin<T>();
  const int a = int(ceil(clamp_value(ix_lo, T(-1), T(c.width))));
  const int b = int(clamp_value(ix_hi, T(-1), T(c.width)));
  lo = a > lo ? a : lo;
  hi = b < hi ? b : hi;
}

// The backward pass walks each triangle's blurred bounding box in chunks of whole rows, about
// kSoftWalkPixels pixels each (one row of a wider box), so that a screen-sized triangle is split
// over many threads rather than walked by one. CPU and GPU cut the same chunks.
constexpr int kSoftWalkPixels = 256;

template <typename T>
HOST_DEVICE int soft_walk_rows_per_chunk(const SoftTriangle<T>& t) {
  const int box_width = t.x_max - t.x_min + 1;
  return box_width >= kSoftWalkPixels ? 1 : kSoftWalkPixels / box_width;
}

// The number of walk chunks of a triangle: 0 when it reaches no pixel.
template <typename T>
HOST_DEVICE int soft_walk_chunk_count(const SoftTriangle<T>& t) {
  if (t.x_min > t.x_max || t.y_min > t.y_max) return 0;
  const int rows_per_chunk = soft_walk_rows_per_chunk(t);
  return (t.y_max - t.y_min + rows_per_chunk) / rows_per_chunk;
}

// Rows [y_first, y_last] of the triangle's walk chunk k < soft_walk_chunk_count(t).
template <typename T>
HOST_DEVICE void soft_walk_chunk_rows(const SoftTriangle<T>& t, int k, int& y_first, int& y_last) {
  const int rows_per_chunk = soft_walk_rows_per_chunk(t);
  y_first = t.y_min + k * rows_per_chunk;
  y_last = y_first + rows_per_chunk - 1 < t.y_max ? y_first + rows_per_chunk - 1 : t.y_max;
}

// Everything known about one (pixel, triangle) pair.
template <typename T>
struct SoftSample {
  T px, py;        // pixel centre relative to vertex 0
  T E[3];          // oriented edge functions
  T esum;          // ΣE (> 0 when inside)
  T d2;            // squared distance (Euclidean or barycentric)
  T lambda[3];     // barycentrics of the pixel centre (inside) or of the nearest point (outside)
  T t;             // position of the nearest boundary point along edge k0, clamped to [0,1]
  T iw;            // interpolated 1/w
  T z;             // normalised inverse depth
  int k0;          // edge holding the nearest boundary point (lowest index on ties)
  int kb;          // barycentric distance: index of the smallest λ (lowest on ties)
  bool inside;
  bool t_free;     // the nearest point lies within the edge's [0,1] range before clamping
};

// Evaluates the pair (pixel centre (X, Y), triangle): returns false when it is skipped (cut off,
// or z outside [0,1]). Written without data-dependent branches, so that loops over pixels
// vectorise (and CUDA warps do not diverge): everything is computed, then selected.
//
// The distance to the triangle is the smallest distance to its three edge segments, both inside
// (distance to the boundary) and outside (distance to the triangle), and the nearest point's
// barycentrics come from that segment.
template <typename T>
HOST_DEVICE void soft_segment(const SoftTriangle<T>& tri, int k, int k1, T px, T py, T& d2, T& t, T& raw) {
  const T ux = px - tri.vx[k1], uy = py - tri.vy[k1];
  raw = (ux * tri.ex[k] + uy * tri.ey[k]) * tri.inv_len2[k];
  const T above = raw < T(0) ? T(0) : raw;  // both compares unconditional: no branches
  t = above > T(1) ? T(1) : above;
  const T rx = ux - t * tri.ex[k], ry = uy - t * tri.ey[k];
  d2 = rx * rx + ry * ry;
}

// The distance part of soft_sample alone (px, py, E, esum, inside, d2, k0, t, t_free): all a pair
// needs when there are no attributes, the distance is Euclidean and the triangle's depth needs no
// per-pixel test (no kSoftCheckZ). Returns the same decision as soft_sample then.
template <typename T>
HOST_DEVICE bool soft_sample_distance(const SoftTriangle<T>& tri, T X, T Y, const SoftConstants<T>& c,
                                      SoftSample<T>& s) {
  s.px = X - tri.x0;
  s.py = Y - tri.y0;
  const T E0 = tri.ea[0] * s.px + tri.eb[0] * s.py + tri.area;
  const T E1 = tri.ea[1] * s.px + tri.eb[1] * s.py;
  const T E2 = tri.ea[2] * s.px + tri.eb[2] * s.py;
  const T esum = E0 + E1 + E2;
  s.E[0] = E0; s.E[1] = E1; s.E[2] = E2;
  s.esum = esum;
  const bool degenerate = (tri.flags & kSoftDegenerate) != 0;
  const bool near = degenerate | ((E0 >= -tri.thr[0]) & (E1 >= -tri.thr[1]) & (E2 >= -tri.thr[2]));
  const bool inside = !degenerate & (E0 >= T(0)) & (E1 >= T(0)) & (E2 >= T(0)) & (esum > T(0));
  s.inside = inside;
  T d0, d1, d2, t0, t1, t2, r0, r1, r2;
  soft_segment(tri, 0, 1, s.px, s.py, d0, t0, r0);
  soft_segment(tri, 1, 2, s.px, s.py, d1, t1, r1);
  soft_segment(tri, 2, 0, s.px, s.py, d2, t2, r2);
  const bool b1 = d1 < d0;
  const T d01 = b1 ? d1 : d0, t01 = b1 ? t1 : t0, r01 = b1 ? r1 : r0;
  const bool b2 = d2 < d01;
  const T raw = b2 ? r2 : r01;
  s.d2 = b2 ? d2 : d01;
  s.t = b2 ? t2 : t01;
  s.k0 = b2 ? 2 : (b1 ? 1 : 0);
  s.t_free = (raw >= T(0)) & (raw <= T(1));
  return near & (inside | (s.d2 < c.d2_cut));
}

template <typename T>
HOST_DEVICE bool soft_sample(const SoftTriangle<T>& tri, T X, T Y, const SoftConstants<T>& c, SoftSample<T>& s) {
  soft_sample_distance(tri, X, Y, c, s);  // its verdict assumes the Euclidean d²; decided below
  const T E0 = s.E[0], E1 = s.E[1], E2 = s.E[2], esum = s.esum, seg_d2 = s.d2, t = s.t;
  const bool inside = s.inside, b1 = s.k0 == 1, b2 = s.k0 == 2;

  const T inv = T(1) / (esum != T(0) ? esum : T(1));
  const T l0 = E0 * inv, l1 = E1 * inv, l2 = E2 * inv;
  const bool c1 = l1 < l0;
  const T l01 = c1 ? l1 : l0;
  const bool c2 = l2 < l01;
  const T lb = c2 ? l2 : l01;
  s.kb = c2 ? 2 : (c1 ? 1 : 0);
  s.d2 = c.dist_func == kSoftDistBarycentric ? lb * lb : seg_d2;

  // Outside: λ_k0 = 0, λ_k1 = 1 - t, λ_k2 = t for the nearest point on edge k0, i.e.
  // k0 = 0: (0, 1-t, t); k0 = 1: (t, 0, 1-t); k0 = 2: (1-t, t, 0).
  const T q0 = b2 ? T(1) - t : (b1 ? t : T(0));
  const T q1 = b2 ? t : (b1 ? T(0) : T(1) - t);
  const T q2 = b2 ? T(0) : (b1 ? T(1) - t : t);
  s.lambda[0] = inside ? l0 : q0;
  s.lambda[1] = inside ? l1 : q1;
  s.lambda[2] = inside ? l2 : q2;
  s.iw = s.lambda[0] * tri.iw[0] + s.lambda[1] * tri.iw[1] + s.lambda[2] * tri.iw[2];
  s.z = (s.iw - c.inv_far) * c.inv_range;
  const bool z_ok = ((tri.flags & kSoftCheckZ) == 0) | ((s.z >= T(0)) & (s.z <= T(1)));
  const bool near = ((tri.flags & kSoftDegenerate) != 0) |
                    ((E0 >= -tri.thr[0]) & (E1 >= -tri.thr[1]) & (E2 >= -tri.thr[2]));
  return near & (inside | (s.d2 < c.d2_cut)) & z_ok;
}

// Coverage D = sigmoid(δ d²/σ) and q = 1 - D, both computed without cancellation. Returns true
// when the term is saturated (inside with s >= kSoftSaturation: D = 1, q = 0).
template <typename T>
HOST_DEVICE bool soft_coverage(const SoftSample<T>& s, const SoftConstants<T>& c, T& D, T& q) {
  const T e = exp(-s.d2 * c.inv_sigma);
  const T big = T(1) / (T(1) + e), small = e * big;  // sigmoid(|s|), sigmoid(-|s|)
  const bool saturated = s.inside && s.d2 >= c.d2_sat;
  D = saturated ? T(1) : (s.inside ? big : small);
  q = saturated ? T(0) : (s.inside ? small : big);
  return saturated;
}

// Perspective-correct weights β_k = λ_k iw_k / iw of the pair's attribute interpolation.
template <typename T>
HOST_DEVICE void soft_perspective_weights(const SoftTriangle<T>& tri, const SoftSample<T>& s, T beta[3]) {
  const T inv = T(1) / s.iw;
  for (int k = 0; k < 3; ++k) beta[k] = s.lambda[k] * tri.iw[k] * inv;
}

// Backward of the pair's geometry. Inputs: gd2 = dL/dd², and when has_gl, gl[k] = dL/dλ_k (of the
// λ in the sample, which must then have been computed). Accumulates dL/d(vertex position in
// square NDC) into gp[k][0..1].
template <typename T>
HOST_DEVICE void soft_geometry_backward(const SoftTriangle<T>& tri, const SoftSample<T>& s,
                                        const SoftConstants<T>& c, T gd2, bool has_gl, const T gl[3],
                                        T gp[3][2]) {
  T gE_l[3] = {T(0), T(0), T(0)};  // dL/dλ through λ = E/ΣE (inside barycentrics)
  bool use_e = false;
  if (c.dist_func == kSoftDistBarycentric) {
    if (gd2 != T(0)) {
      gE_l[s.kb] += T(2) * (s.E[s.kb] / s.esum) * gd2;
      use_e = true;
    }
  } else if (gd2 != T(0)) {
    // d² = |p - Q|², Q = P_k1 + t e the nearest point of edge k0 (t minimises the distance, so
    // only Q's explicit dependence on the corners remains).
    const int k = s.k0, k1 = k == 2 ? 0 : k + 1, k2 = k == 0 ? 2 : k - 1;
    const T t = s.t;
    const T ex = tri.ex[k], ey = tri.ey[k];
    const T ux = s.px - tri.vx[k1], uy = s.py - tri.vy[k1];
    const T rx = ux - t * ex, ry = uy - t * ey;
    const T f = T(-2) * gd2;
    gp[k1][0] += f * rx * (T(1) - t);
    gp[k1][1] += f * ry * (T(1) - t);
    gp[k2][0] += f * rx * t;
    gp[k2][1] += f * ry * t;
  }
  if (!has_gl) {
  } else if (s.inside) {
    for (int k = 0; k < 3; ++k) gE_l[k] += gl[k];
    use_e = true;
  } else if (s.t_free) {
    // λ_k1 = 1 - t, λ_k2 = t with t = (u·e)/(e·e), u = p - P_k1, e = P_k2 - P_k1.
    const int k = s.k0, k1 = k == 2 ? 0 : k + 1, k2 = k == 0 ? 2 : k - 1;
    const T gt = gl[k2] - gl[k1];
    if (gt != T(0)) {
      const T ex = tri.ex[k], ey = tri.ey[k];
      const T ux = s.px - tri.vx[k1], uy = s.py - tri.vy[k1];
      const T f = gt * tri.inv_len2[k];
      const T ax = (ux - T(2) * s.t * ex) * f, ay = (uy - T(2) * s.t * ey) * f;  // dL/dP_k2
      gp[k2][0] += ax;
      gp[k2][1] += ay;
      gp[k1][0] -= ex * f + ax;
      gp[k1][1] -= ey * f + ay;
    }
  }
  if (use_e) {
    // λ_k = E_k / ΣE: dL/dE_k = (gλ_k - Σ_l gλ_l λ_l) / ΣE.
    const T inv = T(1) / s.esum;
    const T mean = (gE_l[0] * s.E[0] + gE_l[1] * s.E[1] + gE_l[2] * s.E[2]) * inv;
    for (int k = 0; k < 3; ++k) {
      const T g = (gE_l[k] - mean) * inv * tri.orient;
      if (g == T(0)) continue;
      const int k1 = k == 2 ? 0 : k + 1, k2 = k == 0 ? 2 : k - 1;
      // E_k = orient·cross(a, b), a = P_k1 - p, b = P_k2 - p.
      const T ax = tri.vx[k1] - s.px, ay = tri.vy[k1] - s.py;
      const T bx = tri.vx[k2] - s.px, by = tri.vy[k2] - s.py;
      gp[k1][0] += g * by;
      gp[k1][1] -= g * bx;
      gp[k2][0] -= g * ay;
      gp[k2][1] += g * ax;
    }
  }
}

// e^{z/γ - m} of a pair against the pixel's final softmax maximum m = pr[0] (1 without the
// softmax), and 0 when the softmax makes the pair vanish: the pair has a colour gradient iff e > 0.
template <typename T>
HOST_DEVICE T soft_color_exp(const SoftSample<T>& s, const SoftConstants<T>& c, const T* pr, bool softmax) {
  const T shifted = s.z * c.inv_gamma - pr[0];
  return !softmax ? T(1) : (shifted < soft_softmax_cut<T>() ? T(0) : exp(shifted));
}

// The gradient one (pixel, triangle) pair sends back, recomputed from the pixel's saved
// aggregates pr = {softmax max m, 1/denominator, g·I, alpha coefficient}. Accumulates the corner
// attribute gradients gattr[k][0..attribute channels), the inverse-w gradients giw[k] and the 2-D
// position gradients gp[k]. colour_path: this triangle can affect the pixel's colour; g: the
// pixel's image gradient; batch_item picks the texture image. Returns whether it wrote a texture
// gradient record (see soft_color_backward) to record (may be null).
template <typename T>
HOST_DEVICE bool soft_pair_backward(const SoftTriangle<T>& tri, const SoftSample<T>& s, const SoftConstants<T>& c,
                                    const T* pr, bool colour_path, bool softmax, bool alpha_prod, const T* g,
                                    const T* const corner[3], int64_t channels, const SoftTexture<T>& tex,
                                    int64_t batch_item, T* const gattr[3], T giw[3], T gp[3][2], T* record) {
  T D, q;
  const bool saturated = soft_coverage(s, c, D, q);
  if (saturated && !colour_path) return false;
  T gs = T(0);  // dL/ds, s = δd²/σ
  if (!saturated) gs = pr[3] * (alpha_prod ? D : D * q);
  bool has_gl = false, recorded = false;
  T Q[3] = {T(0), T(0), T(0)};
  if (colour_path) {
    const T e = soft_color_exp(s, c, pr, softmax);
    if (e > T(0)) {
      const T w = softmax ? D * e * pr[1] : T(1);
      T beta[3], ga[3], gC;
      soft_perspective_weights(tri, s, beta);
      const SoftTexelFootprint<T> footprint = soft_texel_footprint(tex, batch_item, channels, beta, corner);
      recorded = soft_color_backward(tex, footprint, beta, corner, channels, g, w, gattr, ga, gC, record);
      // dL/dβ_k = w·ga[k]; through the normalisation β_k = λ_k iw_k / iw only their deviation from
      // the β-weighted mean counts (for untextured colours that mean is gC itself).
      const T ga_mean = beta[0] * ga[0] + beta[1] * ga[1] + beta[2] * ga[2];
      T gz = T(0);
      if (softmax) {
        const T coef = gC - pr[2];
        if (!saturated) gs += coef * e * pr[1] * D * q;
        gz = coef * w * c.inv_gamma;
      }
      // C = C(Σ β_k a_k) with β_k = λ_k iw_k / iw, z = (iw - 1/far)/range, iw = Σ λ_k iw_k:
      // dL/dλ_k = iw_k Q_k and dL/d(iw_k) = λ_k Q_k.
      const T inv_iw = T(1) / s.iw;
      for (int k = 0; k < 3; ++k) Q[k] = w * (ga[k] - ga_mean) * inv_iw + gz * c.inv_range;
      has_gl = true;
    }
  }
  const T gd2 = saturated ? T(0) : gs * (s.inside ? c.inv_sigma : -c.inv_sigma);
  if (gd2 == T(0) && !has_gl) return recorded;
  T gl[3] = {T(0), T(0), T(0)};
  if (has_gl) {
    for (int k = 0; k < 3; ++k) {
      gl[k] = tri.iw[k] * Q[k];
      giw[k] += s.lambda[k] * Q[k];
    }
  }
  soft_geometry_backward(tri, s, c, gd2, has_gl, gl, gp);
  return recorded;
}

}  // namespace diffrender
