"""diffrender: differentiable triangle-mesh rendering on compiled CPU (and CUDA) kernels.

Two renderers share one camera, mesh and Phong shading model:

- ``diffrender.barycentric``: tf_mesh_renderer's z-buffer rasterizer with perspective-correct
  barycentrics (Genova et al. 2018);
- ``diffrender.soft``: SoftRas (Liu et al. 2019), with gradients at silhouettes.
"""
import torch  # noqa: F401  (the compiled extension needs torch loaded first)

__version__ = "0.1.0"
