// Tile binning shared by the CUDA rasterizers (torch-free, nvcc only). Each triangle setup (any
// type with an inclusive pixel box x_min..x_max, y_min..y_max; empty when min > max) is counted
// into the 16×16 tiles its box touches, the counts are scanned into per-tile offsets, and the
// triangle indices are filled into each tile's bin. The fill uses atomics, so a bin's order is
// arbitrary: callers that need an order sort the bins or resolve ties independently of it. Counts
// and offsets are 64-bit: a batch of large triangles can put more than 2^31 entries in the bins.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "common/cuda_scratch.cuh"

namespace diffrender {

constexpr int kTile = 16;

struct TileGrid {
  int tiles_x, tiles_y;
  int64_t batch;
  __host__ __device__ int64_t per_image() const { return int64_t(tiles_x) * tiles_y; }
  __host__ __device__ int64_t count() const { return batch * per_image(); }
};

inline TileGrid tile_grid(int width, int height, int64_t batch) {
  return {(width + kTile - 1) / kTile, (height + kTile - 1) / kTile, batch};
}

// Calls visit(tile index within the image) for each tile the box of setup s touches.
template <typename Setup, typename Visit>
__device__ __forceinline__ void for_each_tile(const Setup& s, const TileGrid& grid, Visit&& visit) {
  if (s.x_min > s.x_max || s.y_min > s.y_max) return;
  for (int ty = s.y_min / kTile; ty <= s.y_max / kTile; ++ty)
    for (int tx = s.x_min / kTile; tx <= s.x_max / kTile; ++tx) visit(ty * grid.tiles_x + tx);
}

// The pixel of this thread in a kernel launched with one block of kTile × kTile threads per tile.
struct TilePixel {
  int64_t tile, image;  // the block's tile, and its batch item
  int ix, iy;           // the pixel, which may lie beyond the image's right or bottom edge
  int lane;             // the thread's index in the block
};

__device__ __forceinline__ TilePixel tile_pixel(const TileGrid& grid) {
  TilePixel t;
  t.tile = blockIdx.x;
  t.image = t.tile / grid.per_image();
  const int tile_in_image = static_cast<int>(t.tile % grid.per_image());
  t.ix = (tile_in_image % grid.tiles_x) * kTile + threadIdx.x;
  t.iy = (tile_in_image / grid.tiles_x) * kTile + threadIdx.y;
  t.lane = threadIdx.y * kTile + threadIdx.x;
  return t;
}

// Calls visit(setup, triangle index) for each triangle in this block's tile bin, in bin order,
// when `active` (a pixel inside the image). The block stages the setups in shared memory, kStage
// at a time, between barriers: every thread of the block must call this, active or not.
template <int kStage, typename Setup, typename Visit>
__device__ __forceinline__ void for_each_binned_triangle(const TilePixel& t, const int64_t* offsets,
                                                         const int32_t* entries, const Setup* image_setups,
                                                         Setup* staged, int32_t* staged_ids, bool active,
                                                         Visit&& visit) {
  const int64_t end = offsets[t.tile + 1];
  for (int64_t begin = offsets[t.tile]; begin < end; begin += kStage) {
    const int n = static_cast<int>(min(int64_t(kStage), end - begin));
    if (t.lane < n) {
      staged_ids[t.lane] = entries[begin + t.lane];
      staged[t.lane] = image_setups[staged_ids[t.lane]];
    }
    __syncthreads();
    for (int k = 0; active && k < n; ++k) visit(staged[k], staged_ids[k]);
    __syncthreads();
  }
}

// CUDA's 64-bit atomicAdd is unsigned; the counts never go negative.
__device__ __forceinline__ int64_t atomic_increment(int64_t* counter) {
  return static_cast<int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(counter), 1ull));
}

// Adds setup s (of batch item `image`) to the counts [B, tiles] of the tiles it touches.
template <typename Setup>
__device__ __forceinline__ void count_tiles(const Setup& s, int64_t image, const TileGrid& grid,
                                            int64_t* tile_counts) {
  int64_t* counts = tile_counts + image * grid.per_image();
  for_each_tile(s, grid, [&](int64_t tile) { atomic_increment(counts + tile); });
}

template <typename Setup>
__global__ void fill_bins(const Setup* setups, int64_t num_triangles, TileGrid grid, int64_t* cursors,
                          int32_t* entries) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= grid.batch * num_triangles) return;
  int64_t* cursor = cursors + (i / num_triangles) * grid.per_image();
  const int32_t triangle = static_cast<int32_t>(i % num_triangles);
  for_each_tile(setups[i], grid, [&](int64_t tile) { entries[atomic_increment(cursor + tile)] = triangle; });
}

// Bins the triangles of every batch item to the tiles of grid, then returns
// use_bins(setups, offsets, entries, total): tile t's triangle indices are entries[offsets[t] ..
// offsets[t+1]) of entries [total], in arbitrary order (offsets int64 [tiles + 1]).
// setup_and_count(setups, counts) launches the kernel that writes the setups [B*F] and adds each
// to the int64 counts [tiles + 1] of the tiles it touches (count_tiles); counts start at zero. A
// grid of no tiles (an empty batch) calls neither, since CUDA refuses a launch of no blocks.
// A caller whose use_bins counts in 32 bits passes its max_pairs: *binned_pairs (when given) gets
// the total, and above max_pairs nothing is binned or used.
template <typename Setup, typename SetupAndCount, typename UseBins>
cudaError_t with_tile_bins(const TileGrid& grid, int64_t num_triangles, cudaStream_t stream,
                           const SetupAndCount& setup_and_count, const UseBins& use_bins,
                           int64_t max_pairs = std::numeric_limits<int64_t>::max(), int64_t* binned_pairs = nullptr) {
  const int64_t tiles = grid.count(), items = grid.batch * num_triangles;
  if (tiles == 0) return cudaSuccess;
  Scratch<Setup> setups(items, stream);
  Scratch<int64_t> counts(tiles + 1, stream), offsets(tiles + 1, stream);
  DR_CUDA_TRY(setups.status());
  DR_CUDA_TRY(counts.status());
  DR_CUDA_TRY(offsets.status());
  DR_CUDA_TRY(cudaMemsetAsync(counts.get(), 0, (tiles + 1) * sizeof(int64_t), stream));
  if (items > 0) {
    setup_and_count(setups.get(), counts.get());
    DR_CUDA_TRY(cudaGetLastError());
  }
  int64_t total = 0;
  DR_CUDA_TRY(running_sum(counts.get(), offsets.get(), tiles, stream, &total));
  if (binned_pairs) *binned_pairs = total;
  if (total > max_pairs) return cudaSuccess;
  Scratch<int32_t> entries(total, stream);
  DR_CUDA_TRY(entries.status());
  if (total > 0) {
    // The counts become the fill cursors.
    DR_CUDA_TRY(cudaMemcpyAsync(counts.get(), offsets.get(), (tiles + 1) * sizeof(int64_t),
                                cudaMemcpyDeviceToDevice, stream));
    fill_bins<Setup><<<blocks_for(items), kThreads, 0, stream>>>(setups.get(), num_triangles, grid, counts.get(),
                                                                 entries.get());
    DR_CUDA_TRY(cudaGetLastError());
  }
  return use_bins(setups.get(), offsets.get(), entries.get(), total);
}

}  // namespace diffrender
