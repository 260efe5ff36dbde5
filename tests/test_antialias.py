"""Analytic antialiasing (issue 8): a dense PyTorch reference, a 16×16 supersampled ground truth
and its finite differences, silhouette-only behaviour, determinism, the render/CLI plumbing, fits
that need silhouette gradients, and CUDA parity."""
import math

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, read_png, run_cli
from conftest import reference_file, same_bits_for_one_and_two_threads
from diffrender import antialias as aa
from diffrender import barycentric, camera, shapes
from diffrender._ext import _C
from diffrender.losses import MeshTopology, edge_length, hard_iou, uniform_laplacian
from diffrender.mesh import vertex_normals
from diffrender.renderers import BarycentricRenderer
from diffrender.shading import Material, PointLights
from tf_scenes import cube, load_png

# --- a dense PyTorch reference of the same method ----------------------------------------------

def antialias_reference(color, ids, clip, triangles, neighbors, bary, z):
    """Every pair of neighbouring pixels at once, with torch ops (differentiable in color and clip)."""
    batch, height, width, _ = color.shape
    covered = bary.sum(-1) >= 0.5
    out = color.clone()
    rows = torch.arange(height).view(1, height, 1).expand(batch, height, width)
    cols = torch.arange(width).view(1, 1, width).expand(batch, height, width)
    gather = lambda t, e: t.gather(-1, e.unsqueeze(-1)).squeeze(-1)  # noqa: E731

    def orient(a, b, c):  # which way round (a, b, c) is seen from the eye
        return torch.linalg.det(torch.stack([a[..., [0, 1, 3]], b[..., [0, 1, 3]], c[..., [0, 1, 3]]], -1))

    for vertical in (False, True):
        def split(t):
            return (t[:, :-1], t[:, 1:]) if vertical else (t[:, :, :-1], t[:, :, 1:])
        (id0, id1), (c0, c1), (z0, z1) = split(ids), split(covered), split(z)
        (x0, x1), (y0, y1) = split(cols), split(rows)
        pending = (c0 | c1) & ~(c0 & c1 & (id0 == id1))
        front1 = c1 & (~c0 | (z1 < z0))
        tri = torch.where(front1, id1, id0)
        fx, fy = torch.where(front1, x1, x0), torch.where(front1, y1, y0)
        b = torch.arange(batch).view(batch, 1, 1).expand_as(tri)
        direction = torch.where(front1, -1.0, 1.0).to(color.dtype)
        entry = torch.full_like(tri, -1)
        alpha = torch.zeros_like(direction)
        for _ in range(16):  # walk across interior edges to the silhouette
            corners = triangles[tri]
            verts = clip[b.unsqueeze(-1), corners]  # [..., 3, 4]
            pending = pending & (verts[..., 3] > 0).all(-1)
            px = (verts[..., 0] / verts[..., 3] + 1) * (width / 2) - 0.5 - fx.unsqueeze(-1)
            py = (verts[..., 1] / verts[..., 3] + 1) * (height / 2) - 0.5 - fy.unsqueeze(-1)
            u, v = (py, px) if vertical else (px, py)
            best = torch.zeros_like(direction)
            edge = torch.full_like(tri, -1)
            for k in range(3):
                k1 = (k + 1) % 3
                crosses = ((v[..., k] < 0) != (v[..., k1] < 0)) & (entry != k)
                crossing = (u[..., k] * v[..., k1] - u[..., k1] * v[..., k]) / (v[..., k1] - v[..., k])
                better = crosses & ((edge < 0) | (direction * crossing > best))
                best = torch.where(better, direction * crossing, best)
                edge = torch.where(better, torch.full_like(edge, k), edge)
            pending = pending & (edge >= 0) & (best < 1 + 1 / 16)
            edge = edge.clamp_min(0)
            e1, e2 = (edge + 1) % 3, (edge + 2) % 3
            va, vb = gather(corners, edge), gather(corners, e1)
            nxt = neighbors[tri, edge]
            n_corners = triangles[nxt.clamp_min(0)]
            third = (n_corners != va.unsqueeze(-1)) & (n_corners != vb.unsqueeze(-1))
            o_corner = third.long().argmax(-1)
            o = gather(n_corners, o_corner)
            has_other = (nxt >= 0) & third.any(-1)
            own = orient(clip[b, va], clip[b, vb], clip[b, gather(corners, e2)])
            other = orient(clip[b, va], clip[b, vb], clip[b, o])
            interior = has_other & (((own > 0) & (other < 0)) | ((own < 0) & (other > 0)))
            steep = (gather(u, e1) - gather(u, edge)).abs() <= (gather(v, e1) - gather(v, edge)).abs()
            done = pending & ~interior
            blend = done & steep & (best > -1 / 16)
            alpha = torch.where(blend, direction * (0.5 - best.clamp(0, 1)), alpha)
            pending = pending & interior
            tri = torch.where(pending, nxt, tri)
            entry = torch.where(pending, (o_corner + 1) % 3, entry)
        alpha = alpha.unsqueeze(-1)
        delta = alpha * (split(color)[1] - split(color)[0])
        to0 = torch.where(alpha > 0, delta, torch.zeros_like(delta))
        to1 = torch.where(alpha < 0, delta, torch.zeros_like(delta))
        pad0 = (0, 0, 0, 0, 0, 1) if vertical else (0, 0, 0, 1)
        pad1 = (0, 0, 0, 0, 1, 0) if vertical else (0, 0, 1, 0)
        out = out + torch.nn.functional.pad(to0, pad0) + torch.nn.functional.pad(to1, pad1)
    return out


