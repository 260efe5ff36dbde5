// Torch-free CUDA entry points of texture sampling (raw device pointers, layouts as in
// texture.h). grad_levels must be zeroed by the caller; either gradient may be null (skipped).
// Each returns the first CUDA error, or cudaSuccess.
#pragma once

#include <cuda_runtime.h>

#include "texture/texture_math.h"

namespace diffrender {

template <typename T>
cudaError_t texture_sample_forward_cuda(const SamplePixels<T>& pixels, const MipPyramid& mips, const T* levels,
                                        T* out, cudaStream_t stream);

template <typename T>
cudaError_t texture_sample_backward_cuda(const SamplePixels<T>& pixels, const MipPyramid& mips, const T* levels,
                                         const T* grad_out, T* grad_levels, T* grad_uv, cudaStream_t stream);

}  // namespace diffrender
