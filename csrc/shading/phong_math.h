// Phong shading of one surface point under one point light, forward and backward. Shared by the
// CPU and CUDA kernels of both renderers.
#pragma once

#include <cstdint>

#include "common/vec3.h"

namespace diffrender {

constexpr float kNormalizeEps = 1e-12f;

// Quantities of one (point, light) pair that the forward and the backward both need.
template <typename T>
struct PhongLightTerms {
  Vec3<T> to_light;  // unit vector to the light
  T light_distance;
  T n_dot_l;
  Vec3<T> reflected;  // 2(n·l)n - l
  T r_dot_v;
  T highlight;       // max(r·v,0)^shininess where lit, else 0
  bool specular_lit;
};

template <typename T>
HOST_DEVICE PhongLightTerms<T> phong_light_terms(const Vec3<T>& position, const Vec3<T>& normal_unit,
                                                 const Vec3<T>& to_eye, const Vec3<T>& light_position,
                                                 T shininess, bool with_specular) {
  PhongLightTerms<T> t;
  t.to_light = safe_normalize(light_position - position, t.light_distance, T(kNormalizeEps));
  t.n_dot_l = dot(normal_unit, t.to_light);
  t.reflected = (T(2) * t.n_dot_l) * normal_unit - t.to_light;
  t.r_dot_v = dot(t.reflected, to_eye);
  // Only surfaces facing the light get a highlight; pow(0, s) has no finite gradient for s < 1.
  t.specular_lit = with_specular && t.r_dot_v > T(0) && t.n_dot_l > T(0);
  t.highlight = t.specular_lit ? pow(t.r_dot_v, shininess) : T(0);
  return t;
}

// Inputs of one point. specular may be null (no specular term).
template <typename T>
struct PhongPoint {
  Vec3<T> position, normal, diffuse, specular;
  T shininess;
  bool with_specular;
};

// A zero normal (e.g. a background pixel, where the barycentrics are all zero) gets no light:
// n·l = 0 switches every term off, and its gradients vanish, so such points skip the work.
template <typename T>
HOST_DEVICE bool unlit(const PhongPoint<T>& p) {
  return p.normal.x == T(0) && p.normal.y == T(0) && p.normal.z == T(0);
}

// Contiguous [B,N,...] point arrays and [B,...] per-batch arrays of one shading call, as the CPU
// and CUDA kernels both see them. specular and shininess are null without a specular term.
template <typename T>
struct PhongArrays {
  const T *positions, *normals, *diffuse, *specular, *shininess, *eye, *light_positions, *light_intensities,
      *ambient;
  int64_t batch, points, lights;
};

// Point i of the flattened [B*N] points.
template <typename T>
HOST_DEVICE PhongPoint<T> load_phong_point(const PhongArrays<T>& a, int64_t i) {
  PhongPoint<T> p;
  p.position = load3(a.positions + 3 * i);
  p.normal = load3(a.normals + 3 * i);
  p.diffuse = load3(a.diffuse + 3 * i);
  p.with_specular = a.specular != nullptr;
  p.specular = p.with_specular ? load3(a.specular + 3 * i) : Vec3<T>{0, 0, 0};
  p.shininess = p.with_specular ? a.shininess[i] : T(1);
  return p;
}

// Σ_lights I·(kd·max(n·l,0) + ks·max(r·v,0)^s) + ambient.
template <typename T>
HOST_DEVICE Vec3<T> phong_forward(const PhongPoint<T>& p, const Vec3<T>& eye, const T* light_positions,
                                  const T* light_intensities, int num_lights, const Vec3<T>& ambient) {
  if (unlit(p)) return ambient;
  T normal_norm, eye_distance;
  const Vec3<T> n = safe_normalize(p.normal, normal_norm, T(kNormalizeEps));
  const Vec3<T> v = safe_normalize(eye - p.position, eye_distance, T(kNormalizeEps));
  Vec3<T> out = ambient;
  for (int j = 0; j < num_lights; ++j) {
    const PhongLightTerms<T> t = phong_light_terms(p.position, n, v, load3(light_positions + 3 * j),
                                                   p.shininess, p.with_specular);
    const Vec3<T> intensity = load3(light_intensities + 3 * j);
    const T diffuse_weight = t.n_dot_l > T(0) ? t.n_dot_l : T(0);
    out = out + diffuse_weight * (intensity * p.diffuse);
    if (t.specular_lit) out = out + t.highlight * (intensity * p.specular);
  }
  return out;
}

// Gradients of one point. Per-point inputs get their gradient written; per-batch inputs (eye,
// lights, ambient) are accumulated into the given partial sums.
template <typename T>
struct PhongPointGrad {
  Vec3<T> position, normal, diffuse, specular;
  T shininess;
};

template <typename T>
HOST_DEVICE PhongPointGrad<T> phong_backward(const PhongPoint<T>& p, const Vec3<T>& eye,
                                             const T* light_positions, const T* light_intensities,
                                             int num_lights, const Vec3<T>& grad_out, T* grad_eye,
                                             T* grad_light_positions, T* grad_light_intensities,
                                             T* grad_ambient) {
  PhongPointGrad<T> g{{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, T(0)};
  add3(grad_ambient, grad_out);
  if (unlit(p)) return g;
  T normal_norm, eye_distance;
  const Vec3<T> n = safe_normalize(p.normal, normal_norm, T(kNormalizeEps));
  const Vec3<T> v = safe_normalize(eye - p.position, eye_distance, T(kNormalizeEps));
  Vec3<T> grad_n{0, 0, 0}, grad_v{0, 0, 0};
  for (int j = 0; j < num_lights; ++j) {
    const Vec3<T> light_position = load3(light_positions + 3 * j);
    const PhongLightTerms<T> t = phong_light_terms(p.position, n, v, light_position, p.shininess, p.with_specular);
    const Vec3<T> intensity = load3(light_intensities + 3 * j);
    const T diffuse_weight = t.n_dot_l > T(0) ? t.n_dot_l : T(0);
    g.diffuse = g.diffuse + diffuse_weight * (grad_out * intensity);
    Vec3<T> grad_intensity = diffuse_weight * (grad_out * p.diffuse);
    T grad_n_dot_l = t.n_dot_l > T(0) ? dot(grad_out, intensity * p.diffuse) : T(0);
    Vec3<T> grad_l{0, 0, 0};
    if (t.specular_lit) {
      const T grad_highlight = dot(grad_out, intensity * p.specular);
      g.specular = g.specular + t.highlight * (grad_out * intensity);
      grad_intensity = grad_intensity + t.highlight * (grad_out * p.specular);
      g.shininess += grad_highlight * t.highlight * log(t.r_dot_v);
      const T grad_r_dot_v = grad_highlight * p.shininess * t.highlight / t.r_dot_v;
      const Vec3<T> grad_r = grad_r_dot_v * v;
      grad_v = grad_v + grad_r_dot_v * t.reflected;
      grad_n_dot_l += T(2) * dot(grad_r, n);
      grad_n = grad_n + (T(2) * t.n_dot_l) * grad_r;
      grad_l = grad_l - grad_r;
    }
    grad_n = grad_n + grad_n_dot_l * t.to_light;
    grad_l = grad_l + grad_n_dot_l * n;
    const Vec3<T> grad_to_light = safe_normalize_backward(t.to_light, t.light_distance, T(kNormalizeEps), grad_l);
    g.position = g.position - grad_to_light;
    add3(grad_light_positions + 3 * j, grad_to_light);
    add3(grad_light_intensities + 3 * j, grad_intensity);
  }
  const Vec3<T> grad_to_eye = safe_normalize_backward(v, eye_distance, T(kNormalizeEps), grad_v);
  g.position = g.position - grad_to_eye;
  add3(grad_eye, grad_to_eye);
  g.normal = safe_normalize_backward(n, normal_norm, T(kNormalizeEps), grad_n);
  return g;
}

// Writes point i's own gradients; specular and shininess only with a specular term.
template <typename T>
HOST_DEVICE void store_phong_point_grad(const PhongPointGrad<T>& g, int64_t i, T* position, T* normal, T* diffuse,
                                        T* specular, T* shininess) {
  store3(position + 3 * i, g.position);
  store3(normal + 3 * i, g.normal);
  store3(diffuse + 3 * i, g.diffuse);
  if (specular) {
    store3(specular + 3 * i, g.specular);
    shininess[i] = g.shininess;
  }
}

}  // namespace diffrender