# --- scenes ------------------------------------------------------------------------------------

def random_triangles(seed, batch=2, count=4, dtype=torch.float64):
    """Large separate triangles at random depths, all in front of the eye."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(batch, 3 * count, 4, generator=g, dtype=dtype) * 1.8 - 0.9
    clip[..., 2] = clip[..., 2] * 0.8
    clip[..., 3] = torch.rand(batch, 3 * count, generator=g, dtype=dtype) * 0.6 + 0.7
    clip[..., :2] *= clip[..., 3:]
    return clip, torch.arange(3 * count).view(count, 3)


def flat_colors(ids, bary, face_colors):
    """[B,H,W,C+1]: each face's colour where covered, with coverage as the last channel."""
    mask = barycentric.coverage(bary)
    return torch.cat([face_colors[ids] * mask, mask], dim=-1)


def supersampled(clip, triangles, face_colors, width, height, factor=16):
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, width * factor, height * factor)
    fine = flat_colors(ids, bary, face_colors)
    pooled = torch.nn.functional.avg_pool2d(fine.permute(0, 3, 1, 2), factor)
    spread = -torch.nn.functional.max_pool2d(-fine.permute(0, 3, 1, 2), factor)
    edge = (torch.nn.functional.max_pool2d(fine.permute(0, 3, 1, 2), factor) - spread).amax(1) > 0
    return pooled.permute(0, 2, 3, 1), edge


def aa_flat(clip, triangles, face_colors, width, height):
    """(antialiased, aliased) flat-coloured renders."""
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, width, height)
    image = flat_colors(ids, bary.detach(), face_colors)
    return aa.antialias(image, ids, clip, triangles, barycentrics=bary, z_buffer=z), image


# --- the reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_backward_match_the_dense_reference(seed):
    clip, triangles = random_triangles(seed)
    g = torch.Generator().manual_seed(seed)
    face_colors = torch.rand(triangles.shape[0], 3, generator=g, dtype=torch.float64)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 29, 23)
    color = flat_colors(ids, bary, face_colors) + 0.1 * torch.rand(2, 23, 29, 4, generator=g, dtype=torch.float64)
    neighbors = aa.edge_topology(triangles).neighbors
    weights = torch.randn(color.shape, generator=g, dtype=torch.float64)

    leaves = [color.clone().requires_grad_(True), clip.clone().requires_grad_(True)]
    out = aa.antialias(leaves[0], ids, leaves[1], triangles, barycentrics=bary, z_buffer=z)
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    ref_leaves = [color.clone().requires_grad_(True), clip.clone().requires_grad_(True)]
    ref = antialias_reference(ref_leaves[0], ids, ref_leaves[1], triangles, neighbors, bary, z)
    ref_grads = torch.autograd.grad((ref * weights).sum(), ref_leaves)

    assert (out - color).abs().amax() > 0.05, "the scene has silhouettes to blend"
    assert torch.allclose(out, ref, atol=1e-12)
    assert grads[1].abs().amax() > 0
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine, theirs, atol=1e-10)
    assert float(grads[1][..., 2].abs().max()) == 0.0, "clip z gets no gradient"
    # Without barycentrics and depth, coverage and depth are replayed from the ids: same result.
    assert torch.equal(aa.antialias(color, ids, clip, triangles), out.detach())


