// Deferred Phong shading of rasterized pixels: each covered pixel interpolates its triangle's
// packed vertex attributes with the barycentrics and shades the result in one pass, so the
// interpolated attributes never exist as separate full-size images. Shared by CPU and CUDA.
#pragma once

#include <cstdint>

#include "shading/phong_math.h"

namespace diffrender {

// Raw views of one shading call. Vertex attributes are packed [B,V,channels]: position (3),
// normal (3), diffuse (3) unless pixel_diffuse is given, then specular (3) and shininess (1)
// when with_specular.
template <typename T>
struct PixelShadingArrays {
  const T* vertex_attributes;
  const T* pixel_diffuse;  // [B,P,3] per-pixel diffuse (e.g. sampled from a texture), or null
  const int64_t* triangles;
  const int64_t* ids;  // [B,P]
  const T* bary;       // [B,P,3]
  const T *eye, *light_positions, *light_intensities, *ambient;
  int64_t batch, num_vertices, pixels, lights;
  int channels;
  bool with_specular;
};

// d(loss)/d(RGBA) per pixel, read through strides: a loss such as image.sum() hands back one
// value broadcast over the image (stride 0), which would cost more to copy out than to shade.
template <typename T>
struct PixelGradient {
  const T* data;
  int64_t pixel_stride, channel_stride;
};

template <typename T>
HOST_DEVICE Vec3<T> load_rgb_gradient(const PixelGradient<T>& g, int64_t p) {
  const T* first = g.data + p * g.pixel_stride;
  return {first[0], first[g.channel_stride], first[2 * g.channel_stride]};
}

constexpr int kPositionOffset = 0, kNormalOffset = 3, kVertexDiffuseOffset = 6;
constexpr int kMaxPixelChannels = 13;  // position, normal, diffuse, specular, shininess

template <typename T>
HOST_DEVICE int specular_offset(const PixelShadingArrays<T>& a) {
  return a.pixel_diffuse ? kVertexDiffuseOffset : kVertexDiffuseOffset + 3;
}

// Uncovered pixels carry zero barycentrics (their id is 0, a valid index, but meaningless).
template <typename T>
HOST_DEVICE bool pixel_covered(const T* b) {
  return b[0] + b[1] + b[2] >= T(0.5);
}

// The packed attribute rows of pixel p's three corners.
template <typename T>
struct PixelCorners {
  const T* row[3];
};

template <typename T>
HOST_DEVICE PixelCorners<T> pixel_corners(const PixelShadingArrays<T>& a, int64_t p) {
  const T* image = a.vertex_attributes + (p / a.pixels) * a.num_vertices * a.channels;
  const int64_t* t = a.triangles + 3 * a.ids[p];
  return {{image + t[0] * a.channels, image + t[1] * a.channels, image + t[2] * a.channels}};
}

template <typename T>
HOST_DEVICE T interpolate_channel(const PixelCorners<T>& c, const T* b, int channel) {
  return b[0] * c.row[0][channel] + b[1] * c.row[1][channel] + b[2] * c.row[2][channel];
}

template <typename T>
HOST_DEVICE Vec3<T> interpolate3(const PixelCorners<T>& c, const T* b, int offset) {
  return {interpolate_channel(c, b, offset), interpolate_channel(c, b, offset + 1),
          interpolate_channel(c, b, offset + 2)};
}

template <typename T>
HOST_DEVICE PhongPoint<T> pixel_phong_point(const PixelShadingArrays<T>& a, const PixelCorners<T>& c, int64_t p) {
  const T* b = a.bary + 3 * p;
  PhongPoint<T> point;
  point.position = interpolate3(c, b, kPositionOffset);
  point.normal = interpolate3(c, b, kNormalOffset);
  point.diffuse = a.pixel_diffuse ? load3(a.pixel_diffuse + 3 * p) : interpolate3(c, b, kVertexDiffuseOffset);
  point.with_specular = a.with_specular;
  const int specular = specular_offset(a);
  point.specular = a.with_specular ? interpolate3(c, b, specular) : Vec3<T>{0, 0, 0};
  point.shininess = a.with_specular ? interpolate_channel(c, b, specular + 3) : T(1);
  return point;
}

// The gradient of pixel p's interpolated packed attributes, [channels] (the per-pixel diffuse,
// when there is one, is not among them).
template <typename T>
HOST_DEVICE void pack_attribute_gradient(const PixelShadingArrays<T>& a, const PhongPointGrad<T>& g, T* row) {
  store3(row + kPositionOffset, g.position);
  store3(row + kNormalOffset, g.normal);
  if (!a.pixel_diffuse) store3(row + kVertexDiffuseOffset, g.diffuse);
  if (a.with_specular) {
    const int specular = specular_offset(a);
    store3(row + specular, g.specular);
    row[specular + 3] = g.shininess;
  }
}

// d(loss)/d(b_k) = Σ_c d(loss)/d(attribute_c) · corner_k[c].
template <typename T>
HOST_DEVICE void barycentric_gradient(const PixelCorners<T>& c, const T* attribute_grad, int channels, T* out) {
  for (int k = 0; k < 3; ++k) {
    T sum = T(0);
    for (int ch = 0; ch < channels; ++ch) sum += attribute_grad[ch] * c.row[k][ch];
    out[k] = sum;
  }
}

}  // namespace diffrender
