// Analytic antialiasing of silhouette edges (Laine et al. 2020, "Modular Primitives for
// High-Performance Differentiable Rendering", the antialiasing pass of nvdiffrast), written
// once for the CPU and CUDA kernels. Nothing here may include torch.
//
// Every pair of horizontally or vertically adjacent pixels (p0, p1) that sees two different
// surfaces (two triangles, or a triangle and the background) is analysed on its own:
//   * the front pixel F is the covered one, or the nearer one when both are covered; the other is
//     the back pixel K;
//   * the line from F's centre towards K's is followed through F's surface, across interior
//     edges, to the first silhouette edge: an edge with no neighbouring triangle, or whose
//     neighbour turns the other way round as seen from the eye. It counts if it crosses between
//     the two centres and runs more across the pair axis than along it (flatter edges belong to
//     the other axis' pairs);
//   * at the crossing distance d ∈ [0,1] from F's centre towards K's, colour moves across the
//     pair: for d < ½ F gets (½ - d) of K's colour, for d > ½ K gets (d - ½) of F's colour.
// As in nvdiffrast, this is written with a signed alpha = s·(½ - d), s = +1 when F is p0 and -1
// when F is p1: the pair adds alpha·(c1 - c0) to p0 when alpha > 0 and to p1 when alpha < 0.
// The crossing moves with the edge's two vertices, which is what gives silhouettes a gradient.
//
// Coordinates: clip (x, y, w) → pixel coordinates X = (x/w + 1)·W/2 - ½, Y = (y/w + 1)·H/2 - ½,
// so pixel (ix, iy) has its centre at (ix, iy) (the rasterizer's pixel_center_ndc, row 0 at NDC
// y = -1).
#pragma once

#include <cstdint>

#include "barycentric/barycentric_math.h"
#include "common/host_device.h"