@pytest.mark.parametrize("shape", ["sphere", "teapot"])
def test_meshes_with_interior_edges_match_the_dense_reference(shape):
    # Closed and open meshes: the search walks across interior edges to reach the silhouette.
    vertices, faces = shapes.icosphere(2) if shape == "sphere" else shapes.teapot(resolution=4)
    vertices = vertices.double()
    eyes = torch.tensor([[0.4, 0.9, 2.8], [-2.0, 1.5, -1.8]], dtype=torch.float64)
    matrices = camera.perspective(1.0, 45.0, 0.1, 10.0).double() @ camera.look_at(
        eyes, torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[0.0, 1.0, 0.0]] * 2, dtype=torch.float64))
    clip = camera.transform_homogeneous(matrices, vertices[None].expand(2, -1, -1))
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 40, 36)
    g = torch.Generator().manual_seed(0)
    color = flat_colors(ids, bary, torch.rand(faces.shape[0], 3, generator=g, dtype=torch.float64))
    weights = torch.randn(color.shape, generator=g, dtype=torch.float64)
    leaves = [clip.clone().requires_grad_(True) for _ in range(2)]
    out = aa.antialias(color, ids, leaves[0], faces, barycentrics=bary, z_buffer=z)
    ref = antialias_reference(color, ids, leaves[1], faces, aa.edge_topology(faces).neighbors, bary, z)
    assert torch.allclose(out, ref, atol=1e-12)
    grad, = torch.autograd.grad((out * weights).sum(), leaves[0])
    ref_grad, = torch.autograd.grad((ref * weights).sum(), leaves[1])
    assert (grad != 0).any(dim=-1).sum() > 20
    assert torch.allclose(grad, ref_grad, atol=1e-10)
    # Some silhouettes were found on another triangle than the front pixel's.
    code = _C.antialias_forward(color, ids, clip, faces, aa.edge_topology(faces).neighbors, bary, z)[2][..., 0]
    front_is_p1 = (code[..., :-1] & 4) != 0
    front_id = torch.where(front_is_p1, ids[..., 1:], ids[..., :-1])
    active = code[..., :-1] != 0
    assert ((code[..., :-1] >> 3) != front_id)[active].sum() > 5


