// A minimal 3-vector for the per-pixel math shared by CPU and CUDA kernels.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace diffrender {

template <typename T>
struct Vec3 {
  T x, y, z;
};

template <typename T>
HOST_DEVICE Vec3<T> load3(const T* p) { return {p[0], p[1], p[2]}; }
template <typename T>
HOST_DEVICE void store3(T* p, const Vec3<T>& v) { p[0] = v.x; p[1] = v.y; p[2] = v.z; }
template <typename T>
HOST_DEVICE void add3(T* p, const Vec3<T>& v) { p[0] += v.x; p[1] += v.y; p[2] += v.z; }
template <typename T>
HOST_DEVICE Vec3<T> operator+(const Vec3<T>& a, const Vec3<T>& b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
template <typename T>
HOST_DEVICE Vec3<T> operator-(const Vec3<T>& a, const Vec3<T>& b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
template <typename T>
HOST_DEVICE Vec3<T> operator*(T s, const Vec3<T>& a) { return {s * a.x, s * a.y, s * a.z}; }
template <typename T>
HOST_DEVICE Vec3<T> operator*(const Vec3<T>& a, const Vec3<T>& b) { return {a.x * b.x, a.y * b.y, a.z * b.z}; }
template <typename T>
HOST_DEVICE T dot(const Vec3<T>& a, const Vec3<T>& b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
template <typename T>
HOST_DEVICE T length(const Vec3<T>& a) { return sqrt(dot(a, a)); }

// v / max(|v|, eps) and its backward: d(input) from d(output).
template <typename T>
HOST_DEVICE Vec3<T> safe_normalize(const Vec3<T>& v, T& norm, T eps) {
  norm = length(v);
  norm = norm > eps ? norm : eps;
  return (T(1) / norm) * v;
}

template <typename T>
HOST_DEVICE Vec3<T> safe_normalize_backward(const Vec3<T>& unit, T norm, T eps, const Vec3<T>& grad_unit) {
  // Below eps the division is by a constant, so the projection term vanishes.
  if (!(norm > eps)) return (T(1) / eps) * grad_unit;
  return (T(1) / norm) * (grad_unit - dot(unit, grad_unit) * unit);
}

}  // namespace diffrender
