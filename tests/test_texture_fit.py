"""UV-textured meshes in the renderers, the fit engine and `diffrender fit` / `animate`: the
barycentric renderer shows a texture's texels, passes gradients to the texture and the vertices,
and derives the UVs' screen-space derivatives exactly; a texture fit recovers the cow's texture
and writes a textured OBJ that reloads, and its replay draws every state's texture."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from cli_helpers import assert_one_line_error, run_cli
from conftest import reference_file
from diffrender import barycentric, camera as camera_lib, texture as texture_lib
from diffrender.camera import Camera, frame_vertices
from diffrender.fit import (FitError, FitProblem, FitSettings, LossWeights, Pose, Template, Views, render_targets,
                            render_views, resize_image, run_fit)
from diffrender.losses import total_variation
from diffrender.mesh import load_mesh, vertex_normals
from diffrender.renderers import make_renderer
from diffrender.shading import Material, PointLights


class MemoryRecorder:
    """Keeps the logged loss rows of run_fit, without files."""

    def __init__(self):
        self.rows = []

    def log(self, step, total, terms, ious, sigma):
        self.rows.append((step, total, dict(terms)))

    def snapshot(self, *args, **kwargs):
        pass


def cow():
    return load_mesh(reference_file("cow", "cow.obj"))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as float [H,W,3] in 0..255."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def orbit(vertices, azimuths, elevations) -> Camera:
    """One framing camera per (azimuth, elevation) in degrees, one shared distance and clip range."""
    views = [frame_vertices(vertices, float(a), float(e), fov_y=40.0) for a, e in zip(azimuths, elevations)]
    return Camera(torch.cat([v.eye for v in views]), torch.cat([v.lookat for v in views]),
                  torch.cat([v.up for v in views]), fov_y=40.0, near=views[0].near, far=views[0].far)


def lit_render(mesh, camera, size, diffuse=None, **texturing):
    """The barycentric render of ``mesh`` lit only by a white light at the eye (no ambient), so
    that RGB = diffuse colour × (n·l): linear in the diffuse colour."""
    vertices = mesh.vertices[None]
    return barycentric.render(vertices, mesh.faces, vertex_normals(vertices, mesh.faces), diffuse, camera.eye,
                              camera.lookat, camera.up, camera.eye[:, None], torch.ones(1, 1, 3), size, size,
                              ambient_color=torch.zeros(1, 3), fov_y=40.0, near_clip=camera.near,
                              far_clip=camera.far, **texturing)[0]


# --------------------------------------------------------------------------------------------
# The barycentric renderer
# --------------------------------------------------------------------------------------------


def distance_to_colour_changes(texels: torch.Tensor, limit: int) -> torch.Tensor:
    """int64 [Ht,Wt]: for each texel, the Chebyshev distance (in texels, wrapping around, at most
    ``limit``) to the nearest texel whose colour differs from its right or lower neighbour. All
    texels closer than that share the texel's colour."""
    changes = ((texels != texels.roll(-1, 0)) | (texels != texels.roll(-1, 1))).any(-1)
    distance = torch.full(changes.shape, limit)
    reached = changes.float()[None, None]
    for radius in range(limit):
        distance[(reached[0, 0] > 0) & (distance == limit)] = radius
        reached = torch.nn.functional.max_pool2d(torch.nn.functional.pad(reached, (1, 1, 1, 1), mode="circular"), 3, 1)
    return distance


def exact_uv_derivatives(mesh, camera, size) -> torch.Tensor:
    """[H,W,4] :func:`barycentric.uv_screen_derivatives` of ``mesh`` as :func:`lit_render` draws it."""
    # render mirrors clip y to put row 0 at the top; the footprint's size does not depend on it.
    clip = camera_lib.transform_homogeneous(camera.matrices(1.0), mesh.vertices[None]) * torch.tensor([1.0, -1, 1, 1])
    ids, bary, _ = barycentric.rasterize_triangles(clip, mesh.faces, size, size)
    pixel_uvs = barycentric.interpolate(mesh.uvs[None], mesh.faces, ids, bary)
    return barycentric.uv_screen_derivatives(clip, mesh.faces, ids, bary, mesh.uvs[None], pixel_uvs)[0]


