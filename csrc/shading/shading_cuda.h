// Torch-free CUDA entry points of Phong shading. specular/shininess may be null. Gradient
// buffers of the per-batch inputs (eye, lights, ambient) must be zeroed by the caller.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "shading/phong_math.h"
#include "shading/pixel_shading_math.h"

namespace diffrender {

template <typename T>
cudaError_t phong_forward_cuda(const PhongArrays<T>& in, T* out, cudaStream_t stream);

// grads: positions, normals, diffuse, specular, shininess (per point; the last two may be null),
// eye, light_positions, light_intensities, ambient (per batch).
template <typename T>
cudaError_t phong_backward_cuda(const PhongArrays<T>& in, const T* grad_out, T* const grads[9],
                                cudaStream_t stream);

template <typename T>
cudaError_t shade_pixels_forward_cuda(const PixelShadingArrays<T>& in, T* rgba, cudaStream_t stream);

// grads: vertex_attributes [B,V,A] (zeroed by the caller), pixel_diffuse (may be null),
// barycentrics, then eye, light_positions, light_intensities, ambient (zeroed by the caller).
template <typename T>
cudaError_t shade_pixels_backward_cuda(const PixelShadingArrays<T>& in, const PixelGradient<T>& grad_rgba,
                                       T* const grads[7],
                                       cudaStream_t stream);

}  // namespace diffrender
