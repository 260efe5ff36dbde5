"""Textured meshes (diffrender.mesh): UVs and textures on load, confinement of the files a mesh
names to its folder, and writing OBJ + MTL + PNG."""
import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from conftest import reference_file
from diffrender.images import to_uint8
from diffrender.mesh import MeshError, TextureWarning, load_mesh, save_textured_obj
from diffrender.shapes import icosphere

# A cube whose six quads each map onto the whole texture: every corner is on a UV seam.
CUBE_OBJ = """\
v -1 -1 -1
v 1 -1 -1
v 1 1 -1
v -1 1 -1
v -1 -1 1
v 1 -1 1
v 1 1 1
v -1 1 1
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl skin
f 1/1 4/2 3/3 2/4
f 5/1 6/2 7/3 8/4
f 1/1 2/2 6/3 5/4
f 2/1 3/2 7/3 6/4
f 3/1 4/2 8/3 7/4
f 4/1 1/2 5/3 8/4
"""

TRIANGLE_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl skin\nf 1/1 2/2 3/3\n"


def pixels(height: int = 3, width: int = 5, seed: int = 0) -> np.ndarray:
    """uint8 [height, width, 3]; non-square so a transposed image cannot pass."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def textured_obj(folder: Path, mtl_body: str, obj_body: str = TRIANGLE_OBJ, name: str = "mesh") -> Path:
    """``<name>.obj`` using material "skin" from ``<name>.mtl``, whose body is ``mtl_body``."""
    (folder / f"{name}.mtl").write_text(f"newmtl skin\n{mtl_body}")
    path = folder / f"{name}.obj"
    path.write_text(f"mtllib {name}.mtl\n{obj_body}")
    return path


def assert_one_line_naming(message: str, *names: str) -> None:
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_cow_loads_with_uvs_and_its_texture():
    image = iio.imread(reference_file("cow", "cow_texture.png"))
    mesh = load_mesh(reference_file("cow", "cow.obj"))
    assert mesh.uvs is not None and mesh.uvs.dtype == torch.float32
    assert mesh.uvs.shape == (mesh.num_vertices, 2)
    assert mesh.texture.dtype == torch.float32 and mesh.texture.shape == (*image.shape[:2], 3)
    torch.testing.assert_close(mesh.colors, torch.ones(mesh.num_vertices, 3))
    np.testing.assert_array_equal(to_uint8(mesh.texture), image[..., :3])


def test_vertices_are_split_at_uv_seams(tmp_path):
    iio.imwrite(tmp_path / "skin.png", pixels())
    mesh = load_mesh(textured_obj(tmp_path, "map_Kd skin.png\n", CUBE_OBJ))
    lines = [line.split() for line in CUBE_OBJ.splitlines()]
    positions = [tuple(map(float, words[1:])) for words in lines if words[0] == "v"]
    uvs = [tuple(map(float, words[1:])) for words in lines if words[0] == "vt"]
    file_pairs = {positions[int(v) - 1] + uvs[int(vt) - 1]
                  for words in lines if words[0] == "f" for v, vt in (corner.split("/") for corner in words[1:])}
    loaded_pairs = [tuple(row) for row in torch.cat([mesh.vertices, mesh.uvs], dim=1).tolist()]
    # One vertex per distinct (position, uv) pair: positions repeat, each vertex has one UV.
    assert mesh.num_vertices == len(file_pairs) > 8
    assert set(loaded_pairs) == file_pairs
    assert len(torch.unique(mesh.vertices, dim=0)) == 8
    assert mesh.num_faces == 12


def test_diffuse_colour_multiplies_the_texture(tmp_path):
    image = pixels()
    iio.imwrite(tmp_path / "skin.png", image)
    # The trailing comment is common in the wild (the cow has one) and must not hide the Kd.
    mesh = load_mesh(textured_obj(tmp_path, "Kd 0.5 0.25 1  # tint\nmap_Kd skin.png\n"))
    diffuse = torch.tensor([0.5, 0.25, 1.0])
    torch.testing.assert_close(mesh.texture, torch.from_numpy(image / 255.0).float() * diffuse)
    torch.testing.assert_close(mesh.colors, diffuse.expand(3, 3))


def test_texture_without_kd_is_used_as_is(tmp_path):
    image = pixels()
    iio.imwrite(tmp_path / "skin.png", image)
    mesh = load_mesh(textured_obj(tmp_path, "map_Kd skin.png\n"))
    np.testing.assert_array_equal(to_uint8(mesh.texture), image)
    torch.testing.assert_close(mesh.colors, torch.ones(3, 3))


def test_uvs_without_a_material_give_no_texture(tmp_path):
    path = tmp_path / "bare.obj"
    path.write_text(TRIANGLE_OBJ)
    mesh = load_mesh(path)
    assert mesh.texture is None and mesh.uvs is None and mesh.colors is None


@pytest.mark.parametrize("reference", ["-s 1 1 1 maps/skin.png", "maps/../maps/skin.png"], ids=["options", "dotdot"])
def test_texture_in_a_subfolder(tmp_path, reference):
    (tmp_path / "maps").mkdir()
    image = pixels()
    iio.imwrite(tmp_path / "maps" / "skin.png", image)
    mesh = load_mesh(textured_obj(tmp_path, f"map_Kd {reference}\n"))
    np.testing.assert_array_equal(to_uint8(mesh.texture), image)


def not_an_image(path: Path) -> None:
    path.write_bytes(b"these bytes are no picture at all")


def truncated_png(path: Path) -> None:
    iio.imwrite(path, pixels(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [None, not_an_image, truncated_png], ids=["missing", "not_an_image", "truncated"])
def test_unusable_texture_warns_and_falls_back_to_the_material_colour(tmp_path, damage):
    if damage is not None:
        damage(tmp_path / "skin.png")
    path = textured_obj(tmp_path, "Kd 0.2 0.4 0.6\nmap_Kd skin.png\n")
    with pytest.warns(TextureWarning) as caught:
        mesh = load_mesh(path)
    assert len(caught) == 1
    assert_one_line_naming(str(caught[0].message), "skin.png")
    assert mesh.texture is None and mesh.uvs is None
    torch.testing.assert_close(mesh.colors, torch.tensor([0.2, 0.4, 0.6]).expand(3, 3))


def test_missing_material_library_warns(tmp_path):
    path = tmp_path / "lonely.obj"
    path.write_text("mtllib gone.mtl\n" + TRIANGLE_OBJ)
    with pytest.warns(TextureWarning) as caught:
        mesh = load_mesh(path)
    assert_one_line_naming(str(caught[0].message), "gone.mtl", "lonely.obj")
    assert mesh.num_faces == 1 and mesh.texture is None


# --------------------------------------------------------------------------------------------
# Refusing files outside the mesh's folder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A readable MTL and texture beside, not inside, the mesh folder tmp_path/"mesh".

    Loading them would succeed (a red material with a texture), so only a refusal passes.
    """
    iio.imwrite(tmp_path / "secret.png", pixels())
    (tmp_path / "secret.mtl").write_text("newmtl skin\nKd 1 0 0\nmap_Kd secret.png\n")
    (tmp_path / "mesh").mkdir()
    return tmp_path


