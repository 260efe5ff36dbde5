// Torch-free CUDA entry points of the soft rasterizer (raw device pointers, contiguous layouts as
// in soft.h). Each returns the first CUDA error, or cudaSuccess.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>

#include "soft/soft_math.h"

namespace diffrender {

// The CUDA kernels number some of a call's work in 32 bits: CUB's segmented sort counts the
// forward's binned (triangle, 16×16 tile) pairs in int, and ordered_scatter_add numbers the
// backward's rows, three per walk chunk (soft_math.h), in int32. A call with more than the
// limits below does nothing but count them, so that the torch glue can say what was too large.
// tests/cuda_emulation lowers the limit, so that tests reach it with small scenes.
#ifndef DIFFRENDER_SOFT_CUDA_MAX_PAIRS
#define DIFFRENDER_SOFT_CUDA_MAX_PAIRS 2147483647
#endif
constexpr int64_t kSoftCudaMaxBinnedPairs = DIFFRENDER_SOFT_CUDA_MAX_PAIRS;
constexpr int64_t kSoftCudaMaxWalkChunks = DIFFRENDER_SOFT_CUDA_MAX_PAIRS / 3;

// What a call counted, in host memory: binned_pairs by the forward, walk_chunks by the backward.
struct SoftCudaCounts {
  int64_t binned_pairs = 0;
  int64_t walk_chunks = 0;
};

// screen [B,V,3] (x/w, y/w, 1/w), triangles [F,3], attributes [B,V,A], background [C], texture (see
// soft_color_math.h; A = C untextured, 2 + 2C textured). Writes image [B,H,W,C+1],
// aux [B,H,W,kSoftAuxChannels] and, for aggr_rgb 'hard' with C > 0, hard_ids [B,H,W] (nullptr
// otherwise), all in full, unless counts.binned_pairs exceeds kSoftCudaMaxBinnedPairs. H, W come
// from params.
template <typename T>
cudaError_t soft_rasterize_forward_cuda(const SoftParams& params, const T* screen, const int64_t* triangles,
                                        const T* attributes, const T* background, const SoftTexture<T>& texture,
                                        int64_t batch, int64_t num_vertices, int64_t num_triangles, int64_t channels,
                                        T* image, T* aux, int64_t* hard_ids, SoftCudaCounts& counts,
                                        cudaStream_t stream);

// Given the forward's image/aux/hard_ids and d(loss)/d(image): accumulates d(loss)/d(x/w, y/w, 1/w,
// attributes) into grad_vertices [B,V,3+A] (which must be zeroed by the caller) and writes
// grad_background [C] in full. hard_ids may be nullptr unless aggr_rgb is 'hard' with C > 0.
// Textured, it also writes the texture-gradient records (soft.h's SoftTextureRecords): it counts
// them, calls allocate_records(R) for device room for R rows of 2 + C values (not called when
// untextured), fills them, and writes batch_offsets [B+1] (host memory). All of it unless
// counts.walk_chunks exceeds kSoftCudaMaxWalkChunks.
template <typename T>
cudaError_t soft_rasterize_backward_cuda(const SoftParams& params, const T* screen, const int64_t* triangles,
                                         const T* attributes, const SoftTexture<T>& texture, int64_t batch,
                                         int64_t num_vertices, int64_t num_triangles, int64_t channels, const T* image,
                                         const T* aux, const int64_t* hard_ids, const T* grad_image, T* grad_vertices,
                                         T* grad_background, const std::function<T*(int64_t)>& allocate_records,
                                         int64_t* batch_offsets, SoftCudaCounts& counts, cudaStream_t stream);

}  // namespace diffrender
