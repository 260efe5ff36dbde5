// Torch-free CUDA entry points of the barycentric rasterizer and interpolation (raw device
// pointers, contiguous layouts as in barycentric.h). Output buffers are written in full; gradient
// buffers must be zeroed by the caller. Each returns the first CUDA error, or cudaSuccess.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace diffrender {

template <typename T>
cudaError_t rasterize_forward_cuda(const T* clip, const int64_t* triangles, int64_t batch, int64_t num_vertices,
                                   int64_t num_triangles, int width, int height, int64_t* ids, T* bary, T* zbuf,
                                   cudaStream_t stream);

template <typename T>
cudaError_t rasterize_backward_cuda(const T* clip, const int64_t* triangles, int64_t batch, int64_t num_vertices,
                                    int64_t num_triangles, int width, int height, const int64_t* ids, const T* bary,
                                    const T* grad_bary, T* grad_clip, cudaStream_t stream);

template <typename T>
cudaError_t interpolate_forward_cuda(const T* attributes, const int64_t* triangles, int64_t batch,
                                     int64_t num_vertices, int64_t channels, int64_t pixels, const int64_t* ids,
                                     const T* bary, T* out, cudaStream_t stream);

template <typename T>
cudaError_t interpolate_backward_cuda(const T* grad_out, const T* attributes, const int64_t* triangles,
                                      int64_t batch, int64_t num_vertices, int64_t channels, int64_t pixels,
                                      const int64_t* ids, const T* bary, T* grad_attributes, T* grad_bary,
                                      cudaStream_t stream);

}  // namespace diffrender