def mtllib_to(outside: Path, name: str) -> Path:
    path = outside / "mesh" / "mesh.obj"
    path.write_text(f"mtllib {name}\n{TRIANGLE_OBJ}")
    return path


def map_to(outside: Path, line: str) -> Path:
    return textured_obj(outside / "mesh", f"Kd 0 1 0\n{line}\n")


def symlinked_texture(outside: Path) -> Path:
    os.symlink(outside / "secret.png", outside / "mesh" / "inside.png")
    return map_to(outside, "map_Kd inside.png")


def symlinked_library(outside: Path) -> Path:
    os.symlink(outside / "secret.mtl", outside / "mesh" / "inside.mtl")
    return mtllib_to(outside, "inside.mtl")


ESCAPES = {
    "mtllib_absolute": (lambda d: mtllib_to(d, str(d / "secret.mtl")), "secret.mtl"),
    "mtllib_parent": (lambda d: mtllib_to(d, "../secret.mtl"), "../secret.mtl"),
    "mtllib_second_of_two": (lambda d: mtllib_to(d, "mine.mtl ../secret.mtl"), "../secret.mtl"),
    "map_kd_parent": (lambda d: map_to(d, "map_Kd ../secret.png"), "../secret.png"),
    "map_kd_absolute": (lambda d: map_to(d, f"map_Kd {d / 'secret.png'}"), "secret.png"),
    "map_kd_after_options": (lambda d: map_to(d, "map_Kd -o 0 0 0 ../secret.png"), "../secret.png"),
    "map_ks_parent": (lambda d: map_to(d, "map_Ks ../secret.png"), "../secret.png"),
    "bump_absolute": (lambda d: map_to(d, f"bump {d / 'secret.png'}"), "secret.png"),
    "symlinked_texture": (symlinked_texture, "inside.png"),
    "symlinked_library": (symlinked_library, "inside.mtl"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_references_outside_the_mesh_folder_are_refused(outside, case):
    make, reference = ESCAPES[case]
    path = make(outside)
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    assert_one_line_naming(str(info.value), reference, path.name)


def test_gltf_buffer_outside_the_mesh_folder_is_refused(tmp_path):
    folder = tmp_path / "mesh"
    folder.mkdir()
    trimesh.creation.box().export(folder / "box.gltf")
    header = json.loads((folder / "box.gltf").read_text())
    buffer = header["buffers"][0]["uri"]
    (folder / buffer).rename(tmp_path / buffer)
    header["buffers"][0]["uri"] = f"../{buffer}"
    (folder / "box.gltf").write_text(json.dumps(header))
    with pytest.raises(MeshError) as info:
        load_mesh(folder / "box.gltf")
    assert_one_line_naming(str(info.value), f"../{buffer}", "box.gltf")


def test_ply_texture_outside_the_mesh_folder_is_refused(outside):
    # trimesh catches every error while reading a PLY's texture, so this checks that the
    # refusal is not lost.
    path = outside / "mesh" / "mesh.ply"
    path.write_text(PLY_HEADER.replace("TextureFile skin.png", "TextureFile ../secret.png"))
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    assert_one_line_naming(str(info.value), "../secret.png", "mesh.ply")


# --------------------------------------------------------------------------------------------
# GLB and PLY
# --------------------------------------------------------------------------------------------


def textured_box(material: trimesh.visual.material.Material) -> trimesh.Trimesh:
    box = trimesh.creation.box()
    uvs = np.random.default_rng(1).random((len(box.vertices), 2))
    box.visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return box


def test_glb_with_embedded_texture_round_trip(tmp_path):
    image = pixels()
    factor = np.array([255, 128, 64, 255], dtype=np.uint8)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(image), baseColorFactor=factor)
    box = textured_box(material)
    box.export(tmp_path / "box.glb")
    mesh = load_mesh(tmp_path / "box.glb")
    diffuse = torch.from_numpy(factor[:3] / 255.0).float()
    torch.testing.assert_close(mesh.texture, torch.from_numpy(image / 255.0).float() * diffuse)
    torch.testing.assert_close(mesh.colors, diffuse.expand(mesh.num_vertices, 3))
    torch.testing.assert_close(mesh.vertices, torch.from_numpy(box.vertices).float())
    torch.testing.assert_close(mesh.uvs, torch.from_numpy(box.visual.uv).float())


def test_glb_scene_parts_are_placed_by_their_node_transforms(tmp_path):
    placed = trimesh.transformations.translation_matrix([5.0, 0.0, 0.0]) @ \
        trimesh.transformations.rotation_matrix(np.pi / 2, [0.0, 0.0, 1.0])
    moved, still = trimesh.creation.box(extents=[2.0, 1.0, 1.0]), trimesh.creation.icosahedron()
    scene = trimesh.Scene()
    scene.add_geometry(moved, transform=placed)
    scene.add_geometry(still)
    scene.export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert mesh.num_faces == len(moved.faces) + len(still.faces)
    expected = np.concatenate([trimesh.transform_points(moved.vertices, placed), still.vertices])
    # Each part's own vertex order is kept; compare as sets of rows.
    got = mesh.vertices.double().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-5)
    assert got[:, 0].max() == pytest.approx(5.5, abs=1e-5), "the 2-long box turned upright at x = 5"


