// Device dispatch for the torch-facing ops: CPU always; CUDA when built WITH_CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#if defined(WITH_CUDA) && defined(DIFFRENDER_CUDA_EMULATION)
#include <cuda_runtime.h>
#elif defined(WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace diffrender {

#if defined(WITH_CUDA) && defined(DIFFRENDER_CUDA_EMULATION)
// The tests' CUDA emulation (tests/cuda_emulation): the CUDA kernels run on CPU tensors, whose
// data pointers stand for device memory.
inline bool on_cuda(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": the CUDA emulation takes CPU tensors, got ", t.device());
  return true;
}

struct CudaDeviceGuard {
  explicit CudaDeviceGuard(const c10::Device&) {}
};

inline cudaStream_t current_stream() { return nullptr; }
#else
// True for CUDA tensors (in a CUDA build), false for CPU ones; any other device is an error.
inline bool on_cuda(const at::Tensor& t, const char* op) {
  if (t.device().is_cpu()) return false;
#ifdef WITH_CUDA
  if (t.device().is_cuda()) return true;
  TORCH_CHECK(false, op, ": unsupported device ", t.device());
#else
  TORCH_CHECK(false, op, ": tensors on ", t.device(), " need a CUDA build of diffrender (this one is CPU-only)");
#endif
  return false;
}

#ifdef WITH_CUDA
using CudaDeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }
#endif
#endif

#ifdef WITH_CUDA
inline void check_cuda(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(status));
}
#endif

}  // namespace diffrender
