// The one file with <torch/extension.h> (pybind11 and the whole C++ API: ~16 s of parsing per
// file here). The others include ATen's Tensor and the per-operator headers they call, which
// parse ten times faster, so a clean build stays quick.
#include <torch/extension.h>

#include "antialias/antialias.h"
#include "barycentric/barycentric.h"
#include "soft/soft.h"
#include "shading/pixel_shading.h"
#include "shading/shading.h"
#include "texture/texture.h"

#ifdef DIFFRENDER_CUDA_EMULATION
// The tests' emulated-CUDA build adds its controls (tests/cuda_emulation/runtime.cpp).
void bind_cuda_emulation(pybind11::module_& m);
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "diffrender compiled kernels (CPU; CUDA when built WITH_CUDA)";
  m.def("rasterize_triangles_forward", &diffrender::rasterize_triangles_forward,
        "tf_mesh_renderer rasterization: (triangle_ids, barycentrics, z_buffer)");
  m.def("rasterize_triangles_backward", &diffrender::rasterize_triangles_backward,
        "d(loss)/d(clip_vertices) through the perspective-correct barycentrics");
  m.def("interpolate_forward", &diffrender::interpolate_forward,
        "per-pixel attributes from triangle ids and barycentrics");
  m.def("interpolate_backward", &diffrender::interpolate_backward,
        "(d/d attributes, d/d barycentrics) of interpolate");
  m.def("antialias_forward", &diffrender::antialias_forward,
        "analytic silhouette antialiasing: (color, pair_alpha, pair_code)", py::arg("color"),
        py::arg("triangle_ids"), py::arg("clip_vertices"), py::arg("triangles"), py::arg("neighbors"),
        py::arg("barycentrics") = py::none(), py::arg("z_buffer") = py::none());
  m.def("antialias_backward", &diffrender::antialias_backward,
        "(d/d color, d/d clip_vertices) of antialias_forward");
  m.def("phong_shade_forward", &diffrender::phong_shade_forward, "Phong shading of [B,N] points");
  m.def("phong_shade_backward", &diffrender::phong_shade_backward, "gradients of phong_shade_forward");
  m.def("shade_pixels_forward", &diffrender::shade_pixels_forward,
        "deferred Phong shading of rasterized pixels: RGBA [B,H,W,4]");
  m.def("shade_pixels_backward", &diffrender::shade_pixels_backward, "gradients of shade_pixels_forward");
  m.def("soft_rasterize_forward", &diffrender::soft_rasterize_forward,
        "SoftRas soft rasterization: (image [B,H,W,C+1], aux [B,H,W,4], hard_ids)");
  m.def("soft_rasterize_backward", &diffrender::soft_rasterize_backward,
        "SoftRas gradients: (d/d screen_vertices, d/d attributes, d/d background)");
  m.def("soft_rasterize_textured_forward", &diffrender::soft_rasterize_textured_forward,
        "SoftRas soft rasterization with bilinear texturing: (image [B,H,W,C+1], aux [B,H,W,4], hard_ids)");
  m.def("soft_rasterize_textured_backward", &diffrender::soft_rasterize_textured_backward,
        "textured SoftRas gradients: (d/d screen_vertices, d/d attributes, d/d background, d/d texture)");
  m.def("texture_sample_forward", &diffrender::texture_sample_forward,
        "bilinear or trilinear texture sampling of a flat mip pyramid at [B,H,W,2] uvs", py::arg("levels"),
        py::arg("level_sizes"), py::arg("texture_batch"), py::arg("channels"), py::arg("uv"), py::arg("uv_da"),
        py::arg("filter"), py::arg("boundary"));
  m.def("texture_sample_backward", &diffrender::texture_sample_backward,
        "(d/d levels, d/d uv) of texture_sample_forward, each None unless wanted", py::arg("grad_out"),
        py::arg("levels"), py::arg("level_sizes"), py::arg("texture_batch"), py::arg("channels"), py::arg("uv"),
        py::arg("uv_da"), py::arg("filter"), py::arg("boundary"), py::arg("want_grad_levels") = true,
        py::arg("want_grad_uv") = true);
  m.def("with_cuda", [] {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  });
#ifdef DIFFRENDER_CUDA_EMULATION
  bind_cuda_emulation(m);
#endif
  m.def("num_threads_used", [](int64_t work_items) {
    // Reports how many distinct threads at::parallel_for really ran: guards the -fopenmp trap.
    std::vector<int> seen(at::get_num_threads(), 0);
    at::parallel_for(0, work_items, 1, [&](int64_t, int64_t) { seen[at::get_thread_num()] = 1; });
    int count = 0;
    for (int s : seen) count += s;
    return count;
  });
}