def test_gradcheck_float64():
    clip, triangles = random_triangles(5, batch=1, count=2)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 10, 9)
    color = torch.rand(1, 9, 10, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    leaves = (color.clone().requires_grad_(True), clip.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda c, v: aa.antialias(c, ids, v, triangles, barycentrics=bary, z_buffer=z), leaves, eps=1e-7, atol=1e-6)


# --- against the supersampled ground truth -----------------------------------------------------

@pytest.mark.parametrize("seed", [3, 4])
def test_forward_is_closer_to_16x_supersampling_on_edge_pixels(seed):
    clip, triangles = random_triangles(seed, batch=2, count=3)
    face_colors = torch.rand(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    antialiased, aliased = aa_flat(clip, triangles, face_colors, 48, 40)
    reference, edge = supersampled(clip, triangles, face_colors, 48, 40)
    error_aa = (antialiased - reference).abs().mean(-1)[edge].mean()
    error_aliased = (aliased - reference).abs().mean(-1)[edge].mean()
    assert edge.sum() > 100
    assert error_aa < 0.7 * error_aliased, (float(error_aa), float(error_aliased))


def occlusion_scene(dtype=torch.float64):
    """A rotated cube (one colour) in front of a smaller, tilted quad (another colour)."""
    vertices, cube_faces, _ = cube(dtype)
    rotation = camera.euler_matrices(torch.tensor([[0.4, 0.6, 0.1]], dtype=dtype))[0, :3, :3]
    quad = torch.tensor([[-1.6, -2.0, -2.5], [2.0, -2.3, -2.0], [2.4, 1.9, -3.0], [-0.6, 1.5, -2.8]], dtype=dtype)
    vertices = torch.cat([(vertices * 0.8) @ rotation.T, quad])
    faces = torch.cat([cube_faces, torch.tensor([[8, 9, 10], [8, 10, 11]])])
    face_colors = torch.cat([torch.tensor([[0.9, 0.6, 0.2]] * 12), torch.tensor([[0.2, 0.4, 1.0]] * 2)]).to(dtype)
    eye = torch.tensor([[0.3, 0.4, 6.0]], dtype=dtype)
    matrices = camera.perspective(1.0, 40.0, 0.1, 20.0).to(dtype) @ camera.look_at(
        eye, torch.zeros(1, 3, dtype=dtype), torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype))
    return vertices, faces, face_colors, matrices


def silhouette_vertices(clip, faces):
    """Vertices of edges that are silhouettes in view 0: boundary edges, and edges whose two faces
    have their third vertices on the same side of the plane through the eye and the edge."""
    xyw = clip[0][:, [0, 1, 3]]
    owners = {}
    for face in faces.tolist():
        for k in range(3):
            a, b, c = face[k], face[(k + 1) % 3], face[(k + 2) % 3]
            owners.setdefault(tuple(sorted((a, b))), []).append(c)
    result = set()
    for (a, b), thirds in owners.items():
        sides = [float(torch.linalg.det(torch.stack([xyw[a], xyw[b], xyw[c]]))) for c in thirds]
        if len(sides) != 2 or sides[0] * sides[1] >= 0:
            result.update((a, b))
    return sorted(result)


def test_vertex_gradients_match_finite_differences_of_the_supersampled_render():
    vertices, faces, face_colors, matrices = occlusion_scene()
    size, factor = 32, 16
    weights = torch.stack(torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                                         torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij"), -1)
    weights = torch.cat([torch.sin(3 * weights[..., :1] + 1) * torch.cos(2 * weights[..., 1:] - 0.5),
                         weights[..., :1] * 0.7 - weights[..., 1:], torch.cos(4 * weights[..., 1:]),
                         0.5 + weights[..., :1] ** 2], dim=-1)[None]

    def clip_of(v):
        return camera.transform_homogeneous(matrices, v[None])

    leaf = vertices.clone().requires_grad_(True)
    image, _ = aa_flat(clip_of(leaf), faces, face_colors, size, size)
    grad, = torch.autograd.grad((image * weights).sum(), leaf)
    aliased = flat_colors(*barycentric.rasterize_triangles(clip_of(leaf), faces, size, size)[:2], face_colors)
    assert not aliased.requires_grad, "without antialiasing a flat-coloured image has no vertex gradient"

    on_silhouette = silhouette_vertices(clip_of(vertices), faces)
    assert 8 <= len(on_silhouette) < vertices.shape[0]
    step = 0.02  # about a third of a pixel: a few fine pixels of edge motion
    numeric = torch.zeros(len(on_silhouette), 3, dtype=torch.float64)
    for row, vertex in enumerate(on_silhouette):
        for axis in range(3):
            plus, minus = vertices.clone(), vertices.clone()
            plus[vertex, axis] += step
            minus[vertex, axis] -= step
            numeric[row, axis] = ((supersampled(clip_of(plus), faces, face_colors, size, size, factor)[0] -
                                   supersampled(clip_of(minus), faces, face_colors, size, size, factor)[0]) *
                                  weights).sum() / (2 * step)
    analytic = grad[on_silhouette]
    cosine = torch.nn.functional.cosine_similarity(analytic.reshape(-1), numeric.reshape(-1), dim=0)
    ratio = analytic.norm() / numeric.norm()
    large = numeric.abs() > 0.2 * numeric.abs().max()
    assert bool((analytic[large].sign() == numeric[large].sign()).all()), "the large components agree in sign"
    print(f"cosine {float(cosine):.4f}, |analytic|/|numeric| {float(ratio):.3f}")
    assert cosine >= 0.9, float(cosine)
    assert 0.5 < ratio < 2.0, float(ratio)
    # Vertices off the silhouette move nothing here (all their edges are interior).
    off = [v for v in range(vertices.shape[0]) if v not in on_silhouette]
    assert float(grad[off].abs().max()) == 0.0


# --- only silhouettes count --------------------------------------------------------------------

def sphere_render(size=48, antialias=True, dtype=torch.float32):
    vertices, faces = shapes.icosphere(2)
    vertices = vertices.to(dtype)[None]
    eye = torch.tensor([[0.5, 0.8, 3.2]], dtype=dtype)
    return barycentric.render(vertices, faces, vertex_normals(vertices, faces), torch.full_like(vertices, 0.8), eye,
                              torch.zeros(1, 3, dtype=dtype), torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype),
                              eye[:, None], torch.ones(1, 1, 3, dtype=dtype), size, size, antialias=antialias)


def next_to_background(alpha):
    """[B,H,W] bool: pixels that are background or have a background 4-neighbour."""
    background = alpha < 0.5
    near = background.clone()
    near[:, 1:] |= background[:, :-1]
    near[:, :-1] |= background[:, 1:]
    near[:, :, 1:] |= background[:, :, :-1]
    near[:, :, :-1] |= background[:, :, 1:]
    return near


def test_interior_edges_of_a_smooth_surface_neither_blend_nor_get_gradients():
    plain, smooth = sphere_render(antialias=False), sphere_render(antialias=True)
    changed = (plain - smooth).abs().amax(-1) > 0
    assert changed.sum() > 50
    assert not (changed & ~next_to_background(plain[..., 3])).any(), "only the outline changes"
    # Gradients through the antialiasing alone reach only the vertices of silhouette edges.
    vertices, faces = shapes.icosphere(2)
    matrices = camera.perspective(1.0, 40.0, 0.1, 10.0) @ camera.look_at(
        torch.tensor([[0.5, 0.8, 3.2]]), torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))
    clip = camera.transform_homogeneous(matrices, vertices[None]).detach().requires_grad_(True)
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 48, 48)
    color = flat_colors(ids, bary.detach(), torch.rand(faces.shape[0], 3))  # interior edges between colours too
    out = aa.antialias(color, ids, clip, faces, barycentrics=bary, z_buffer=z)
    grad, = torch.autograd.grad((out * torch.randn(out.shape)).sum(), clip)
    moved = grad.abs().sum(-1)[0] > 0
    on_silhouette = torch.zeros_like(moved)
    on_silhouette[silhouette_vertices(clip.detach(), faces)] = True
    assert moved.sum() > 10
    assert not (moved & ~on_silhouette).any()