PLY_HEADER = """\
ply
format ascii 1.0
comment TextureFile skin.png
element vertex 3
property float x
property float y
property float z
property float s
property float t
element face 1
property list uchar int vertex_indices
end_header
0 0 0 0 0
1 0 0 1 0
0 1 0 0 1
3 0 1 2
"""


def test_ply_with_texture(tmp_path):
    image = pixels()
    iio.imwrite(tmp_path / "skin.png", image)
    (tmp_path / "mesh.ply").write_text(PLY_HEADER)
    mesh = load_mesh(tmp_path / "mesh.ply")
    np.testing.assert_array_equal(to_uint8(mesh.texture), image)
    torch.testing.assert_close(mesh.uvs, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))


def test_ply_with_truncated_texture_warns(tmp_path):
    truncated_png(tmp_path / "skin.png")
    (tmp_path / "mesh.ply").write_text(PLY_HEADER)
    with pytest.warns(TextureWarning) as caught:
        mesh = load_mesh(tmp_path / "mesh.ply")
    assert_one_line_naming(str(caught[0].message), "mesh.ply")
    assert mesh.texture is None and mesh.num_faces == 1


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def textured_sphere():
    vertices, faces = icosphere(1)
    uvs = torch.from_numpy(np.random.default_rng(2).random((len(vertices), 2))).float()
    texture = torch.from_numpy(pixels(6, 9) / 255.0).float()
    return vertices, faces, uvs, texture


