"""Built-in shapes (diffrender.shapes) and mesh loading, saving and normals (diffrender.mesh)."""
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from conftest import reference_file
from diffrender.mesh import Mesh, MeshError, face_normals, load_mesh, normalize_unit, save_obj, vertex_normals
from diffrender.shapes import BUILTIN_SHAPES, builtin_shape, cube, icosphere, teapot


def as_trimesh(vertices: torch.Tensor, faces: torch.Tensor) -> trimesh.Trimesh:
    return trimesh.Trimesh(vertices.double().numpy(), faces.numpy(), process=False)


def assert_clean(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    """dtypes/shapes, no duplicate vertices, no degenerate or zero-area faces, all vertices used."""
    assert vertices.dtype == torch.float32 and vertices.ndim == 2 and vertices.shape[1] == 3
    assert faces.dtype == torch.int64 and faces.ndim == 2 and faces.shape[1] == 3
    assert len(torch.unique(torch.round(vertices * 1e5), dim=0)) == len(vertices)
    f = faces
    assert ((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])).all()
    cross = torch.linalg.cross(vertices[f[:, 1]] - vertices[f[:, 0]], vertices[f[:, 2]] - vertices[f[:, 0]])
    assert (cross.norm(dim=1) > 0).all()
    assert torch.equal(torch.unique(faces), torch.arange(len(vertices)))


