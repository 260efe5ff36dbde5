// Per-pixel and per-triangle math is written once, as inline functions that compile for both the
// CPU kernels (plain C++) and the CUDA kernels (nvcc). Nothing here may include torch.
#pragma once

#if defined(__CUDACC__)
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif

namespace diffrender {

template <typename T>
HOST_DEVICE T min3(T a, T b, T c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }

template <typename T>
HOST_DEVICE T max3(T a, T b, T c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

// NaN clamps to lo: the callers turn the result into an array index, and casting NaN to int is
// undefined (a vertex at infinity would otherwise index memory far outside the image).
template <typename T>
HOST_DEVICE T clamp_value(T v, T lo, T hi) { return v >= lo ? (v > hi ? hi : v) : lo; }

// x - x is 0 exactly when x is finite (NaN for ±inf and NaN); unlike isfinite it needs no
// host/device overload juggling.
template <typename T>
HOST_DEVICE bool is_finite(T x) { return x - x == T(0); }

// Pixel-centre sampling: column ix of a W-wide image sits at NDC 2(ix+0.5)/W - 1.
template <typename T>
HOST_DEVICE T pixel_center_ndc(int index, int extent) {
  return (T(2) * (T(index) + T(0.5))) / T(extent) - T(1);
}

}  // namespace diffrender