@pytest.mark.parametrize("level", [2, 4])
def test_finely_tessellated_outlines_are_found_across_interior_edges(level):
    # Next to a smooth outline the visible triangles are thin slivers, so the pixel centre on the
    # inside usually lies a few triangles in from the silhouette edge; following the surface
    # across interior edges still finds it for most outline pairs.
    vertices, faces = shapes.icosphere(level)
    matrices = camera.perspective(1.0, 40.0, 0.1, 10.0) @ camera.look_at(
        torch.tensor([[0.5, 0.8, 3.2]]), torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))
    clip = camera.transform_homogeneous(matrices, vertices[None])
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 64, 64)
    covered = bary.sum(-1) > 0.5
    _, pair_alpha, _ = _C.antialias_forward(covered[..., None].float(), ids, clip, faces,
                                            aa.edge_topology(faces).neighbors, bary, z)
    outline = int((covered[:, :, :-1] != covered[:, :, 1:]).sum() + (covered[:, :-1] != covered[:, 1:]).sum())
    assert int((pair_alpha != 0).sum()) > 0.6 * outline


@pytest.mark.parametrize("second", [[0, 2, 3], [0, 3, 2]])
def test_the_diagonal_of_a_flat_quad_is_not_an_edge_for_either_winding(second):
    clip = torch.tensor([[[-0.7, -0.6, 0.1, 1.0], [0.6, -0.7, 0.2, 1.0], [0.7, 0.5, 0.3, 1.0], [-0.5, 0.7, 0.2, 1.0]]],
                        dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], second])
    assert aa.edge_topology(faces).neighbors.ge(0).sum() == 2, "the diagonal is shared"
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 32, 32)
    color = flat_colors(ids, bary, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))
    out = aa.antialias(color, ids, clip, faces, barycentrics=bary, z_buffer=z)
    changed = (out - color).abs().amax(-1) > 0
    assert changed.sum() > 20
    assert not (changed & ~next_to_background(color[..., 3])).any()


def test_boundary_edges_of_an_open_mesh_and_occlusion_boundaries_blend():
    # A small triangle in front of a large one: its edges are boundaries, over the other surface.
    clip = torch.tensor([[[-0.9, -0.9, 0.5, 1.0], [0.9, -0.8, 0.5, 1.0], [0.0, 0.9, 0.5, 1.0],
                          [-0.3, -0.3, -0.2, 1.0], [0.35, -0.25, -0.2, 1.0], [0.05, 0.4, -0.2, 1.0]]],
                        dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 40, 40)
    color = flat_colors(ids, bary, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
    out = aa.antialias(color, ids, clip, faces, barycentrics=bary, z_buffer=z)
    changed = (out - color).abs().amax(-1) > 0
    covered = bary.sum(-1) > 0.5
    front = ((ids == 1) & covered).double()
    outline = next_to_background(front) & next_to_background(1 - front)  # both sides of its edge
    assert (changed & outline & covered).sum() > 20, "the front triangle's outline blends with the surface behind"
    assert (changed & ~covered).sum() > 20, "the back triangle's outline blends with the background"
    purple = out[..., 0].gt(0.05) & out[..., 2].gt(0.05)
    assert purple.sum() > 20, "red over blue mixes at the occlusion boundary"


def test_triangles_reaching_behind_the_eye_are_left_alone():
    clip = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.53, -0.5, 0.0, 1.0], [0.0, -1.0, -0.5, -1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    leaf = clip.clone().requires_grad_(True)
    ids, bary, z = barycentric.rasterize_triangles(leaf, faces, 32, 32)
    color = flat_colors(ids, bary.detach(), torch.ones(1, 3))
    assert color[..., 3].sum() > 0
    out = aa.antialias(color, ids, leaf, faces, barycentrics=bary, z_buffer=z)
    assert torch.equal(out, color)
    grad, = torch.autograd.grad(out.sum(), leaf)
    assert torch.isfinite(grad).all()


# --- edge topology -----------------------------------------------------------------------------

def test_topology_of_a_closed_mesh_names_each_neighbour():
    _, faces, _ = cube()
    neighbors = aa.EdgeTopology.from_faces(faces).neighbors
    assert bool((neighbors >= 0).all())
    for f, face in enumerate(faces.tolist()):
        for k in range(3):
            a, b, n = face[k], face[(k + 1) % 3], int(neighbors[f, k])
            assert n != f and {a, b} <= set(faces[n].tolist())


def test_topology_of_open_non_manifold_and_degenerate_faces():
    assert aa.EdgeTopology.from_faces(torch.tensor([[0, 1, 2]])).neighbors.tolist() == [[-1, -1, -1]]
    fan = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5], [6, 6, 2]])
    neighbors = aa.EdgeTopology.from_faces(fan).neighbors
    assert neighbors[0, 0] == -1 and neighbors[1, 0] == -1 and neighbors[2, 0] == -1, "three faces on one edge"
    assert neighbors[0, 1] == 3 and neighbors[3, 0] == 0, "edge (1,2) is shared by faces 0 and 3"
    assert (neighbors[4] == -1).all(), "degenerate edges match nothing"
    assert aa.EdgeTopology.from_faces(torch.zeros(0, 3, dtype=torch.int64)).neighbors.shape == (0, 3)


