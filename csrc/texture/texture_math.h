// Texture sampling math shared by the CPU and CUDA kernels: texel addressing under wrap/clamp,
// bilinear footprints with their uv derivatives, and the mip level of detail. Nothing here may
// include torch.
//
// UV convention (OBJ): u = 0 is the left edge, u = 1 the right; v = 0 the bottom, v = 1 the top;
// texel row 0 is the top row. Texel (i, j) of a W×H level is centred at ((i+½)/W, 1-(j+½)/H).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace diffrender {

// 32768-texel sides halve to 1×1 in 15 steps.
constexpr int kMaxMipLevels = 16;
// A trilinear sample reads two levels of 2×2 texels.
constexpr int kFootprintCorners = 8;

// A mip pyramid stored as one flat buffer: level l is [texture_batch, height[l], width[l],
// channels], contiguous, starting at element offset[l]. texture_batch is 1 when one texture is
// shared by the whole batch of pixels.
struct MipPyramid {
  int64_t offset[kMaxMipLevels];
  int height[kMaxMipLevels];
  int width[kMaxMipLevels];
  int num_levels;
  int64_t texture_batch;
  int channels;
  bool wrap;  // repeat; otherwise clamp to the edge texels
};

// Texels (not elements) of the whole flat pyramid.
HOST_DEVICE int64_t pyramid_texels(const MipPyramid& mips) {
  const int last = mips.num_levels - 1;
  return mips.offset[last] / mips.channels + mips.texture_batch * int64_t(mips.height[last]) * mips.width[last];
}

// The pixels to sample: uv [B,H,W,2] and, for trilinear filtering, uv_da [B,H,W,4] =
// (du/dx, dv/dx, du/dy, dv/dy); uv_da null samples level 0 only.
template <typename T>
struct SamplePixels {
  const T* uv;
  const T* uv_da;
  int64_t batch, pixels_per_image;
};

// floor(x). On the CPU, without SSE4.1's rounding instructions, floor is a libm call; this
// truncates through int64 instead, exact below 2^52 in magnitude, beyond which every float and
// double is an integer already.
template <typename T>
HOST_DEVICE T floor_value(T x) {
#if defined(__CUDA_ARCH__)
  return floor(x);
#else
  const T limit = T(4503599627370496.0);  // 2^52
  if (!(x > -limit && x < limit)) return x;
  const T truncated = T(static_cast<int64_t>(x));
  return truncated > x ? truncated - T(1) : truncated;
#endif
}

// The two texel columns (or rows) either side of a sample and the weight of the second one.
template <typename T>
struct LinearTaps {
  int first, second;
  T fraction;
};

// Texel coordinate x = t·size - ½ (t = u, or 1 - v for rows) split into two neighbours.
template <typename T>
HOST_DEVICE LinearTaps<T> linear_taps(T t, int size, bool wrap) {
  if (wrap) {
    // Reduce to [0,1] first (1 by rounding), so huge coordinates cannot overflow the integer
    // index; then i lies in [-1, size-1] and wrapping needs no modulo.
    const T x = (t - floor_value(t)) * T(size) - T(0.5);
    const T x0 = floor_value(x);
    const int i = static_cast<int>(x0);
    return {i < 0 ? size - 1 : i, i + 1 == size ? 0 : i + 1, x - x0};
  }
  // Beyond [-1, size] both neighbours are the edge texel; the clamp only bounds the index.
  const T x = clamp_value(t * T(size) - T(0.5), T(-1), T(size));
  const T x0 = floor_value(x);
  const int i = static_cast<int>(x0);
  return {clamp_value(i, 0, size - 1), clamp_value(i + 1, 0, size - 1), x - x0};
}

// The 2×2 texels around a uv in one W×H level: columns from u, rows from 1 - v.
template <typename T>
struct Bilinear {
  LinearTaps<T> column, row;
};

template <typename T>
HOST_DEVICE Bilinear<T> bilinear_taps(T u, T v, int width, int height, bool wrap) {
  return {linear_taps(u, width, wrap), linear_taps(T(1) - v, height, wrap)};
}

// Weight of corner k = (column k&1, row k>>1) of the 2×2 footprint.
template <typename T>
HOST_DEVICE T corner_weight(const Bilinear<T>& b, int k) {
  const T wx = (k & 1) ? b.column.fraction : T(1) - b.column.fraction;
  const T wy = (k & 2) ? b.row.fraction : T(1) - b.row.fraction;
  return wx * wy;
}

// Row of corner k.
template <typename T>
HOST_DEVICE int corner_row(const Bilinear<T>& b, int k) {
  return (k & 2) ? b.row.second : b.row.first;
}

// Texel index (not element index) of corner k within image `image` of a W×H level.
template <typename T>
HOST_DEVICE int64_t corner_texel(const Bilinear<T>& b, int k, int64_t image, int width, int height) {
  const int x = (k & 1) ? b.column.second : b.column.first;
  return (image * height + corner_row(b, k)) * int64_t(width) + x;
}