def outward_fraction(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Area-weighted share of faces whose normal points away from the mesh centroid."""
    v = vertices.double()
    corners = v[faces]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    away = ((corners.mean(dim=1) - v.mean(dim=0)) * cross).sum(dim=1) > 0
    area = cross.norm(dim=1)
    return float(area[away].sum() / area.sum())


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_icosphere_counts_and_radius(level):
    vertices, faces = icosphere(level)
    assert vertices.shape == (10 * 4**level + 2, 3)
    assert faces.shape == (20 * 4**level, 3)
    torch.testing.assert_close(vertices.norm(dim=1), torch.ones(len(vertices)), atol=1e-6, rtol=0)
    assert_clean(vertices, faces)


def test_icosphere_radius_argument():
    vertices, _ = icosphere(2, radius=2.5)
    torch.testing.assert_close(vertices.norm(dim=1), torch.full((len(vertices),), 2.5), atol=1e-5, rtol=0)


def test_icosphere_high_subdivision_is_vectorised():
    start = time.perf_counter()
    vertices, faces = icosphere(7)
    elapsed = time.perf_counter() - start
    assert faces.shape == (20 * 4**7, 3) and vertices.shape == (10 * 4**7 + 2, 3)
    # Generous for a loaded CI machine; a per-face Python loop takes far longer.
    assert elapsed < 10.0, f"icosphere(7) took {elapsed:.1f}s"


@pytest.mark.parametrize("shape", ["sphere", "cube"])
def test_closed_shapes_are_watertight_with_positive_volume(shape):
    vertices, faces = BUILTIN_SHAPES[shape]()
    mesh = as_trimesh(vertices, faces)
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0


def test_icosphere_volume_approaches_ball():
    vertices, faces = icosphere(4)
    assert as_trimesh(vertices, faces).volume == pytest.approx(4 / 3 * math.pi, rel=0.01)


def test_cube_faces_are_ccw_outward():
    vertices, faces = cube(size=3.0)
    assert vertices.shape == (8, 3) and faces.shape == (12, 3)
    assert_clean(vertices, faces)
    torch.testing.assert_close(vertices.abs(), torch.full((8, 3), 1.5))
    normals = face_normals(vertices, faces)
    centroids = vertices[faces].mean(dim=1)
    assert ((normals * centroids).sum(dim=1) > 0).all()
    # Each face lies on one side of the cube: its normal is a unit axis.
    assert torch.allclose(normals.abs().amax(dim=1), torch.ones(12))
    assert as_trimesh(vertices, faces).volume == pytest.approx(27.0)


def test_teapot_triangle_count_and_cleanliness():
    vertices, faces = teapot()
    assert abs(len(faces) - 2464) <= 0.1 * 2464, len(faces)
    assert_clean(vertices, faces)
    # Finer resolutions keep the same structure: 64 n^2 triangles minus 8 n at the two poles.
    assert len(teapot(resolution=4)[1]) == 64 * 16 - 8 * 4


def test_teapot_is_normalised():
    vertices, _ = teapot()
    lo, hi = vertices.amin(dim=0), vertices.amax(dim=0)
    torch.testing.assert_close(lo + hi, torch.zeros(3), atol=1e-5, rtol=0)
    assert (hi - lo).max().item() == pytest.approx(2.0, abs=1e-5)
    longest = int((hi - lo).argmax())
    assert lo[longest].item() == pytest.approx(-1.0, abs=1e-5)
    assert hi[longest].item() == pytest.approx(1.0, abs=1e-5)


def test_teapot_is_y_up_with_spout_towards_plus_x():
    vertices, _ = teapot()
    extents = vertices.amax(dim=0) - vertices.amin(dim=0)
    assert int(extents.argmax()) == 0  # spout-to-handle is the longest span
    # The lid knob sits on the pot's vertical axis, straight above the bottom pole.
    bottom = vertices[vertices[:, 1].argmin()]
    top = vertices[vertices[:, 1].argmax()]
    torch.testing.assert_close(top[[0, 2]], bottom[[0, 2]], atol=0.02, rtol=0)
    # The spout tip is the rightmost point and rises above the body's middle.
    assert vertices[vertices[:, 0].argmax(), 1] > 0.2


def test_teapot_orientation_matches_seed_reference():
    reference = trimesh.load(reference_file("seed", "teapot.obj"), force="mesh", process=False)
    ref_extents = reference.extents / reference.extents.max()
    vertices, _ = teapot()
    extents = (vertices.amax(dim=0) - vertices.amin(dim=0)).double().numpy()
    np.testing.assert_allclose(extents / extents.max(), ref_extents, atol=0.05)


def test_teapot_faces_point_outward():
    vertices, faces = teapot()
    mesh = as_trimesh(vertices, faces)
    assert mesh.is_winding_consistent
    assert mesh.volume > 0
    # The handle's inner side legitimately faces the body, hence "large majority".
    assert outward_fraction(vertices, faces) > 0.9


def test_builtin_shape_lookup():
    assert sorted(BUILTIN_SHAPES) == ["cube", "sphere", "teapot"]
    vertices, faces = BUILTIN_SHAPES["sphere"]()
    assert faces.shape == (1280, 3)
    vertices, _ = builtin_shape("sphere", radius=2.0)
    assert vertices.norm(dim=1).max().item() == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError) as info:
        builtin_shape("dodecahedron")
    assert str(info.value) == "unknown built-in shape 'dodecahedron'; choose one of: cube, sphere, teapot"


def test_normalize_unit():
    points = torch.tensor([[2.0, 3.0, -1.0], [6.0, 4.0, 0.0], [4.0, 3.5, -0.5]])
    out = normalize_unit(points)
    torch.testing.assert_close(out.amin(dim=0), torch.tensor([-1.0, -0.25, -0.25]))
    torch.testing.assert_close(out.amax(dim=0), torch.tensor([1.0, 0.25, 0.25]))


# --------------------------------------------------------------------------------------------
# Normals
# --------------------------------------------------------------------------------------------


def brute_force_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    summed = np.zeros_like(vertices)
    for a, b, c in faces:
        cross = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        for corner in (a, b, c):
            summed[corner] += cross
    return summed / np.linalg.norm(summed, axis=1, keepdims=True)


def bumpy_sphere(seed: int = 0) -> tuple:
    vertices, faces = icosphere(1)
    generator = torch.Generator().manual_seed(seed)
    scale = 1 + 0.3 * torch.rand(len(vertices), 1, generator=generator)
    return (vertices * scale).double(), faces


def test_vertex_normals_match_brute_force():
    vertices, faces = bumpy_sphere()
    expected = brute_force_vertex_normals(vertices.numpy(), faces.numpy())
    np.testing.assert_allclose(vertex_normals(vertices, faces).numpy(), expected, atol=1e-12)
    assert vertex_normals(vertices.float(), faces).dtype == torch.float32


def test_normals_are_batched():
    a, faces = bumpy_sphere(0)
    b, _ = bumpy_sphere(1)
    batch = torch.stack([a, b]).reshape(1, 2, -1, 3)
    batched = vertex_normals(batch, faces)
    assert batched.shape == batch.shape
    torch.testing.assert_close(batched[0, 1], vertex_normals(b, faces))
    torch.testing.assert_close(face_normals(batch, faces)[0, 0], face_normals(a, faces))


def test_face_normals_are_unit_and_right_handed():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 1]])
    torch.testing.assert_close(face_normals(vertices, faces), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))


@pytest.mark.parametrize("normals", [face_normals, vertex_normals], ids=["face", "vertex"])
@pytest.mark.parametrize("bad_index", [-1, 4])
def test_normals_refuse_face_indices_outside_the_vertices(normals, bad_index):
    # Indexing alone would take -1 as the last vertex and give a normal without a word.
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, bad_index]])
    low, high = min(0, bad_index), max(2, bad_index)
    with pytest.raises(IndexError, match=re.escape(f"face indices must lie in [0, 4), got indices from {low} to {high}")):
        normals(vertices, faces)


def test_normals_gradcheck():
    vertices = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.2, 1.0, 0.1], [0.1, 0.3, 1.0]], dtype=torch.float64
    ).requires_grad_()
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert torch.autograd.gradcheck(lambda v: vertex_normals(v, faces), (vertices,))
    assert torch.autograd.gradcheck(lambda v: face_normals(v, faces), (vertices,))


def test_mesh_container():
    vertices, faces = cube()
    mesh = Mesh(vertices=vertices, faces=faces, name="cube")
    assert (mesh.num_vertices, mesh.num_faces) == (8, 12)
    torch.testing.assert_close(mesh.vertex_normals(), vertex_normals(vertices, faces))
    given = torch.zeros(8, 3)
    assert mesh.to("cpu").name == "cube"
    assert Mesh(vertices=vertices, faces=faces, normals=given).vertex_normals() is given


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_obj_with_quads_and_no_normals(tmp_path):
    path = write(tmp_path / "quad.obj", "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    mesh = load_mesh(path)
    assert mesh.vertices.dtype == torch.float32 and mesh.faces.dtype == torch.int64
    assert mesh.faces.shape == (2, 3)
    assert mesh.normals is None and mesh.colors is None and mesh.uvs is None
    assert mesh.name == "quad"
    torch.testing.assert_close(mesh.vertex_normals(), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3))


def test_load_obj_uses_file_normals(tmp_path):
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nvn 0.6 0 0.8\nvn 0 0.6 0.8\nvn 0 0 -1\nf 1//1 2//2 3//3\n"
    mesh = load_mesh(write(tmp_path / "normals.obj", text))
    expected = torch.tensor([[0.6, 0.0, 0.8], [0.0, 0.6, 0.8], [0.0, 0.0, -1.0]])
    torch.testing.assert_close(mesh.normals, expected)
    torch.testing.assert_close(mesh.vertex_normals(), expected)


def test_load_obj_with_material_colour(tmp_path):
    write(tmp_path / "red.mtl", "newmtl red\nKd 1 0 0\n")
    path = write(tmp_path / "red.obj", "mtllib red.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nusemtl red\nf 1 2 3\n")
    mesh = load_mesh(path)
    torch.testing.assert_close(mesh.colors, torch.tensor([[1.0, 0.0, 0.0]]).expand(3, 3))


def test_load_ply_with_vertex_colours(tmp_path):
    vertices, faces = cube()
    colors = np.tile(np.array([[255, 0, 0, 255], [0, 255, 0, 255]], dtype=np.uint8), (4, 1))
    source = trimesh.Trimesh(vertices.numpy(), faces.numpy(), vertex_colors=colors, process=False)
    path = tmp_path / "colored.ply"
    source.export(path)
    mesh = load_mesh(path)
    assert mesh.faces.shape == (12, 3)
    torch.testing.assert_close(mesh.colors, torch.from_numpy(colors[:, :3] / 255.0).float())


def test_load_stl(tmp_path):
    path = tmp_path / "box.stl"
    trimesh.creation.box().export(path)
    mesh = load_mesh(path)
    assert mesh.faces.shape == (12, 3)
    assert as_trimesh(mesh.vertices, mesh.faces).area == pytest.approx(6.0)


@pytest.mark.parametrize("name", ["cube", "sphere", "teapot"])
def test_load_builtin_name(name):
    mesh = load_mesh(name)
    vertices, faces = BUILTIN_SHAPES[name]()
    assert torch.equal(mesh.vertices, vertices) and torch.equal(mesh.faces, faces)
    assert mesh.name == name


def truncated_binary(tmp_path: Path, suffix: str) -> Path:
    full = tmp_path / f"full{suffix}"
    trimesh.creation.box().export(full)
    data = full.read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "missing": lambda d: d / "missing.obj",
    "prose_obj": lambda d: write(d / "prose.obj", "this is a shopping list, not a mesh\n"),
    "prose_txt": lambda d: write(d / "prose.txt", "this is a shopping list, not a mesh\n"),
    "garbage_ply": lambda d: write(d / "garbage.ply", "hello, not a ply\n"),
    "truncated_stl": lambda d: truncated_binary(d, ".stl"),
    "truncated_glb": lambda d: truncated_binary(d, ".glb"),
    "zero_faces": lambda d: write(d / "points.obj", "v 0 0 0\nv 1 0 0\nv 1 1 0\n"),
    "nan_vertex": lambda d: write(d / "nan.obj", "v 0 0 nan\nv 1 0 0\nv 1 1 0\nf 1 2 3\n"),
    "index_out_of_range": lambda d: write(d / "range.obj", "v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 12\n"),
    "relative_index_out_of_range": lambda d: write(d / "relative.obj", "v 0 0 0\nv 1 0 0\nf -1 -2 -3\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_load_bad_input_raises_one_line_mesh_error(tmp_path, case):
    path = BAD_INPUTS[case](tmp_path)
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message
    expected_words = {
        "missing": "not found",
        "zero_faces": "no faces",
        "nan_vertex": "non-finite",
        "index_out_of_range": "out of range (max index 12, but only 3 vertices)",
        "relative_index_out_of_range": "out of range",
    }
    assert expected_words.get(case, "") in message


def test_mesh_error_is_value_error():
    assert issubclass(MeshError, ValueError)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def test_save_obj_round_trip_with_colours(tmp_path):
    vertices, faces = icosphere(1)
    colors = (vertices + 1) / 2
    path = tmp_path / "sphere.obj"
    save_obj(path, vertices, faces, colors=colors)
    loaded = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_allclose(loaded.vertices, vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, faces.numpy())
    np.testing.assert_allclose(loaded.visual.vertex_colors[:, :3] / 255.0, colors.numpy(), atol=1 / 255)
    mesh = load_mesh(path)
    # trimesh stores vertex colours as 8-bit.
    torch.testing.assert_close(mesh.colors, colors, atol=1 / 255, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["sphere.obj"]


def test_save_obj_without_colours_overwrites(tmp_path):
    path = write(tmp_path / "out.obj", "old contents\n")
    vertices, faces = cube()
    save_obj(str(path), vertices, faces)
    assert path.read_text().splitlines()[0].count(" ") == 3  # "v x y z"
    assert torch.equal(load_mesh(path).faces, faces)


def test_save_obj_into_missing_folder_leaves_nothing(tmp_path):
    target = tmp_path / "no_such_dir" / "out.obj"
    vertices, faces = cube()
    with pytest.raises(MeshError) as info:
        save_obj(target, vertices, faces)
    assert "out.obj" in str(info.value) and "\n" not in str(info.value)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = write(tmp_path / "keep.obj", "previous\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savetxt", disk_full)
    vertices, faces = cube()
    with pytest.raises(MeshError, match="No space left"):
        save_obj(path, vertices, faces)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.obj"]
