// The colour of one (pixel, triangle) pair of the soft rasterizer from the pair's perspective-correct
// interpolated attributes A = Σ β_k a_k, and its backward; shared by the CPU and CUDA kernels.
// Nothing here may include torch.
//
// Untextured, the attributes are the colour: C = A. Textured, each vertex carries
// (u, v, scale[C], offset[C]) and C = bilinear(texture, A_uv) · A_scale + A_offset, sampled with
// texture_math.h's taps (its UV convention, wrap or clamp, no mip-mapping). A pair whose uv is NaN
// or infinite samples 0 and gets no uv or texture gradient, as in texture.sample.
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "texture/texture_math.h"

namespace diffrender {

// A texture as the soft kernels read it: texels [texture_batch, height, width, C] contiguous, with
// texture_batch 1 (shared by the batch) or B. texels == nullptr means untextured.
template <typename T>
struct SoftTexture {
  const T* texels = nullptr;
  int64_t texture_batch = 1;
  int width = 0, height = 0;
  bool wrap = true;
};

// Per-vertex attribute channels behind C colour channels.
template <typename T>
HOST_DEVICE int64_t soft_attribute_channels(const SoftTexture<T>& tex, int64_t channels) {
  return tex.texels ? 2 + 2 * channels : channels;
}

// Channel ch of A = Σ β_k a_k.
template <typename T>
HOST_DEVICE T soft_interpolate(const T beta[3], const T* const corner[3], int64_t ch) {
  return beta[0] * corner[0][ch] + beta[1] * corner[1][ch] + beta[2] * corner[2][ch];
}

// Where a textured pair samples: the 2×2 texels around its uv in its batch item's texture.
template <typename T>
struct SoftTexelFootprint {
  Bilinear<T> taps;
  int64_t element[4];  // first channel of corner k (texture_math.h's corner order) in the texels
  T weight[4];
  T u, v;
  bool valid;  // textured, with a finite uv
};

template <typename T>
HOST_DEVICE SoftTexelFootprint<T> soft_texel_footprint(const SoftTexture<T>& tex, int64_t batch_item,
                                                      int64_t channels, const T beta[3],
                                                      const T* const corner[3]) {
  SoftTexelFootprint<T> f;
  f.valid = false;
  if (!tex.texels) return f;
  f.u = soft_interpolate(beta, corner, 0);
  f.v = soft_interpolate(beta, corner, 1);
  f.valid = finite_uv(f.u, f.v);
  if (!f.valid) return f;
  f.taps = bilinear_taps(f.u, f.v, tex.width, tex.height, tex.wrap);
  const int64_t image = tex.texture_batch == 1 ? 0 : batch_item;
  for (int k = 0; k < 4; ++k) {
    f.element[k] = corner_texel(f.taps, k, image, tex.width, tex.height) * channels;
    f.weight[k] = corner_weight(f.taps, k);
  }
  return f;
}

// Channel ch of the pair's colour.
template <typename T>
HOST_DEVICE T soft_pair_color(const SoftTexture<T>& tex, const SoftTexelFootprint<T>& f, const T beta[3],
                              const T* const corner[3], int64_t channels, int64_t ch) {
  if (!tex.texels) return soft_interpolate(beta, corner, ch);
  T albedo = T(0);
  if (f.valid)
    for (int k = 0; k < 4; ++k) albedo += f.weight[k] * tex.texels[f.element[k] + ch];
  return albedo * soft_interpolate(beta, corner, 2 + ch) + soft_interpolate(beta, corner, 2 + channels + ch);
}

// Whether the pair sends a record to the texture gradient (a finite uv, and a pixel gradient g
// that is not zero); the record itself is written by soft_color_backward.
template <typename T>
HOST_DEVICE bool soft_texture_record_wanted(const SoftTexelFootprint<T>& f, const T* g, int64_t channels) {
  if (!f.valid) return false;
  bool any = false;
  for (int64_t ch = 0; ch < channels; ++ch) any |= g[ch] != T(0);
  return any;
}

// Backward of the pair's colour C at aggregation weight w, i.e. dL/dC = w·g. Adds β_k w·dL/dA to
// gattr[k][0..attribute channels) and returns ga[k] = g·∂C/∂β_k (without w) and gC = g·C.
// When record is given and soft_texture_record_wanted holds, writes the pair's texture-gradient
// record (u, v, dL/d(albedo)[C] = w·g·A_scale) there and returns true.
template <typename T>
HOST_DEVICE bool soft_color_backward(const SoftTexture<T>& tex, const SoftTexelFootprint<T>& f, const T beta[3],
                                     const T* const corner[3], int64_t channels, const T* g, T w,
                                     T* const gattr[3], T ga[3], T& gC, T* record) {
  if (!tex.texels) {
    for (int k = 0; k < 3; ++k) {
      T dot = T(0);
      for (int64_t ch = 0; ch < channels; ++ch) dot += g[ch] * corner[k][ch];
      ga[k] = dot;
      const T f_attr = beta[k] * w;
      for (int64_t ch = 0; ch < channels; ++ch) gattr[k][ch] += f_attr * g[ch];
    }
    gC = beta[0] * ga[0] + beta[1] * ga[1] + beta[2] * ga[2];
    return false;
  }
  const bool recorded = record != nullptr && soft_texture_record_wanted(f, g, channels);
  const T f_attr[3] = {beta[0] * w, beta[1] * w, beta[2] * w};
  T gu = T(0), gv = T(0);
  ga[0] = ga[1] = ga[2] = T(0);
  gC = T(0);
  for (int64_t ch = 0; ch < channels; ++ch) {
    const int64_t at_scale = 2 + ch, at_offset = 2 + channels + ch;
    const T scale = soft_interpolate(beta, corner, at_scale);
    const T offset = soft_interpolate(beta, corner, at_offset);
    T albedo = T(0);
    if (f.valid) {
      T texel[4];
      for (int k = 0; k < 4; ++k) {
        texel[k] = tex.texels[f.element[k] + ch];
        albedo += f.weight[k] * texel[k];
      }
      T d_du, d_dv;
      bilinear_uv_derivative(f.taps, texel, tex.width, tex.height, d_du, d_dv);
      gu += g[ch] * scale * d_du;
      gv += g[ch] * scale * d_dv;
    }
    gC += g[ch] * (albedo * scale + offset);
    const T g_scale = g[ch] * albedo;
    for (int k = 0; k < 3; ++k) {
      ga[k] += g_scale * corner[k][at_scale] + g[ch] * corner[k][at_offset];
      gattr[k][at_scale] += f_attr[k] * g_scale;
      gattr[k][at_offset] += f_attr[k] * g[ch];
    }
    if (recorded) record[2 + ch] = w * g[ch] * scale;
  }
  // Without a finite uv the uv terms are absent, not 0·∞.
  if (f.valid) {
    for (int k = 0; k < 3; ++k) {
      ga[k] += gu * corner[k][0] + gv * corner[k][1];
      gattr[k][0] += f_attr[k] * gu;
      gattr[k][1] += f_attr[k] * gv;
    }
  }
  if (recorded) {
    record[0] = f.u;
    record[1] = f.v;
  }
  return recorded;
}

}  // namespace diffrender