def test_topology_is_cached_by_content():
    aa.clear_topology_cache()
    faces = shapes.icosphere(1)[1]
    first = aa.edge_topology(faces)
    assert aa.edge_topology(faces) is first
    assert aa.edge_topology(faces.clone()) is first, "equal faces in a new tensor"
    assert aa.edge_topology(faces.int()) is first, "int32 faces"
    edited = faces.clone()
    edited[0] = edited[0].flip(0)
    assert aa.edge_topology(edited) is not first
    for level in range(10):  # the cache stays small
        aa.edge_topology(torch.tensor([[0, 1, 2]]) + level)
    assert len(aa._cache) <= 8


# --- determinism, batches, sizes, errors -------------------------------------------------------

def teapot_batch(size=(96, 128), dtype=torch.float32):
    vertices, faces = shapes.teapot()
    vertices = vertices.to(dtype)[None].expand(2, -1, -1)
    eye = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, -2.0]], dtype=dtype)
    return dict(vertices=vertices, triangles=faces, normals=vertex_normals(vertices, faces),
                diffuse_colors=torch.full_like(vertices, 0.8), camera_position=eye,
                camera_lookat=torch.zeros(2, 3, dtype=dtype),
                camera_up=torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype).expand(2, 3),
                light_positions=eye[:, None], light_intensities=torch.ones(2, 1, 3, dtype=dtype),
                image_width=size[1], image_height=size[0])


def test_outputs_are_bit_identical_for_one_and_two_threads():
    scene = teapot_batch()
    weights = torch.randn(2, 96, 128, 4, generator=torch.Generator().manual_seed(0))

    def run():
        leaf = scene["vertices"].clone().requires_grad_(True)
        image = barycentric.render(**{**scene, "vertices": leaf}, antialias=True)
        return image, *torch.autograd.grad((image * weights).sum(), leaf)

    same_bits_for_one_and_two_threads(run)


def test_a_batch_equals_its_views_rendered_alone():
    scene = teapot_batch((40, 56))
    both = barycentric.render(**scene, antialias=True)
    for b in range(2):
        alone = {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and k != "triangles" else v) for k, v in scene.items()}
        assert torch.equal(barycentric.render(**alone, antialias=True)[0], both[b])


