// Torch-free CUDA plumbing shared by the .cu kernels: stream-ordered scratch memory and a
// deterministic scatter-add. Compiled by nvcc only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/cub.cuh>

namespace diffrender {

#define DR_CUDA_TRY(expr)                     \
  do {                                        \
    const cudaError_t dr_error_ = (expr);     \
    if (dr_error_ != cudaSuccess) return dr_error_; \
  } while (0)

// Stream-ordered device allocation freed at scope exit.
template <typename T>
class Scratch {
 public:
  Scratch(size_t count, cudaStream_t stream) : stream_(stream) {
    status_ = count ? cudaMallocAsync(reinterpret_cast<void**>(&data_), count * sizeof(T), stream) : cudaSuccess;
  }
  ~Scratch() {
    if (data_) cudaFreeAsync(data_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }
  cudaError_t status() const { return status_; }

 private:
  T* data_ = nullptr;
  cudaStream_t stream_;
  cudaError_t status_;
};

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// One thread per run of equal keys sums that run's rows in sorted (= original, since the radix
// sort is stable) order.
template <typename T>
__global__ void sum_sorted_runs(const int64_t* sorted_keys, const int32_t* sorted_rows, const T* values,
                                int64_t count, int channels, int64_t num_segments, T* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  const int64_t key = sorted_keys[i];
  if (key >= num_segments || (i > 0 && sorted_keys[i - 1] == key)) return;
  for (int c = 0; c < channels; ++c) {
    T sum = T(0);
    for (int64_t j = i; j < count && sorted_keys[j] == key; ++j) sum += values[int64_t(sorted_rows[j]) * channels + c];
    out[key * channels + c] += sum;
  }
}

template <typename T>
__global__ void iota_rows(int32_t* rows, int64_t count) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < count) rows[i] = static_cast<int32_t>(i);
}

inline int bits_for(int64_t max_key) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) <= max_key) ++bits;
  return bits;
}

// out[key] += Σ values[row] over the rows with that key, in row order, for any launch
// configuration: the same bits every run (unlike atomicAdd). Rows whose key is ≥ num_segments
// are ignored. values: [count, channels]; out: [num_segments, channels].
template <typename T>
cudaError_t ordered_scatter_add(const int64_t* keys, const T* values, int64_t count, int channels,
                                int64_t num_segments, T* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  Scratch<int64_t> sorted_keys(count, stream);
  Scratch<int32_t> rows(count, stream), sorted_rows(count, stream);
  DR_CUDA_TRY(sorted_keys.status());
  DR_CUDA_TRY(rows.status());
  DR_CUDA_TRY(sorted_rows.status());
  iota_rows<T><<<blocks_for(count), kThreads, 0, stream>>>(rows.get(), count);
  const int end_bit = bits_for(num_segments);
  size_t temp_bytes = 0;
  DR_CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, sorted_keys.get(), rows.get(),
                                              sorted_rows.get(), count, 0, end_bit, stream));
  Scratch<unsigned char> temp(temp_bytes, stream);
  DR_CUDA_TRY(temp.status());
  DR_CUDA_TRY(cub::DeviceRadixSort::SortPairs(temp.get(), temp_bytes, keys, sorted_keys.get(), rows.get(),
                                              sorted_rows.get(), count, 0, end_bit, stream));
  sum_sorted_runs<T><<<blocks_for(count), kThreads, 0, stream>>>(sorted_keys.get(), sorted_rows.get(), values,
                                                                 count, channels, num_segments, out);
  return cudaGetLastError();
}

}  // namespace diffrender
