// CUDA emulation (see ../cuda_runtime.h): the CUB device-wide algorithms diffrender uses, on the
// CPU, with CUB's two-call protocol (a null temporary buffer asks for its size), its radix sort
// semantics (stable, only the bits [begin_bit, end_bit) compared, signed keys ordered as
// numbers), and its integer types: a running sum adds in its input's type, and the segmented sort
// counts in int, so a caller that would overflow them here overflows them on a GPU too.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../cuda_runtime.h"

namespace cub {
namespace emulation {

constexpr size_t kTempBytes = 64;

// True when this is the size query; an error when the given buffer is smaller than asked for.
inline bool size_query(void* temp, size_t& temp_bytes, cudaError_t& status) {
  status = cudaSuccess;
  if (!temp) {
    temp_bytes = kTempBytes;
    return true;
  }
  if (temp_bytes < kTempBytes) status = cudaErrorInvalidValue;
  return false;
}

template <typename Key>
uint64_t radix_bits(Key key, int begin_bit, int end_bit) {
  using Unsigned = std::make_unsigned_t<Key>;
  Unsigned bits = static_cast<Unsigned>(key);
  if (std::is_signed<Key>::value) bits ^= Unsigned(1) << (8 * sizeof(Key) - 1);  // CUB's twiddle
  uint64_t wide = static_cast<uint64_t>(bits) >> begin_bit;
  const int width = end_bit - begin_bit;
  return width >= 64 ? wide : wide & ((uint64_t(1) << width) - 1);
}

template <typename Key>
std::vector<int64_t> stable_radix_order(const Key* keys, int64_t begin, int64_t end, int begin_bit, int end_bit) {
  std::vector<int64_t> order(end - begin);
  std::iota(order.begin(), order.end(), begin);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return radix_bits(keys[a], begin_bit, end_bit) < radix_bits(keys[b], begin_bit, end_bit);
  });
  return order;
}

inline bool valid_bits(int begin_bit, int end_bit, size_t key_bytes) {
  return 0 <= begin_bit && begin_bit < end_bit && end_bit <= int(8 * key_bytes);
}

}  // namespace emulation

struct DeviceScan {
  template <typename In, typename Out, typename NumItems>
  static cudaError_t ExclusiveSum(void* temp, size_t& temp_bytes, In in, Out out, NumItems num_items,
                                  cudaStream_t = nullptr) {
    cudaError_t status;
    if (emulation::size_query(temp, temp_bytes, status) || status != cudaSuccess) return status;
    using Value = std::decay_t<decltype(*in)>;
    Value running = Value(0);
    for (int64_t i = 0; i < int64_t(num_items); ++i) {
      const Value value = in[i];  // read before writing: in and out may alias
      out[i] = running;
      running = static_cast<Value>(running + value);
    }
    return cudaSuccess;
  }
};

struct DeviceRadixSort {
  template <typename Key, typename Value, typename NumItems>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const Key* keys_in, Key* keys_out,
                               const Value* values_in, Value* values_out, NumItems num_items, int begin_bit = 0,
                               int end_bit = sizeof(Key) * 8, cudaStream_t = nullptr) {
    cudaError_t status;
    if (emulation::size_query(temp, temp_bytes, status) || status != cudaSuccess) return status;
    if (!emulation::valid_bits(begin_bit, end_bit, sizeof(Key))) return cudaErrorInvalidValue;
    const auto order = emulation::stable_radix_order(keys_in, 0, int64_t(num_items), begin_bit, end_bit);
    for (int64_t i = 0; i < int64_t(order.size()); ++i) {
      keys_out[i] = keys_in[order[i]];
      values_out[i] = values_in[order[i]];
    }
    return cudaSuccess;
  }
};

struct DeviceSegmentedRadixSort {
  template <typename Key, typename BeginOffsets, typename EndOffsets>
  static cudaError_t SortKeys(void* temp, size_t& temp_bytes, const Key* keys_in, Key* keys_out, int num_items,
                              int num_segments, BeginOffsets begin_offsets, EndOffsets end_offsets, int begin_bit = 0,
                              int end_bit = sizeof(Key) * 8, cudaStream_t = nullptr) {
    cudaError_t status;
    if (emulation::size_query(temp, temp_bytes, status) || status != cudaSuccess) return status;
    if (!emulation::valid_bits(begin_bit, end_bit, sizeof(Key))) return cudaErrorInvalidValue;
    for (int s = 0; s < num_segments; ++s) {
      const int64_t begin = begin_offsets[s], end = end_offsets[s];
      if (begin < 0 || end > int64_t(num_items)) return cudaErrorInvalidValue;
      if (end <= begin) continue;
      const auto order = emulation::stable_radix_order(keys_in, begin, end, begin_bit, end_bit);
      for (int64_t i = 0; i < end - begin; ++i) keys_out[begin + i] = keys_in[order[i]];
    }
    return cudaSuccess;
  }
};

}  // namespace cub
