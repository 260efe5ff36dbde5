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

// Entries of sorted keys are summed in fixed chunks of kRunChunk, so that no thread adds more than
// kRunChunk values, however long a run of one key is (a screen-sized triangle's vertex collects
// millions). A chunk's pieces (maximal runs of one key inside it) that start and end inside it are
// whole runs: they go to out directly. Its first and last piece may continue in a neighbouring
// chunk, so they go to two slots (head, tail) of the next level, which sums those slots the same
// way; the last level, of one chunk, writes every piece. The order of every sum is fixed by the
// count alone: the same bits on every run and for any launch configuration.
constexpr int kRunChunk = 64;

// One thread per (chunk, channel) of one level. rows: the entry's row of values, or null for the
// identity; slot_keys/slot_values: the next level's entries [2 · chunks], or null on the last level.
template <typename T>
__global__ void sum_chunk_pieces(const int64_t* keys, const int32_t* rows, const T* values, int64_t count,
                                 int channels, int64_t num_segments, int64_t* slot_keys, T* slot_values, T* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t chunk = i / channels, begin = chunk * kRunChunk;
  const int c = static_cast<int>(i % channels);
  if (begin >= count) return;
  const int64_t end = begin + kRunChunk < count ? begin + kRunChunk : count;
  for (int64_t j = begin; j < end;) {
    const int64_t key = keys[j], piece_begin = j;
    T sum = T(0);
    for (; j < end && keys[j] == key; ++j) sum += values[(rows ? int64_t(rows[j]) : j) * channels + c];
    const bool head = piece_begin == begin, tail = j == end;
    if (slot_keys && (head || tail)) {
      // A piece that is both head and tail fills the tail slot with a zero: every chunk then
      // gives exactly two slots, so the next level's keys stay sorted and its runs contiguous.
      if (head) {
        if (c == 0) slot_keys[2 * chunk] = key;
        slot_values[2 * chunk * channels + c] = sum;
      }
      if (tail) {
        if (c == 0) slot_keys[2 * chunk + 1] = key;
        slot_values[(2 * chunk + 1) * channels + c] = head ? T(0) : sum;
      }
    } else if (key < num_segments) {
      out[key * channels + c] += sum;
    }
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

// Exclusive running sum of counts [n + 1] into offsets [n + 1], so that offsets[n] is the total
// of counts[0..n). The scan reads counts[n] without using it; it is zeroed so that no uninitialised
// memory is read (compute-sanitizer's initcheck). Given total, it also copies the total to the
// host, which synchronises the stream.
template <typename I>
cudaError_t running_sum(I* counts, I* offsets, int64_t n, cudaStream_t stream, I* total = nullptr) {
  DR_CUDA_TRY(cudaMemsetAsync(counts + n, 0, sizeof(I), stream));
  size_t scan_bytes = 0;
  DR_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts, offsets, n + 1, stream));
  Scratch<unsigned char> scan_temp(scan_bytes, stream);
  DR_CUDA_TRY(scan_temp.status());
  DR_CUDA_TRY(cub::DeviceScan::ExclusiveSum(scan_temp.get(), scan_bytes, counts, offsets, n + 1, stream));
  if (!total) return cudaSuccess;
  DR_CUDA_TRY(cudaMemcpyAsync(total, offsets + n, sizeof(I), cudaMemcpyDeviceToHost, stream));
  return cudaStreamSynchronize(stream);
}

inline int64_t run_chunks(int64_t count) { return (count + kRunChunk - 1) / kRunChunk; }

// out[key] += Σ values[rows[i]] over the entries i with that key, for keys sorted ascending: level
// after level of sum_chunk_pieces, each with 2 · chunks entries of its own, until one chunk is left.
template <typename T>
cudaError_t sum_sorted_entries(const int64_t* keys, const int32_t* rows, const T* values, int64_t count,
                               int channels, int64_t num_segments, T* out, cudaStream_t stream) {
  if (count == 0 || channels == 0) return cudaSuccess;
  // Two buffers taken in turn: the second level's entries, and the (smaller) third level's.
  const int64_t second = 2 * run_chunks(count), third = 2 * run_chunks(second);
  Scratch<int64_t> keys_a(second, stream), keys_b(third, stream);
  Scratch<T> values_a(second * channels, stream), values_b(third * channels, stream);
  DR_CUDA_TRY(keys_a.status());
  DR_CUDA_TRY(keys_b.status());
  DR_CUDA_TRY(values_a.status());
  DR_CUDA_TRY(values_b.status());
  int64_t* slot_keys[2] = {keys_a.get(), keys_b.get()};
  T* slot_values[2] = {values_a.get(), values_b.get()};
  for (int level = 0;; ++level) {
    const int64_t chunks = run_chunks(count);
    const bool last = chunks == 1;
    int64_t* next_keys = last ? nullptr : slot_keys[level % 2];
    T* next_values = last ? nullptr : slot_values[level % 2];
    sum_chunk_pieces<T><<<blocks_for(chunks * channels), kThreads, 0, stream>>>(
        keys, rows, values, count, channels, num_segments, next_keys, next_values, out);
    DR_CUDA_TRY(cudaGetLastError());
    if (last) return cudaSuccess;
    keys = next_keys;
    values = next_values;
    rows = nullptr;
    count = 2 * chunks;
  }
}

// out[key] += Σ values[row] over the rows with that key, in an order fixed by the keys alone (rows
// in order inside each chunk of sum_sorted_entries, the stable sort keeping the rows of one key in
// order): the same bits every run (unlike atomicAdd). Rows whose key is ≥ num_segments
// are ignored. values: [count, channels]; out: [num_segments, channels].
template <typename T>
cudaError_t ordered_scatter_add(const int64_t* keys, const T* values, int64_t count, int channels,
                                int64_t num_segments, T* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (count > INT32_MAX) return cudaErrorInvalidValue;  // int32 rows; the glue says so first (checks.h)
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
  DR_CUDA_TRY(cudaGetLastError());
  return sum_sorted_entries(sorted_keys.get(), sorted_rows.get(), values, count, channels, num_segments, out,
                            stream);
}

}  // namespace diffrender
