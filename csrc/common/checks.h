// Argument validation for the torch-facing entry points: every shape, dtype and index is checked
// before a kernel dereferences a pointer.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/stack.h>
#include <c10/util/Exception.h>

namespace diffrender {

inline void check_float_tensor(const at::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dims, name, " must have ", dims, " dimensions, got shape ", t.sizes());
}

inline void check_same_device_dtype(const at::Tensor& a, const at::Tensor& b, const char* name_a,
                                    const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), name_a, " and ", name_b, " must be on the same device");
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), name_a, " and ", name_b,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

// Every element of the int64 tensor indices lies in [lowest, end). Both bounds come back from
// the tensor's device in one copy: each item() would wait for a GPU on its own.
inline void check_index_range(const at::Tensor& indices, int64_t lowest, int64_t end, const char* name) {
  if (indices.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(indices);
  const auto bounds = at::stack({lo, hi}).cpu();
  const int64_t min_index = bounds.data_ptr<int64_t>()[0], max_index = bounds.data_ptr<int64_t>()[1];
  TORCH_CHECK_INDEX(min_index >= lowest && max_index < end, name, " must lie in [", lowest, ", ", end,
                    "), got indices from ", min_index, " to ", max_index);
}

// triangles: [F,3] int64 with every index in [0, num_vertices).
inline void check_triangles(const at::Tensor& triangles, int64_t num_vertices) {
  TORCH_CHECK_TYPE(triangles.scalar_type() == at::kLong, "triangles must be int64, got ",
                   triangles.scalar_type());
  TORCH_CHECK_VALUE(triangles.dim() == 2 && triangles.size(1) == 3,
                    "triangles must have shape [F,3], got ", triangles.sizes());
  check_index_range(triangles, 0, num_vertices, "triangle indices");
}

// The CUDA backward passes sum their gradients with ordered_scatter_add (cuda_scratch.cuh), which
// numbers its rows (one per pixel and triangle corner, say) in int32.
inline void check_cuda_scatter_rows(int64_t rows, const char* op, const char* what) {
  TORCH_CHECK_VALUE(rows < (int64_t(1) << 31), op, " backward on CUDA sums at most 2^31 - 1 ", what, ", got ", rows,
                    ": back-propagate fewer or smaller images at a time");
}

inline void check_image_size(int64_t width, int64_t height) {
  TORCH_CHECK_VALUE(width > 0 && height > 0, "image size must be positive, got ", width, "x", height);
  TORCH_CHECK_VALUE(width <= 32768 && height <= 32768, "image size ", width, "x", height,
                    " exceeds the 32768 pixel limit per side");
}

}  // namespace diffrender