// d(sample)/du and d(sample)/dv of one channel from the four corner values c[k]. The x and y
// texel coordinates move as u·W and -v·H; clamped edges give equal neighbours, so no gradient.
template <typename T>
HOST_DEVICE void bilinear_uv_derivative(const Bilinear<T>& b, const T c[4], int width, int height, T& d_du,
                                        T& d_dv) {
  const T fx = b.column.fraction, fy = b.row.fraction;
  const T d_dx = (T(1) - fy) * (c[1] - c[0]) + fy * (c[3] - c[2]);
  const T d_dy = (T(1) - fx) * (c[2] - c[0]) + fx * (c[3] - c[1]);
  d_du = d_dx * T(width);
  d_dv = -d_dy * T(height);
}

// The one or two mip levels a pixel blends: (1 - weight)·level0 + weight·level1.
template <typename T>
struct LevelBlend {
  int level0, level1;
  T weight;
};

// lod = log2 of the longer screen-axis footprint in base-level texels, clamped to the pyramid.
// NaN footprints sample level 0; infinite ones the smallest level.
template <typename T>
HOST_DEVICE LevelBlend<T> level_blend(const T* uv_da, const MipPyramid& mips) {
  if (uv_da == nullptr || mips.num_levels == 1) return {0, 0, T(0)};
  const T w = T(mips.width[0]), h = T(mips.height[0]);
  const T x_u = uv_da[0] * w, x_v = uv_da[1] * h, y_u = uv_da[2] * w, y_v = uv_da[3] * h;
  const T along_x = x_u * x_u + x_v * x_v, along_y = y_u * y_u + y_v * y_v;
  const T lod = T(0.5) * log2(along_x > along_y ? along_x : along_y);
  const int top = mips.num_levels - 1;
  if (!(lod > T(0))) return {0, 0, T(0)};
  if (!(lod < T(top))) return {top, top, T(0)};
  const int level0 = static_cast<int>(lod);  // lod > 0: truncation is floor
  return {level0, level0 + 1, lod - T(level0)};
}

template <typename T>
HOST_DEVICE bool finite_uv(T u, T v) {
  return is_finite(u) && is_finite(v);
}

// One filtered sample: up to two levels of four corners each, corner j = 4i + k being corner k
// of level i. Levels with zero blend weight are left out (count = 1), so they cost nothing and
// receive no gradient entries.
template <typename T>
struct PixelFootprint {
  Bilinear<T> taps[2];
  int level[2];
  T level_weight[2];
  int count;  // levels used; 0 for a non-finite uv
  int64_t image;  // which texture of the texture batch
  int64_t element[kFootprintCorners];  // first channel of corner j in the flat pyramid
  T weight[kFootprintCorners];         // level weight × bilinear weight of corner j
};

template <typename T>
HOST_DEVICE PixelFootprint<T> pixel_footprint(const SamplePixels<T>& px, const MipPyramid& mips, int64_t pixel) {
  PixelFootprint<T> f;
  const T u = px.uv[2 * pixel], v = px.uv[2 * pixel + 1];
  f.count = 0;
  if (!finite_uv(u, v)) return f;
  f.image = mips.texture_batch == 1 ? 0 : pixel / px.pixels_per_image;
  const LevelBlend<T> blend = level_blend(px.uv_da ? px.uv_da + 4 * pixel : nullptr, mips);
  f.level[0] = blend.level0;
  f.level_weight[0] = T(1) - blend.weight;
  f.level[1] = blend.level1;
  f.level_weight[1] = blend.weight;
  f.count = blend.weight > T(0) ? 2 : 1;
  for (int i = 0; i < f.count; ++i) {
    const int l = f.level[i];
    f.taps[i] = bilinear_taps(u, v, mips.width[l], mips.height[l], mips.wrap);
    for (int k = 0; k < 4; ++k) {
      f.element[4 * i + k] = mips.offset[l] + corner_texel(f.taps[i], k, f.image, mips.width[l], mips.height[l]) *
                                                  mips.channels;
      f.weight[4 * i + k] = f.level_weight[i] * corner_weight(f.taps[i], k);
    }
  }
  return f;
}

// out[c] = Σ corners weight · texel[c]; zero for a non-finite uv.
template <typename T>
HOST_DEVICE void sample_pixel(const PixelFootprint<T>& f, int channels, const T* levels, T* out) {
  for (int c = 0; c < channels; ++c) {
    T sum = T(0);
    for (int j = 0; j < 4 * f.count; ++j) sum += f.weight[j] * levels[f.element[j] + c];
    out[c] = sum;
  }
}

// d(loss)/d(uv) of one pixel from its output gradient; the blend weight counts as constant.
template <typename T>
HOST_DEVICE void sample_pixel_uv_grad(const PixelFootprint<T>& f, const MipPyramid& mips, const T* levels,
                                      const T* grad_out, T* grad_uv) {
  T grad_u = T(0), grad_v = T(0);
  for (int i = 0; i < f.count; ++i) {
    const int l = f.level[i];
    for (int c = 0; c < mips.channels; ++c) {
      T corners[4];
      for (int k = 0; k < 4; ++k) corners[k] = levels[f.element[4 * i + k] + c];
      T d_du, d_dv;
      bilinear_uv_derivative(f.taps[i], corners, mips.width[l], mips.height[l], d_du, d_dv);
      grad_u += f.level_weight[i] * grad_out[c] * d_du;
      grad_v += f.level_weight[i] * grad_out[c] * d_dv;
    }
  }
  grad_uv[0] = grad_u;
  grad_uv[1] = grad_v;
}

}  // namespace diffrender