def test_save_textured_obj_writes_obj_mtl_and_png(tmp_path):
    vertices, faces, uvs, texture = textured_sphere()
    save_textured_obj(tmp_path / "fit.obj", vertices, faces, uvs, texture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.mtl", "fit.obj", "fit_texture.png"]
    lines = (tmp_path / "fit.obj").read_text().splitlines()
    assert lines[0] == "mtllib fit.mtl"
    assert "usemtl textured" in lines
    assert sum(line.startswith("vt ") for line in lines) == len(vertices)
    a, b, c = faces[0].tolist()
    assert f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" in lines
    assert (tmp_path / "fit.mtl").read_text().split("\n") == ["newmtl textured", "Kd 1 1 1",
                                                             "map_Kd fit_texture.png", ""]
    written = iio.imread(tmp_path / "fit_texture.png")
    assert written.dtype == np.uint8 and written.shape == (6, 9, 3)
    # Row 0 of the texture is the top row of the image.
    np.testing.assert_array_equal(written, to_uint8(texture))


def test_save_textured_obj_round_trips_through_load_mesh(tmp_path):
    vertices, faces, uvs, texture = textured_sphere()
    save_textured_obj(tmp_path / "fit.obj", vertices, faces, uvs, texture)
    mesh = load_mesh(tmp_path / "fit.obj")
    assert torch.equal(mesh.faces, faces)
    torch.testing.assert_close(mesh.vertices, vertices, atol=1e-7, rtol=0)
    torch.testing.assert_close(mesh.uvs, uvs, atol=1e-7, rtol=0)
    assert torch.equal(mesh.texture, texture)
    torch.testing.assert_close(mesh.colors, torch.ones(len(vertices), 3))


def test_save_textured_obj_round_trips_through_trimesh(tmp_path):
    vertices, faces, uvs, texture = textured_sphere()
    save_textured_obj(tmp_path / "fit.obj", vertices, faces, uvs, texture)
    loaded = trimesh.load(tmp_path / "fit.obj", force="mesh", process=False)
    # Compare corner by corner: trimesh may order vertices its own way.
    np.testing.assert_allclose(loaded.vertices[loaded.faces], vertices[faces].numpy(), atol=1e-7)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs[faces].numpy(), atol=1e-7)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.image.convert("RGB")), to_uint8(texture))


def test_saved_cow_reloads_identically(tmp_path):
    cow = load_mesh(reference_file("cow", "cow.obj"))
    save_textured_obj(tmp_path / "cow.obj", cow.vertices, cow.faces, cow.uvs, cow.texture)
    again = load_mesh(tmp_path / "cow.obj")
    assert torch.equal(again.faces, cow.faces)
    assert torch.equal(again.texture, cow.texture)
    torch.testing.assert_close(again.uvs, cow.uvs, atol=1e-7, rtol=0)
    torch.testing.assert_close(again.vertices, cow.vertices, atol=1e-7, rtol=0)


def test_failed_textured_save_keeps_the_previous_obj_and_no_temporary_files(tmp_path, monkeypatch):
    (tmp_path / "fit.obj").write_text("previous\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savetxt", disk_full)
    with pytest.raises(MeshError) as info:
        save_textured_obj(tmp_path / "fit.obj", *textured_sphere())
    assert_one_line_naming(str(info.value), "fit.obj", "No space left")
    assert (tmp_path / "fit.obj").read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.mtl", "fit.obj", "fit_texture.png"]


def test_save_textured_obj_into_missing_folder(tmp_path):
    with pytest.raises(MeshError) as info:
        save_textured_obj(tmp_path / "nowhere" / "fit.obj", *textured_sphere())
    assert_one_line_naming(str(info.value), "fit.obj", "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["uvs", "texture"])
def test_save_textured_obj_checks_shapes(tmp_path, bad):
    vertices, faces, uvs, texture = textured_sphere()
    arguments = {"uvs": uvs, "texture": texture, bad: torch.zeros(4, 4)}
    with pytest.raises(ValueError, match=bad):
        save_textured_obj(tmp_path / "fit.obj", vertices, faces, **arguments)
    assert list(tmp_path.iterdir()) == []