namespace diffrender {

// Per pair: an int32 code (tri << 3) | kPairFrontIsP1? | (edge + 1) naming the silhouette edge
// that moves the blend (edge k of triangle tri runs from corner k to corner k+1), and whether
// the front pixel is p1. 0 means the pair moves no vertex: nothing blended, or the crossing was
// clamped to a pixel centre (where the blend no longer depends on the edge).
constexpr int kPairEdgeMask = 3;
constexpr int kPairFrontIsP1 = 4;
constexpr int kPairTriangleShift = 3;

// How many interior edges the search for the silhouette may cross between two pixel centres
// (triangles next to a smooth outline are thin slivers in screen space).
constexpr int kMaxWalk = 16;

// Crossings further than this outside [0,1] (in pixels) are not trusted: the triangle's edge does
// not separate these two pixels.
template <typename T>
HOST_DEVICE T crossing_tolerance() { return T(1) / T(16); }

// Covered pixels and their NDC depth from the rasterizer's outputs: background is
// barycentrics summing to 0 (the rasterizer's coverage test is sum ≥ ½).
template <typename T>
HOST_DEVICE bool surface_from_raster(const T* bary, const T* zbuf, int64_t p, T& depth) {
  const T* b = bary + 3 * p;
  depth = zbuf[p];
  return b[0] + b[1] + b[2] >= T(0.5);
}

// The same from the triangle id alone, replaying the rasterizer's test at the pixel centre (same
// setup, edge functions and depth, so the same bits): a pixel whose id is `tri` is covered iff
// the centre lies in `tri` within the depth range. Needed because id 0 is both triangle 0 and
// the background. clip: this batch item's [V,4].
template <typename T>
HOST_DEVICE bool surface_from_ids(const T* clip, const int64_t* triangles, int64_t tri, int ix, int iy, int width,
                                  int height, T& depth) {
  const int64_t* t = triangles + 3 * tri;
  TriangleSetup<T> s;
  setup_triangle(clip + 4 * t[0], clip + 4 * t[1], clip + 4 * t[2], width, height, s);
  depth = T(1);
  if (s.x_min > s.x_max || s.y_min > s.y_max) return false;
  T e[3];
  edge_values(s, pixel_center_ndc<T>(ix, width), pixel_center_ndc<T>(iy, height), e);
  if (!is_inside(e)) return false;
  T b[3];
  const T z = barycentrics_and_depth(s, e, b);
  if (!in_depth_range(z)) return false;
  depth = z;
  return true;
}

// det of the clip (x, y, w) columns: its sign says which way round the triangle (a, b, c) is seen
// from the eye, also for vertices behind it (it is the eye-space triple product up to a positive
// factor).
template <typename T>
HOST_DEVICE T orientation_xyw(const T* a, const T* b, const T* c) {
  return a[0] * (b[1] * c[3] - b[3] * c[1]) - a[1] * (b[0] * c[3] - b[3] * c[0]) + a[3] * (b[0] * c[1] - b[1] * c[0]);
}

// Edge (a, b) of a triangle whose third vertex is c is a silhouette unless the neighbour across
// it, with third vertex o (o == nullptr: no neighbour), faces the same way, i.e. unless o and c
// lie strictly on opposite sides of the plane through the eye and the edge.
template <typename T>
HOST_DEVICE bool is_silhouette_edge(const T* a, const T* b, const T* c, const T* o) {
  if (o == nullptr) return true;
  const T own = orientation_xyw(a, b, c), other = orientation_xyw(a, b, o);
  return !((own > T(0) && other < T(0)) || (own < T(0) && other > T(0)));
}

// Pixel coordinates of a clip vertex along the pair axis (u) and across it, relative to the
// front pixel's centre (fx, fy). vertical: the pair is (ix, iy), (ix, iy+1).
template <typename T>
HOST_DEVICE void pair_coordinates(const T* v, int fx, int fy, bool vertical, int width, int height, T& u, T& across) {
  const T inv_w = T(1) / v[3];
  const T px = (v[0] * inv_w + T(1)) * (T(0.5) * T(width)) - T(0.5) - T(fx);
  const T py = (v[1] * inv_w + T(1)) * (T(0.5) * T(height)) - T(0.5) - T(fy);
  u = vertical ? py : px;
  across = vertical ? px : py;
}

// Where edge (a, b) crosses the pair axis v = 0, in pixels along u: (u_a v_b - u_b v_a)/(v_b - v_a).
template <typename T>
HOST_DEVICE bool edge_crosses_axis(T ua, T va, T ub, T vb, T& crossing) {
  if ((va < T(0)) == (vb < T(0))) return false;
  crossing = (ua * vb - ub * va) / (vb - va);
  return true;
}

// Analyses one pair whose front pixel (fx, fy) shows triangle `tri`; the back pixel lies at +1
// (front_is_p1 == false) or -1 along the axis. clip: this batch item's [V,4]; neighbors: [F,3],
// the face across edge k (corner k to corner k+1), or -1. Returns the signed alpha (0: nothing to
// blend) and sets code (see kPairFrontIsP1).
//
// The axis from the front centre towards the back centre is followed through the front surface:
// it leaves the current triangle through the edge with the furthest crossing; an interior edge
// hands over to the neighbour, a silhouette edge ends the search. (nvdiffrast stops at the front
// pixel's own triangle, which on a finely tessellated smooth surface is rarely the one carrying
// the silhouette.) The search gives up past the back centre, after kMaxWalk triangles, and at
// triangles reaching behind the eye.
template <typename T>
HOST_DEVICE T analyze_pair(const T* clip, const int64_t* triangles, const int64_t* neighbors, int64_t tri, int fx,
                           int fy, bool vertical, bool front_is_p1, int width, int height, int32_t& code) {
  code = 0;
  const T direction = front_is_p1 ? T(-1) : T(1);
  const T tolerance = crossing_tolerance<T>();
  int entry = -1;  // the edge the axis came in through
  for (int step = 0; step < kMaxWalk; ++step) {
    const int64_t* t = triangles + 3 * tri;
    const T* vert[3] = {clip + 4 * t[0], clip + 4 * t[1], clip + 4 * t[2]};
    // Projected positions need the whole triangle in front of the eye.
    if (!(vert[0][3] > T(0) && vert[1][3] > T(0) && vert[2][3] > T(0))) return T(0);
    T u[3], v[3];
    for (int k = 0; k < 3; ++k) pair_coordinates(vert[k], fx, fy, vertical, width, height, u[k], v[k]);
    int edge = -1;
    T distance = T(0);
    for (int k = 0; k < 3; ++k) {
      if (k == entry) continue;
      const int k1 = k == 2 ? 0 : k + 1;
      T crossing;
      if (!edge_crosses_axis(u[k], v[k], u[k1], v[k1], crossing)) continue;
      const T d = direction * crossing;
      if (edge < 0 || d > distance) {
        edge = k;
        distance = d;
      }
    }
    if (edge < 0 || !(distance < T(1) + tolerance)) return T(0);
    const int k1 = edge == 2 ? 0 : edge + 1, k2 = k1 == 2 ? 0 : k1 + 1;
    const int64_t a = t[edge], b = t[k1];
    const int64_t next = neighbors[3 * tri + edge];
    const T* other = nullptr;
    int next_entry = -1;
    if (next >= 0) {
      const int64_t* nt = triangles + 3 * next;
      for (int j = 0; j < 3; ++j) {
        if (nt[j] != a && nt[j] != b) {
          other = clip + 4 * nt[j];
          next_entry = j == 2 ? 0 : j + 1;  // the edge opposite corner j
        }
      }
    }
    if (!is_silhouette_edge(vert[edge], vert[k1], vert[k2], other)) {
      tri = next;
      entry = next_entry;
      continue;
    }
    const T du = u[k1] - u[edge], dv = v[k1] - v[edge];
    if ((du < T(0) ? -du : du) > (dv < T(0) ? -dv : dv)) return T(0);
    if (!(distance > -tolerance)) return T(0);
    const bool clamped = !(distance > T(0) && distance < T(1));
    distance = clamp_value(distance, T(0), T(1));
    if (!clamped)
      code = static_cast<int32_t>((tri << kPairTriangleShift) | (front_is_p1 ? kPairFrontIsP1 : 0) | (edge + 1));
    return direction * (T(0.5) - distance);
  }
  return T(0);
}

// d(loss)/d(clip x, y, w) of the edge's two vertices a, b of an unclamped pair, given
// d(loss)/d(alpha). With alpha = s(½ - d) and d = s·u_c, d(alpha)/d(u_c) = -1, and
//   ∂u_c/∂u_a = v_b/D, ∂u_c/∂u_b = -v_a/D, ∂u_c/∂v_a = (u_c - u_b)/D, ∂u_c/∂v_b = (u_a - u_c)/D,
// D = v_b - v_a; all are at most 1 in size because the edge is steeper than 45° to the axis.
template <typename T>
HOST_DEVICE void pair_vertex_grads(const T* a, const T* b, int fx, int fy, bool vertical, int width, int height,
                                   T grad_alpha, T grad_a[3], T grad_b[3]) {
  T ua, va, ub, vb;
  pair_coordinates(a, fx, fy, vertical, width, height, ua, va);
  pair_coordinates(b, fx, fy, vertical, width, height, ub, vb);
  const T inv_d = T(1) / (vb - va);
  const T uc = (ua * vb - ub * va) * inv_d;
  const T g = -grad_alpha;  // d(loss)/d(u_c)
  const T g_uv[2][2] = {{g * vb * inv_d, g * (uc - ub) * inv_d}, {-g * va * inv_d, g * (ua - uc) * inv_d}};
  const T* vertex[2] = {a, b};
  T* out[2] = {grad_a, grad_b};
  for (int i = 0; i < 2; ++i) {
    const T g_px = vertical ? g_uv[i][1] : g_uv[i][0];
    const T g_py = vertical ? g_uv[i][0] : g_uv[i][1];
    const T inv_w = T(1) / vertex[i][3];
    // X = (x/w + 1)W/2 - ½: ∂X/∂x = W/(2w), ∂X/∂w = -x/w · W/(2w).
    const T gx = g_px * (T(0.5) * T(width)) * inv_w;
    const T gy = g_py * (T(0.5) * T(height)) * inv_w;
    out[i][0] = gx;
    out[i][1] = gy;
    out[i][2] = -(gx * vertex[i][0] + gy * vertex[i][1]) * inv_w;
  }
}

// The pair's front pixel: the covered one, or the nearer (ties to p0). Returns false when the
// pair shows one surface (both background, or one triangle).
template <typename T>
HOST_DEVICE bool pair_front(bool covered0, T depth0, int64_t id0, bool covered1, T depth1, int64_t id1,
                            bool& front_is_p1) {
  if (!covered0 && !covered1) return false;
  if (covered0 && covered1) {
    if (id0 == id1) return false;
    front_is_p1 = depth1 < depth0;
    return true;
  }
  front_is_p1 = covered1;
  return true;
}

// The inputs of a pass, as raw pointers into contiguous buffers: color [B,H,W,C], ids [B,H,W],
// clip [B,V,4], triangles and neighbors [F,3]; bary [B,H,W,3] and zbuf [B,H,W] from the
// rasterizer, or both null to replay coverage and depth from the ids (surface_from_ids).
template <typename T>
struct AntialiasBuffers {
  const T* color;
  const int64_t* ids;
  const T* clip;
  const int64_t* triangles;
  const int64_t* neighbors;
  const T* bary;
  const T* zbuf;
  int64_t batch, num_vertices, channels;
  int width, height;
};

template <typename T>
HOST_DEVICE bool pixel_surface(const AntialiasBuffers<T>& in, int64_t b, int ix, int iy, T& depth) {
  const int64_t p = (b * in.height + iy) * int64_t(in.width) + ix;
  if (in.bary != nullptr) return surface_from_raster(in.bary, in.zbuf, p, depth);
  return surface_from_ids(in.clip + b * in.num_vertices * 4, in.triangles, in.ids[p], ix, iy, in.width, in.height,
                          depth);
}

// The two pairs a pixel starts: slot 0 with its right neighbour, slot 1 with the one below
// (row iy + 1). Writes pair_alpha[2] and pair_code[2] of pixel (ix, iy) of batch item b.
template <typename T>
HOST_DEVICE void analyze_pixel_pairs(const AntialiasBuffers<T>& in, int64_t b, int ix, int iy, T* pair_alpha,
                                     int32_t* pair_code) {
  const int width = in.width, height = in.height;
  const int64_t p = (b * height + iy) * int64_t(width) + ix;
  const int64_t id0 = in.ids[p];
  bool known = false, covered0 = false;
  T depth0 = T(1);
  for (int slot = 0; slot < 2; ++slot) {
    pair_alpha[slot] = T(0);
    pair_code[slot] = 0;
    const int jx = ix + (slot == 0 ? 1 : 0), jy = iy + (slot == 1 ? 1 : 0);
    if (jx >= width || jy >= height) continue;
    const int64_t id1 = in.ids[(b * height + jy) * int64_t(width) + jx];
    // Nonzero ids are always covered pixels, so equal ones are one surface; id 0 is ambiguous.
    if (id0 == id1 && id0 != 0) continue;
    if (!known) {
      covered0 = pixel_surface(in, b, ix, iy, depth0);
      known = true;
    }
    T depth1;
    const bool covered1 = pixel_surface(in, b, jx, jy, depth1);
    bool front_is_p1 = false;
    if (!pair_front(covered0, depth0, id0, covered1, depth1, id1, front_is_p1)) continue;
    pair_alpha[slot] = analyze_pair(in.clip + b * in.num_vertices * 4, in.triangles, in.neighbors,
                                    front_is_p1 ? id1 : id0, front_is_p1 ? jx : ix, front_is_p1 ? jy : iy,
                                    slot == 1, front_is_p1, width, height, pair_code[slot]);
  }
}

// out = color + the blends of the (up to four) pairs that target this pixel, in a fixed order.
// pair_alpha: [B,H,W,2].
template <typename T>
HOST_DEVICE void blend_pixel(const AntialiasBuffers<T>& in, const T* pair_alpha, int64_t b, int ix, int iy, T* out) {
  const int64_t width = in.width, channels = in.channels;
  const int64_t p = (b * in.height + iy) * width + ix;
  const T* c = in.color + p * channels;
  T* o = out + p * channels;
  for (int64_t k = 0; k < channels; ++k) o[k] = c[k];
  // As p0 (pairs to the right and below): alpha > 0 adds alpha (c1 - c0) here.
  const int64_t next[2] = {ix + 1 < width ? p + 1 : -1, iy + 1 < in.height ? p + width : -1};
  for (int slot = 0; slot < 2; ++slot) {
    const T a = pair_alpha[2 * p + slot];
    if (!(a > T(0)) || next[slot] < 0) continue;
    const T* c1 = in.color + next[slot] * channels;
    for (int64_t k = 0; k < channels; ++k) o[k] += a * (c1[k] - c[k]);
  }
  // As p1 (pairs from the left and above): alpha < 0 adds alpha (c1 - c0) here.
  const int64_t prev[2] = {ix > 0 ? p - 1 : -1, iy > 0 ? p - width : -1};
  for (int slot = 0; slot < 2; ++slot) {
    if (prev[slot] < 0) continue;
    const T a = pair_alpha[2 * prev[slot] + slot];
    if (!(a < T(0))) continue;
    const T* c0 = in.color + prev[slot] * channels;
    for (int64_t k = 0; k < channels; ++k) o[k] += a * (c[k] - c0[k]);
  }
}

// d(loss)/d(color) at one pixel: the identity plus, for each pair it belongs to, ∓alpha times the
// gradient at the pair's target pixel.
template <typename T>
HOST_DEVICE void color_grad_pixel(const AntialiasBuffers<T>& in, const T* pair_alpha, const T* grad_out, int64_t b,
                                  int ix, int iy, T* grad_color) {
  const int64_t width = in.width, channels = in.channels;
  const int64_t p = (b * in.height + iy) * width + ix;
  T* gc = grad_color + p * channels;
  const T* g = grad_out + p * channels;
  for (int64_t k = 0; k < channels; ++k) gc[k] = g[k];
  const int64_t next[2] = {ix + 1 < width ? p + 1 : -1, iy + 1 < in.height ? p + width : -1};
  for (int slot = 0; slot < 2; ++slot) {
    const T a = pair_alpha[2 * p + slot];
    if (a == T(0) || next[slot] < 0) continue;
    const T* gt = grad_out + (a > T(0) ? p : next[slot]) * channels;
    for (int64_t k = 0; k < channels; ++k) gc[k] -= a * gt[k];
  }
  const int64_t prev[2] = {ix > 0 ? p - 1 : -1, iy > 0 ? p - width : -1};
  for (int slot = 0; slot < 2; ++slot) {
    if (prev[slot] < 0) continue;
    const T a = pair_alpha[2 * prev[slot] + slot];
    if (a == T(0)) continue;
    const T* gt = grad_out + (a > T(0) ? prev[slot] : p) * channels;
    for (int64_t k = 0; k < channels; ++k) gc[k] += a * gt[k];
  }
}

// The vertex gradient rows of pair `slot` of pixel (ix, iy): d(loss)/d(clip x, y, z, w) of the
// front triangle's crossing edge, keyed b·V + vertex. Returns false when the pair moves no vertex.
template <typename T>
HOST_DEVICE bool pair_vertex_rows(const AntialiasBuffers<T>& in, const T* pair_alpha, const int32_t* pair_code,
                                  const T* grad_out, int64_t b, int ix, int iy, int slot, int64_t keys[2],
                                  T rows[2][4]) {
  const int64_t width = in.width, channels = in.channels;
  const int64_t p0 = (b * in.height + iy) * width + ix;
  const int32_t code = pair_code[2 * p0 + slot];
  if (code == 0) return false;
  const int64_t p1 = slot == 0 ? p0 + 1 : p0 + width;
  const T a = pair_alpha[2 * p0 + slot];
  const T* gt = grad_out + (a > T(0) ? p0 : p1) * channels;
  const T* c0 = in.color + p0 * channels;
  const T* c1 = in.color + p1 * channels;
  T grad_alpha = T(0);
  for (int64_t k = 0; k < channels; ++k) grad_alpha += gt[k] * (c1[k] - c0[k]);
  const bool front_is_p1 = (code & kPairFrontIsP1) != 0;
  const int edge = (code & kPairEdgeMask) - 1;
  const int64_t* t = in.triangles + 3 * int64_t(code >> kPairTriangleShift);
  const int64_t va = t[edge], vb = t[edge == 2 ? 0 : edge + 1];
  const T* clip = in.clip + b * in.num_vertices * 4;
  const int fx = ix + (front_is_p1 && slot == 0 ? 1 : 0), fy = iy + (front_is_p1 && slot == 1 ? 1 : 0);
  T ga[3], gb[3];
  pair_vertex_grads(clip + 4 * va, clip + 4 * vb, fx, fy, slot == 1, in.width, in.height, grad_alpha, ga, gb);
  keys[0] = b * in.num_vertices + va;
  keys[1] = b * in.num_vertices + vb;
  rows[0][0] = ga[0]; rows[0][1] = ga[1]; rows[0][2] = T(0); rows[0][3] = ga[2];
  rows[1][0] = gb[0]; rows[1][1] = gb[1]; rows[1][2] = T(0); rows[1][3] = gb[2];
  return true;
}

}  // namespace diffrender
