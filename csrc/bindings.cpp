#include <torch/extension.h>

#include "barycentric/barycentric.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "diffrender compiled kernels (CPU; CUDA when built WITH_CUDA)";
  m.def("rasterize_triangles_forward", &diffrender::rasterize_triangles_forward,
        "tf_mesh_renderer rasterization: (triangle_ids, barycentrics, z_buffer)");
  m.def("rasterize_triangles_backward", &diffrender::rasterize_triangles_backward,
        "d(loss)/d(clip_vertices) through the perspective-correct barycentrics");
  m.def("with_cuda", [] {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("num_threads_used", [](int64_t work_items) {
    // Reports how many distinct threads at::parallel_for really ran: guards the -fopenmp trap.
    std::vector<int> seen(at::get_num_threads(), 0);
    at::parallel_for(0, work_items, 1, [&](int64_t, int64_t) { seen[at::get_thread_num()] = 1; });
    int count = 0;
    for (int s : seen) count += s;
    return count;
  });
}
