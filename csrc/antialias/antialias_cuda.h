// Torch-free CUDA entry points of the analytic antialiasing (raw device pointers, contiguous
// layouts as in antialias.h; `in.bary`/`in.zbuf` null replays coverage from the ids). Outputs are
// written in full; grad_clip must be zeroed by the caller. Each returns the first CUDA error, or
// cudaSuccess.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "antialias/antialias_math.h"

namespace diffrender {

template <typename T>
cudaError_t antialias_forward_cuda(const AntialiasBuffers<T>& in, T* out, T* pair_alpha, int32_t* pair_code,
                                   cudaStream_t stream);

template <typename T>
cudaError_t antialias_backward_cuda(const AntialiasBuffers<T>& in, const T* pair_alpha, const int32_t* pair_code,
                                    const T* grad_out, T* grad_color, T* grad_clip, cudaStream_t stream);

}  // namespace diffrender
