// CUDA emulation for the tests: just enough of the CUDA runtime for diffrender's .cu files to
// compile as plain C++ and run on the CPU, so that CUDA kernels are exercised where no GPU is.
//
// Each thread block runs its threads as fibers on one OS thread, switching at __syncthreads, in
// an order the tests choose (forward, reverse or shuffled): code that depends on the order of its
// threads, blocks or atomics gives different bits under different schedules. Device allocations
// are filled with 0xFF bytes (NaN for floats, -1 for integers), so reads of memory no kernel wrote
// show up. Launches check their configuration as CUDA does and report it via cudaGetLastError.
// Memory is host memory: a "device pointer" is a CPU tensor's data pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables of the thread that runs now; the scheduler sets them at each switch.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}

template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

namespace cuda_emulation {

// The order in which threads of a block, and blocks of a grid, are run: 0 forward, 1 reverse,
// any other value seeds a shuffle.
void set_schedule(uint64_t schedule);
uint64_t schedule();

// Statistics of the launches since the last reset, for the tests to check that kernels ran.
struct Counters {
  int64_t launches = 0;
  int64_t blocks = 0;
  int64_t barriers = 0;
};
Counters& counters();

void set_error(cudaError_t error);
cudaError_t take_error();

struct LaunchConfig {
  dim3 grid, block;
};

inline LaunchConfig config(dim3 grid, dim3 block, size_t = 0, cudaStream_t = nullptr) { return {grid, block}; }

// Runs body() once per thread of the grid, or sets cudaErrorInvalidConfiguration where CUDA would
// refuse the configuration.
void run_grid(const LaunchConfig& config, const std::function<void()>& body);

void sync_threads();

// kernel<<<grid, block, shared, stream>>>(args...): the arguments are converted to the kernel's
// parameter types once, at launch, as CUDA copies them.
template <typename... Params, typename... Args>
void launch(const LaunchConfig& config, void (*kernel)(Params...), Args&&... args) {
  std::tuple<std::decay_t<Params>...> copied(std::forward<Args>(args)...);
  run_grid(config, [&] { std::apply(kernel, copied); });
}

}  // namespace cuda_emulation

inline void __syncthreads() { cuda_emulation::sync_threads(); }

template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;  // the blocks and threads of a launch run one at a time
  *address = old + value;
  return old;
}

inline cudaError_t cudaGetLastError() { return cuda_emulation::take_error(); }

inline const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

inline cudaError_t cudaMallocAsync(void** pointer, size_t bytes, cudaStream_t) {
  *pointer = std::malloc(bytes ? bytes : 1);
  if (!*pointer) return cudaErrorMemoryAllocation;
  std::memset(*pointer, 0xFF, bytes);  // uninitialised device memory: NaN floats, -1 integers
  return cudaSuccess;
}

inline cudaError_t cudaFreeAsync(void* pointer, cudaStream_t) {
  std::free(pointer);
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t) {
  if (bytes && !pointer) return cudaErrorInvalidValue;
  if (bytes) std::memset(pointer, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes && (!dst || !src)) return cudaErrorInvalidValue;
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