@pytest.mark.parametrize("height,width", [(1, 9), (9, 1), (1, 1), (5, 3), (17, 30)])
def test_any_image_size_matches_the_reference(height, width):
    clip, triangles = random_triangles(8, batch=1, count=3)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, width, height)
    color = torch.rand(1, height, width, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = aa.antialias(color, ids, clip, triangles, barycentrics=bary, z_buffer=z)
    ref = antialias_reference(color, ids, clip, triangles, aa.edge_topology(triangles).neighbors, bary, z)
    assert torch.allclose(out, ref, atol=1e-12)


def test_no_triangles_leave_the_image_unchanged():
    color = torch.rand(1, 5, 6, 3)
    faces = torch.zeros(0, 3, dtype=torch.int64)
    out = aa.antialias(color, torch.zeros(1, 5, 6, dtype=torch.int64), torch.rand(1, 4, 4), faces)
    assert torch.equal(out, color)


def test_bad_arguments_raise_clear_errors():
    clip, triangles = random_triangles(9, batch=1, count=2)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 8, 6)
    color = torch.rand(1, 6, 8, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[B,H,W,C\]"):
        aa.antialias(color[0], ids, clip, triangles)
    with pytest.raises(ValueError, match="triangle_ids"):
        aa.antialias(color, ids[:, :5], clip, triangles)
    with pytest.raises(IndexError, match=r"triangle_ids must lie in \[0, 2\), got indices from 5"):
        aa.antialias(color, ids + 5, clip, triangles)
    for bad, lowest in ((torch.full_like(triangles, 2), 2), (torch.full_like(triangles, -2), -2)):
        with pytest.raises(IndexError, match=rf"neighbors must lie in \[-1, 2\), got indices from {lowest}"):
            _C.antialias_forward(color, ids, clip, triangles, bad, None, None)
    with pytest.raises(ValueError, match="together"):
        aa.antialias(color, ids, clip, triangles, barycentrics=bary)
    with pytest.raises(TypeError, match="float32 or float64"):
        aa.antialias(color.half(), ids, clip, triangles)
    with pytest.raises(ValueError, match="topology"):
        aa.antialias(color, ids, clip, triangles, topology=aa.edge_topology(triangles[:1]))
    with pytest.raises(ValueError, match="batch"):
        aa.antialias(color.expand(2, -1, -1, -1), ids.expand(2, -1, -1), clip, triangles)


# --- render, renderer and CLI ------------------------------------------------------------------

def test_render_flag_smooths_the_outline_and_the_renderer_passes_it_on():
    plain, smooth = sphere_render(antialias=False), sphere_render(antialias=True)
    alpha = smooth[..., 3]
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 30, "fractional coverage along the outline"
    assert bool((alpha >= 0).all() and (alpha <= 1).all())
    vertices, faces = shapes.icosphere(2)
    cam = camera.Camera(eye=torch.tensor([[0.5, 0.8, 3.2]]), lookat=torch.zeros(1, 3),
                        up=torch.tensor([[0.0, 1.0, 0.0]]))
    lights = PointLights(positions=cam.eye[:, None], intensities=torch.ones(1, 1, 3))
    material = Material(ambient=torch.zeros(1, 3))
    for flag, expected in ((False, plain), (True, smooth)):
        colors = torch.full_like(vertices[None], 0.8)
        rgba = BarycentricRenderer(antialias=flag)(vertices[None], faces, colors, cam, lights, material, (48, 48))
        assert torch.allclose(rgba, expected, atol=1e-6)


def test_cli_antialias_flag(tmp_path):
    out, plain = tmp_path / "aa.png", tmp_path / "plain.png"
    assert run_cli("render", "sphere", "-o", out, "--size", "64", "--antialias").exit_code == 0
    assert run_cli("render", "sphere", "-o", plain, "--size", "64").exit_code == 0
    alpha, plain_alpha = read_png(out)[..., 3], read_png(plain)[..., 3]
    assert set(np.unique(plain_alpha)) <= {0, 255}
    assert ((alpha > 10) & (alpha < 245)).sum() > 30
    assert_one_line_error(run_cli("render", "sphere", "-o", out, "--renderer", "soft", "--antialias"), "--antialias")


# --- fits that need silhouette gradients (barycentric renderer + antialiasing) ------------------

@pytest.mark.slow
def test_seed_example4_teapot_camera_fit_converges():
    """The seed's example 4 ("doesn't converge with the barycentric-based renderer"): recover the
    eye (0,3,3) from (0,2,3), with the seed's optimiser (SGD lr 0.7, momentum 0.1, gradient norm
    clipped to 1) and L1 loss."""
    vertices, faces = shapes.teapot()
    vertices = vertices[None]
    normals = vertex_normals(vertices, faces)
    light, size = torch.tensor([[[0.0, 3.0, 0.0]]]), 96

    def render(eye, up, antialias):
        return barycentric.render(vertices, faces, normals, torch.ones_like(vertices), eye, torch.zeros(1, 3), up,
                                  light, torch.ones(1, 1, 3), size, size, antialias=antialias)

    target_eye = torch.tensor([[0.0, 3.0, 3.0]])
    with torch.no_grad():
        target = render(target_eye, torch.tensor([[0.0, math.cos(-math.pi / 4), math.sin(-math.pi / 4)]]), True)
    distances = {}
    for antialias in (True, False):
        eye = torch.tensor([[0.0, 2.0, 3.0]], requires_grad=True)
        optimizer = torch.optim.SGD([eye], lr=0.7, momentum=0.1)
        for _ in range(80):
            optimizer.zero_grad()
            (render(eye, torch.tensor([[0.0, 3.0, -2.0]]), antialias) - target).abs().mean().backward()
            torch.nn.utils.clip_grad_norm_([eye], 1.0)
            optimizer.step()
        distances[antialias] = float((eye.detach() - target_eye).norm())
    assert distances[True] < 0.08, distances
    assert distances[False] > 0.2, f"the plain barycentric renderer was expected to stall: {distances}"


def cube_symmetries():
    """The 24 rotations mapping the cube onto itself."""
    import itertools
    result = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3)
            for row, (col, sign) in enumerate(zip(perm, signs)):
                m[row, col] = sign
            if torch.det(m) > 0:
                result.append(m)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("offset", [(0.6, 0.3, -0.4), (-0.86, -0.6, -0.37), (0.75, -0.19, 0.67)])