@pytest.mark.parametrize("texture_filter, size", [("bilinear", 128), ("trilinear", 384)])
def test_covered_pixels_show_the_texel_at_their_uv(texture_filter, size):
    """Dividing by a white render cancels the shading, leaving the albedo; dividing a render
    whose diffuse colour is (u, v, 0) leaves each pixel's UV. Where the texture is flat around
    that UV, over every texel the filter can reach, the albedo must be that texel's colour."""
    mesh = cow()
    camera = orbit(mesh.vertices, [30.0], [20.0])
    white = lit_render(mesh, camera, size, torch.ones(1, mesh.num_vertices, 3))
    textured = lit_render(mesh, camera, size, uvs=mesh.uvs, texture=mesh.texture, texture_filter=texture_filter)
    uv_colors = torch.cat([mesh.uvs, torch.zeros(mesh.num_vertices, 1)], dim=-1)[None]
    lit = (white[..., 3] > 0.5) & (white[..., 0] > 0.2)
    uv_image = lit_render(mesh, camera, size, uv_colors)[..., :2] / white[..., :2]
    uv, albedo = uv_image[lit], (textured[..., :3] / white[..., :3])[lit]

    texels = mesh.texture
    height, width = texels.shape[:2]
    reach = torch.full((len(uv),), 2)  # bilinear: the 2×2 texels around the UV, +1 for rounding
    if texture_filter == "trilinear":
        # The coarser of the two blended levels is at most ⌈lod⌉; its bilinear taps lie within
        # 1.5 of its texels (2^level each) of the UV.
        uv_da = exact_uv_derivatives(mesh, camera, size)[lit]
        scale = torch.tensor([width, height, width, height], dtype=uv_da.dtype)
        footprint = (uv_da * scale).reshape(-1, 2, 2).norm(dim=-1).amax(-1)
        level = torch.log2(footprint.clamp(min=1.0)).ceil()
        reach = (1.5 * 2.0 ** level).ceil().long() + 1
    columns = ((uv[:, 0] % 1.0) * width).long().clamp(0, width - 1)
    rows = ((1.0 - uv[:, 1] % 1.0) * height).long().clamp(0, height - 1)
    flat = distance_to_colour_changes(texels, limit=32)[rows, columns] > reach
    assert flat.sum() > 300, "enough pixels land on flat texture regions"
    expected = texels[rows, columns][flat]
    assert (expected.mean(-1) < 0.5).any() and (expected.mean(-1) > 0.8).any(), "dark spots and light skin"
    torch.testing.assert_close(albedo[flat], expected, atol=2e-4, rtol=0)


def test_texture_replaces_the_diffuse_colours_and_uvs_need_a_texture():
    mesh = cow()
    camera = orbit(mesh.vertices, [0.0], [0.0])
    red = torch.tensor([1.0, 0.0, 0.0]).expand(1, mesh.num_vertices, 3)
    with_colors = lit_render(mesh, camera, 32, red, uvs=mesh.uvs, texture=mesh.texture)
    without = lit_render(mesh, camera, 32, uvs=mesh.uvs, texture=mesh.texture)
    assert torch.equal(with_colors, without)
    with pytest.raises(ValueError, match="uvs and texture go together"):
        lit_render(mesh, camera, 32, red, uvs=mesh.uvs)