def test_cube_rotates_from_large_perturbations(offset):
    """tf's cube scene at 128x96: euler angles start 47-58 degrees away from the target's
    (-20, 0, 60) rad; the fit must land on the target pose up to the cube's symmetries. (Without
    antialiasing the second start stalls about 11 degrees off.)"""
    vertices, triangles, normals = cube()
    eye = torch.tensor([[0.0, 0.0, 6.0]])

    def render(angles):
        rotation = camera.euler_matrices(angles)[:, :3, :3]
        return barycentric.render(vertices @ rotation.transpose(1, 2), triangles, normals @ rotation.transpose(1, 2),
                                  torch.ones(1, 8, 3), eye, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]),
                                  eye[:, None], torch.ones(1, 1, 3), 128, 96, antialias=True)

    def matrix(angles):
        return camera.euler_matrices(angles)[0, :3, :3].double()

    def angle_to_target(angles):
        relative = matrix(target_angles).T @ matrix(angles)  # a symmetry of the cube when the poses agree
        return min(math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(relative @ s.double())) - 1) / 2))))
                   for s in cube_symmetries())

    target_angles = torch.tensor([[-20.0, 0.0, 60.0]])
    with torch.no_grad():
        target = render(target_angles)
    angles = (target_angles + torch.tensor([offset])).requires_grad_(True)
    assert angle_to_target(angles.detach()) >= 30
    optimizer = torch.optim.Adam([angles], lr=0.03)
    for _ in range(80):
        optimizer.zero_grad()
        (render(angles) - target).abs().mean().backward()
        optimizer.step()
    assert angle_to_target(angles.detach()) < 2.0
    with torch.no_grad():
        assert float((render(angles) - target).abs().mean()) < 0.002


@pytest.mark.slow
def test_sphere_fits_the_cow_silhouettes():
    """Silhouette-only fit of an icosphere to the seed's four 96x96 cow silhouettes."""
    targets = torch.stack([torch.from_numpy(load_png(reference_file("seed", f"example7b_target{i}.png"))).float()
                           for i in range(1, 5)])[..., 3]
    eyes = torch.tensor([[0.0, 0.0, -3.0], [3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    up = torch.tensor([[0.0, 1.0, 0.0]]).expand(4, 3)
    template, faces = shapes.icosphere(3)
    topology = MeshTopology.from_faces(faces, template.shape[0])

    def alpha(vertices, antialias=True):
        batched = vertices[None].expand(4, -1, -1)
        return barycentric.render(batched, faces, batched, torch.ones_like(batched), eyes, torch.zeros(4, 3), up,
                                  eyes[:, None], torch.ones(4, 1, 3), 96, 96, fov_y=60.0, near_clip=0.1,
                                  antialias=antialias)[..., 3]

    offset = torch.zeros_like(template, requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        vertices = template + offset
        loss = (alpha(vertices) - targets).square().mean() + 0.01 * edge_length(vertices, topology) + \
            0.01 * uniform_laplacian(vertices, topology)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        iou = hard_iou(alpha(template + offset, antialias=False) > 0.5, targets > 0.5)
    assert float(iou.mean()) >= 0.9, iou


# --- CUDA parity (on a GPU, and in the CUDA emulation) -----------------------------------------

def antialias_grads(device, color, ids, clip, triangles, bary=None, z=None, seed=7):
    leaves = [color.to(device).clone().requires_grad_(True), clip.to(device).clone().requires_grad_(True)]
    extra = {} if bary is None else {"barycentrics": bary.to(device), "z_buffer": z.to(device)}
    out = aa.antialias(leaves[0], ids.to(device), leaves[1], triangles.to(device), **extra)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(device)
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    return out.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_raster", [True, False])
def test_cuda_matches_cpu(gpu, dtype, with_raster):
    scene = teapot_batch((72, 88), dtype)
    clip = camera.transform_homogeneous(
        camera.Camera(scene["camera_position"], scene["camera_lookat"], scene["camera_up"]).matrices(88 / 72),
        scene["vertices"])
    faces = scene["triangles"]
    ids, bary, z = barycentric.rasterize_triangles(clip, faces, 88, 72)
    color = torch.rand(2, 72, 88, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    extra = (bary, z) if with_raster else (None, None)
    cpu_out, cpu_grads = antialias_grads("cpu", color, ids, clip, faces, *extra)
    with gpu():
        gpu_out, gpu_grads = antialias_grads(gpu.device, color, ids, clip, faces, *extra)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(cpu_out, gpu_out, atol=tolerance)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=tolerance, atol=tolerance * 10)


def test_cuda_backward_is_deterministic_and_render_runs_on_cuda(gpu):
    clip, triangles = random_triangles(11, batch=2, count=6, dtype=torch.float32)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 128, 128)
    color = torch.rand(2, 128, 128, 3)
    runs = []
    for schedule in (0, 1, 2, 3):
        with gpu(schedule):
            runs.append(antialias_grads(gpu.device, color, ids, clip, triangles, bary, z)[1])
    assert all(torch.equal(a, b) for again in runs[1:] for a, b in zip(runs[0], again))
    scene = teapot_batch((48, 64))
    cpu = barycentric.render(**scene, antialias=True)
    with gpu():
        on_gpu = barycentric.render(**{k: v.to(gpu.device) if isinstance(v, torch.Tensor) else v
                                       for k, v in scene.items()}, antialias=True).cpu()
    assert (cpu - on_gpu).abs().gt(1e-3).float().mean() < 0.002