def quad_scene(dtype=torch.float64):
    """A tilted quad seen in perspective, its UVs spanning a 4×5 texture about 1.5 times."""
    vertices = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, -0.6], [1.0, 1.0, -0.3], [-1.0, 1.0, 0.2]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[-0.2, 0.1], [1.3, -0.1], [1.2, 1.4], [0.1, 1.2]], dtype=dtype)
    texture = torch.rand(4, 5, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return vertices, faces, uvs, texture


def test_gradients_reach_the_texture_and_the_vertices():
    vertices, faces, uvs, texture = quad_scene()
    eye = torch.tensor([[0.3, 0.2, 3.0]], dtype=vertices.dtype)

    def shade(vertices, texture):
        normals = vertex_normals(vertices, faces)
        return barycentric.render(vertices, faces, normals, None, eye, torch.zeros_like(eye),
                                  torch.tensor([[0.0, 1.0, 0.0]], dtype=eye.dtype), eye[:, None],
                                  torch.ones(1, 1, 3, dtype=eye.dtype), 9, 7, uvs=uvs, texture=texture,
                                  texture_filter="bilinear")[..., :3]

    assert torch.autograd.gradcheck(shade, (vertices.clone().requires_grad_(), texture.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-6)


def test_uv_screen_derivatives_match_finite_differences_inside_triangles():
    vertices, faces, uvs, _ = quad_scene()
    eye = torch.tensor([[0.3, 0.2, 3.0]], dtype=vertices.dtype)
    camera = Camera(eye, torch.zeros_like(eye), torch.tensor([[0.0, 1.0, 0.0]], dtype=eye.dtype))
    width, height = 64, 48
    clip = camera_lib.transform_homogeneous(camera.matrices(width / height), vertices)
    ids, bary, _ = barycentric.rasterize_triangles(clip, faces, width, height)
    pixel_uvs = barycentric.interpolate(uvs[None], faces, ids, bary)
    analytic = barycentric.uv_screen_derivatives(clip, faces, ids, bary, uvs[None], pixel_uvs)
    covered = barycentric.coverage(bary)[..., 0] > 0
    estimated = texture_lib.uv_derivatives(pixel_uvs, covered)
    # Pixels whose four neighbours lie on the same triangle: there central differences apply.
    inner = ids[:, 1:-1, 1:-1]
    same = covered[:, 1:-1, 1:-1] & (inner == ids[:, 1:-1, 2:]) & (inner == ids[:, 1:-1, :-2]) \
        & (inner == ids[:, 2:, 1:-1]) & (inner == ids[:, :-2, 1:-1])
    assert same.sum() > 500
    analytic, estimated = analytic[:, 1:-1, 1:-1][same], estimated[:, 1:-1, 1:-1][same]
    assert analytic.abs().max() > 0.01
    # Central differences of the perspective division are off by O(step²): about 0.4 % here.
    torch.testing.assert_close(analytic, estimated, atol=1e-4 * float(analytic.abs().max()), rtol=1e-2)
    assert (barycentric.uv_screen_derivatives(clip, faces, ids, bary, uvs[None], pixel_uvs)[~covered] == 0).all()


def test_renderer_protocol_passes_uvs_and_texture():
    mesh = cow()
    camera = orbit(mesh.vertices, [60.0], [10.0])
    lights = PointLights(camera.eye[:, None], torch.ones(1, 1, 3))
    colors = torch.ones(1, mesh.num_vertices, 3)
    renderer = make_renderer("barycentric", texture_filter="bilinear")
    plain = renderer(mesh.vertices[None], mesh.faces, colors, camera, lights, Material(), (32, 32))
    textured = renderer(mesh.vertices[None], mesh.faces, colors, camera, lights, Material(), (32, 32),
                        uvs=mesh.uvs, texture=mesh.texture)
    assert torch.equal(plain[..., 3], textured[..., 3])
    covered = plain[0, ..., 3] > 0
    assert (plain[0][covered][:, :3] - textured[0][covered][:, :3]).abs().max() > 0.3, "dark spots"


def test_soft_renderer_draws_the_texture():
    mesh = cow()
    camera = orbit(mesh.vertices, [60.0], [10.0])
    lights = PointLights(camera.eye[:, None], torch.ones(1, 1, 3))
    colors = torch.ones(1, mesh.num_vertices, 3)
    renderer = make_renderer("soft", sigma=1e-6)
    args = (mesh.vertices[None], mesh.faces, colors, camera, lights, Material(), (48, 48))
    plain, textured = renderer(*args), renderer(*args, uvs=mesh.uvs, texture=mesh.texture)
    hard = make_renderer("barycentric", texture_filter="bilinear")(*args, uvs=mesh.uvs, texture=mesh.texture)
    inside = hard[0, ..., 3] > 0
    assert (plain[0][inside][:, :3] - textured[0][inside][:, :3]).abs().max() > 0.3
    assert (textured[0][inside][:, :3] - hard[0][inside][:, :3]).abs().mean() < 0.05


# --------------------------------------------------------------------------------------------
# The fit engine
# --------------------------------------------------------------------------------------------


def test_total_variation():
    flat = torch.full((4, 5, 3), 0.3, requires_grad=True)
    assert total_variation(flat) == 0
    stripes = torch.zeros(4, 6, 3)
    stripes[:, ::2] = 1.0  # every column differs from the next by 1, rows are equal
    assert total_variation(stripes) == pytest.approx(1.0)
    assert total_variation(torch.ones(1, 1, 3)) == 0
    total_variation(flat + torch.linspace(0, 1, 5)[:, None]).backward()
    assert flat.grad.abs().sum() > 0


def texture_problem(mesh, truth_texture, size, steps, texture_size, **changes):
    """8 views of ``mesh`` around it, above and below, targets drawn with ``truth_texture``; the
    fit starts from a grey texture of ``texture_size``² texels."""
    camera = orbit(mesh.vertices, torch.arange(8) * 45.0, [25.0, -20.0] * 4)
    lights = PointLights(camera.eye[:, None].clone(), torch.ones(8, 1, 3))
    material = Material(ambient=torch.full((8, 3), 0.3))
    settings = FitSettings(**{"params": ("texture",), "steps": steps, "optimizer": "adam", "lr": 0.05,
                              "renderer": "barycentric", "antialias": False, "clip_grad_norm": 0.0,
                              "weights": LossWeights(silhouette=0.0, rgb=1.0, edge=0.0, laplacian=0.0),
                              "texture_size": texture_size, "texture_filter": "bilinear",
                              "frame_every": 10 ** 6, "preview_every": 10 ** 6, **changes})
    white = torch.ones(mesh.num_vertices, 3)
    truth = Template(mesh.vertices, mesh.faces, white, uvs=mesh.uvs, texture=truth_texture)
    targets = render_targets(settings, truth, Pose.from_euler((0.0, 0.0, 0.0)), camera, lights, material, (size, size))
    template = Template(mesh.vertices, mesh.faces, white, uvs=mesh.uvs)
    return FitProblem(template, Pose.from_euler((0.0, 0.0, 0.0)), Views(camera, targets, [str(k) for k in range(8)]),
                      lights, material, (size, size), settings)


def visible_texels(problem, texture_size):
    """bool [S,S]: the texels some covered pixel of some view samples (nonzero gradient)."""
    probe = torch.zeros(texture_size, texture_size, 3, requires_grad=True)
    template = problem.template
    rgba = render_views("barycentric", 1e-4, 1e-4, template.vertices, template.faces, template.colors,
                        problem.views.camera, problem.lights, problem.material, problem.image_size,
                        uvs=template.uvs, texture=probe, texture_filter="bilinear")
    rgba[..., :3].sum().backward()
    return probe.grad[..., 0] > 0


def psnr(fitted, truth, mask):
    return float(10 * torch.log10(1.0 / (fitted - truth)[mask].square().mean()))


def test_texture_fit_recovers_the_cows_texture_where_it_is_seen():
    """Targets are drawn from the cow's texture resized to the fitted resolution, so that an
    exact solution exists: the test measures recovery, not resampling."""
    mesh = cow()
    texture_size = 256
    truth = resize_image(mesh.texture, (texture_size, texture_size))
    problem = texture_problem(mesh, truth, 128, steps=100, texture_size=texture_size)
    recorder = MemoryRecorder()
    result = run_fit(problem, recorder)
    assert result.stopped == "finished"
    assert set(recorder.rows[0][2]) == {"rgb"}
    visible = visible_texels(problem, texture_size)
    assert 0.2 < visible.float().mean() < 0.8, "part of the atlas is seen, not all of it"
    start = torch.full_like(truth, 0.5)
    assert psnr(start, truth, visible) < 12, "grey is far from the texture"
    fitted = result.state.texture.detach()
    assert fitted.min() >= 0 and fitted.max() <= 1
    assert psnr(fitted, truth, visible) >= 25.0


def test_texture_tv_smooths_the_fitted_texture_and_is_logged():
    mesh = cow()
    truth = resize_image(mesh.texture, (64, 64))
    runs = {}
    for weight in (0.0, 0.05):
        recorder = MemoryRecorder()
        weights = LossWeights(silhouette=0.0, rgb=1.0, edge=0.0, laplacian=0.0, texture_tv=weight)
        result = run_fit(texture_problem(mesh, truth, 32, steps=20, texture_size=64, weights=weights), recorder)
        runs[weight] = (result.state.texture.detach(), recorder.rows)
    assert "texture_tv" not in runs[0.0][1][0][2] and "texture_tv" in runs[0.05][1][0][2]
    assert total_variation(runs[0.05][0]) < total_variation(runs[0.0][0])


def test_texture_init_mesh_starts_from_the_mesh_texture_resized():
    mesh = cow()
    problem = texture_problem(mesh, mesh.texture, 16, steps=1, texture_size=32, texture_init="mesh", lr=1e-12)
    problem.template.texture = mesh.texture
    result = run_fit(problem, MemoryRecorder())
    torch.testing.assert_close(result.state.texture.detach(), resize_image(mesh.texture, (32, 32)), atol=1e-6,
                               rtol=0)


def test_soft_renderer_fits_a_texture():
    mesh = cow()
    truth = resize_image(mesh.texture, (64, 64))
    recorder = MemoryRecorder()
    run_fit(texture_problem(mesh, truth, 32, steps=15, texture_size=64, renderer="soft", sigma=1e-6), recorder)
    assert recorder.rows[-1][1] < 0.3 * recorder.rows[0][1]


@pytest.mark.parametrize("changes, template_change, message", [
    ({}, {"uvs": None}, 'params "texture" needs a mesh with UV coordinates'),
    ({"texture_init": "mesh"}, {}, 'texture_init "mesh" needs a mesh with a texture'),
    ({"params": ("texture", "colors")}, {}, 'params "colors" and "texture" exclude each other'),
    ({"weights": LossWeights(silhouette=1.0, rgb=0.0)}, {}, 'params "texture" needs the RGB loss'),
    ({"params": ("vertices",), "weights": LossWeights(texture_tv=1.0)}, {}, "loss.texture_tv applies to"),
    ({"texture_size": 0}, {}, "texture_size must lie in"),
    ({"texture_filter": "nearest"}, {}, "texture_filter must be one of"),
])
def test_bad_texture_settings_are_refused_before_the_first_step(changes, template_change, message):
    mesh = cow()
    problem = texture_problem(mesh, mesh.texture, 8, steps=1, texture_size=8)
    for name, value in template_change.items():
        setattr(problem.template, name, value)
    for name, value in changes.items():
        setattr(problem.settings, name, value)
    with pytest.raises(FitError, match=message):
        run_fit(problem, MemoryRecorder())


# --------------------------------------------------------------------------------------------
# The commands: fit outputs, replays, bad input
# --------------------------------------------------------------------------------------------


def texture_fit_config(folder: Path, mesh: Path, **extra: str) -> Path:
    """A synthetic texture fit of ``mesh`` (targets drawn with its own texture) from two views."""
    lines = "\n".join(f"{key} = {value}" for key, value in extra.items())
    path = folder / "fit.toml"
    path.write_text(f"""
renderer = "barycentric"
antialias = false
image_size = [32, 32]
texture_filter = "bilinear"
{lines}
[camera]
fov = 40.0
[[views]]
azimuth = 30.0
elevation = 20.0
distance = 3.0
[[views]]
azimuth = 210.0
elevation = -10.0
distance = 3.0
[init]
mesh = "{mesh}"
[synthetic]
mesh = "{mesh}"
[optimize]
params = ["texture"]
texture_size = 32
steps = 4
optimizer = "adam"
lr = 0.05
[loss]
silhouette = 0.0
edge = 0.0
laplacian = 0.0
rgb = 1.0
texture_tv = 0.01
[output]
frame_every = 2
preview_every = 2
""")
    return path


@pytest.fixture(scope="module")
def texture_fit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texture_fit")
    out = folder / "out"
    result = run_cli("fit", "--config", texture_fit_config(folder, reference_file("cow", "cow.obj")), "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_texture_fit_writes_a_textured_obj_that_trimesh_reloads(texture_fit_folder):
    out = texture_fit_folder
    assert {"fit.obj", "fit.mtl", "fit_texture.png"} <= {p.name for p in out.iterdir()}
    states = torch.load(out / "states.pt", weights_only=True)
    assert states["format"] == 2 and states["steps"].tolist() == [0, 2, 4]
    assert states["texture"].dtype == torch.uint8 and states["texture"].shape == (3, 32, 32, 3)
    assert torch.equal(states["texture"][0], torch.full((32, 32, 3), 128, dtype=torch.uint8)), "grey start"
    cow_mesh = cow()
    torch.testing.assert_close(states["uvs"], cow_mesh.uvs)

    loaded = trimesh.load(out / "fit.obj", force="mesh", process=False)
    image = np.asarray(loaded.visual.material.image.convert("RGB"))
    np.testing.assert_array_equal(image, states["texture"][-1].numpy())
    assert not (image == 128).all(), "the texture moved away from grey"
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], cow_mesh.uvs[cow_mesh.faces].numpy(), atol=1e-6)
    reloaded = load_mesh(out / "fit.obj")
    assert reloaded.texture.shape == (32, 32, 3) and reloaded.num_faces == cow_mesh.num_faces

    header = (out / "losses.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["step", "total", "rgb", "texture_tv"]
    params = json.loads((out / "params.json").read_text())
    assert params["settings"]["optimize"]["texture_size"] == 32 and params["settings"]["texture_filter"] == "bilinear"


def test_replay_of_a_texture_fit_draws_each_states_texture(texture_fit_folder, tmp_path):
    out = texture_fit_folder
    frames = tmp_path / "frames"
    frames.mkdir()
    result = run_cli("animate", out, "-o", frames / "%02d.png", "--ambient", "0", "--texture-filter", "bilinear")
    assert result.exit_code == 0, result.output
    renders = np.stack([read_rgb(frames / f"{k:02d}.png") for k in range(3)])[:, :, :32]
    final_preview = read_rgb(out / "previews" / "step_0004.png")[:, :32]
    # The fit drew its float texture, the replay its 8-bit copy: equal to within rounding.
    assert np.abs(renders[-1] - final_preview).max() <= 3
    assert np.abs(renders[0] - renders[-1]).mean() > 1, "the first state is grey, the last textured"
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli("animate", out, "-o", plain / "%02d.png", "--ambient", "0", "--no-texture")
    assert result.exit_code == 0, result.output
    assert np.abs(read_rgb(plain / "02.png")[:, :32] - renders[-1]).mean() > 1


def test_turntable_of_a_texture_fit_spins_the_textured_mesh(texture_fit_folder, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, flags in (("textured", []), ("plain", ["--no-texture"])):
        result = run_cli("animate", texture_fit_folder, "--turntable", "-o", frames / f"{name}%d.png",
                         "--frames", "1", "--size", "32", *flags)
        assert result.exit_code == 0, result.output
    assert np.abs(read_rgb(frames / "textured0.png") - read_rgb(frames / "plain0.png")).mean() > 1


def test_texture_fit_of_a_mesh_without_uvs_fails_in_one_line_and_writes_nothing(tmp_path):
    config = texture_fit_config(tmp_path, "teapot")
    out = tmp_path / "out"
    result = run_cli("fit", "--config", config, "-o", out)
    assert_one_line_error(result, 'params "texture" needs a mesh with UV coordinates')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.toml"]


def test_texture_fit_flags_reach_the_config(tmp_path):
    config = texture_fit_config(tmp_path, "teapot")
    result = run_cli("fit", "--config", config, "-o", tmp_path / "out", "--texture-size", "0")
    assert_one_line_error(result, "--texture-size", "optimize.texture_size", code=2)
    result = run_cli("fit", "--config", config, "-o", tmp_path / "out", "--texture-init", "noise")
    assert_one_line_error(result, "--texture-init", "optimize.texture_init", code=2)
    result = run_cli("fit", "--config", config, "-o", tmp_path / "out", "--texture-filter", "nearest")
    assert_one_line_error(result, "--texture-filter", code=2)
    result = run_cli("fit", "--config", config, "-o", tmp_path / "out", "--params", "vertices", "--texture-tv", "1")
    assert_one_line_error(result, "loss.texture_tv applies to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.toml"]
