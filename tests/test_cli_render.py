"""`diffrender render` end to end: decode the PNGs it writes, and every bad input."""

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, read_png, run_cli
from conftest import reference_file
from diffrender import barycentric
from diffrender.mesh import load_mesh, vertex_normals


@pytest.mark.parametrize("shape", ["sphere", "cube", "teapot"])
def test_builtin_shapes_render_framed(tmp_path, shape):
    out = tmp_path / f"{shape}.png"
    result = run_cli("render", shape, "-o", out, "--size", "96x64")
    assert result.exit_code == 0, result.output
    image = read_png(out)
    assert image.shape == (64, 96, 4)
    alpha = image[..., 3] > 127
    coverage = alpha.mean()
    assert 0.1 < coverage < 0.9
    rows, cols = np.nonzero(alpha)
    # Framing fills about 80% of the tighter side (height here), centred.
    assert 0.65 <= (rows.max() - rows.min() + 1) / 64 <= 0.9 or 0.65 <= (cols.max() - cols.min() + 1) / 96 <= 0.9
    assert abs((rows.min() + rows.max()) / 2 - 31.5) < 6 and abs((cols.min() + cols.max()) / 2 - 47.5) < 9
    assert image[alpha][:, :3].mean() > 30, "lit surface, not black"


def test_summary_of_a_single_triangle_says_triangle(tmp_path):
    mesh, out = tmp_path / "one.obj", tmp_path / "one.png"
    mesh.write_text("v -1 -1 0\nv 1 -1 0\nv 0 1 0\nf 1 2 3\n")
    result = run_cli("render", mesh, "-o", out, "--size", "16")
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (16x16, 1 triangle, barycentric)" in result.stdout
    assert read_png(out)[..., 3].max() == 255


def test_obj_with_quads_and_no_normals(tmp_path):
    mesh = tmp_path / "box.obj"
    corners = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    mesh.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in corners) +
                    "".join("f " + " ".join(map(str, q)) + "\n" for q in quads))
    out = tmp_path / "box.png"
    result = run_cli("render", mesh, "-o", out, "--size", "64", "--color", "1,0,0")
    assert result.exit_code == 0, result.output
    image = read_png(out)
    covered = image[..., 3] > 127
    assert covered.mean() > 0.2
    assert image[covered][:, 0].mean() > 3 * max(image[covered][:, 1].mean(), 1), "red diffuse colour"


def test_eye_renders_in_mesh_coordinates_like_the_api(tmp_path):
    out = tmp_path / "api.png"
    result = run_cli("render", "teapot", "-o", out, "--size", "80x60", "--eye", "0,1,4", "--ambient", "0",
                     "--light", "0,1,4")
    assert result.exit_code == 0, result.output
    mesh = load_mesh("teapot")
    vertices = mesh.vertices[None]
    eye = torch.tensor([[0.0, 1.0, 4.0]])
    expected = barycentric.render(vertices, mesh.faces, vertex_normals(vertices, mesh.faces),
                                  torch.full_like(vertices, 0.8), eye, torch.zeros(1, 3),
                                  torch.tensor([[0.0, 1.0, 0.0]]), eye[:, None], torch.ones(1, 1, 3), 80, 60,
                                  ambient_color=torch.zeros(1, 3))[0]
    expected = (expected.clamp(0, 1) * 255).round().numpy()
    assert np.abs(read_png(out).astype(float) - expected).max() <= 1


def test_straight_down_is_the_orbit_arriving_over_the_top(tmp_path):
    """--elevation 90 looks straight down with the roll the orbit from --azimuth has on its way
    up: the view a hair below the pole, and from azimuth 90 the same view turned a quarter
    clockwise."""
    def silhouette(azimuth, elevation):
        out = tmp_path / f"{azimuth}_{elevation}.png"
        result = run_cli("render", "teapot", "-o", out, "--size", "64", "--azimuth", azimuth,
                         "--elevation", elevation)
        assert result.exit_code == 0, result.output
        return read_png(out)[..., 3] > 127

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    top = silhouette("0", "90")
    assert 0.1 < top.mean() < 0.8
    assert iou(top, silhouette("0", "89.9")) > 0.97
    from_the_side = silhouette("90", "90")
    assert iou(np.rot90(top, k=-1), from_the_side) > 0.97
    assert iou(np.rot90(top, k=1), from_the_side) < 0.9


def test_lights_background_and_specular_change_the_image(tmp_path):
    base, lit = tmp_path / "base.png", tmp_path / "lit.png"
    assert run_cli("render", "sphere", "-o", base, "--size", "48").exit_code == 0
    result = run_cli("render", "sphere", "-o", lit, "--size", "48", "--light", "5,5,5:1,0.2,0.2",
                     "--specular", "1", "--shininess", "8", "--background", "0,0,1")
    assert result.exit_code == 0, result.output
    a, b = read_png(base), read_png(lit)
    assert np.array_equal(a[..., 3], b[..., 3]), "alpha stays coverage"
    assert (b[..., 3] == 0).any() and (b[b[..., 3] == 0][:, 2] == 255).all(), "blue background"
    assert b[..., 0][b[..., 3] > 0].mean() > b[..., 1][b[..., 3] > 0].mean() + 10, "reddish light"


def test_version_and_help():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("diffrender ")
    result = run_cli("render", "--help")
    assert result.exit_code == 0 and "--azimuth" in result.stdout and "--light" in result.stdout


# --- textured meshes ---------------------------------------------------------------------------

def render_cow(tmp_path, name, *flags):
    out = tmp_path / f"{name}.png"
    result = run_cli("render", reference_file("cow", "cow.obj"), "-o", out, "--size", "96", "--ambient", "0", *flags)
    assert result.exit_code == 0, result.output
    return result, read_png(out).astype(float)


def test_textured_cow_renders_its_texture(tmp_path):
    """The cow's material is white, so with no ambient light a textured pixel is the untextured
    one times the texture's colour there: their ratio shows the texture."""
    result, textured = render_cow(tmp_path, "textured")
    assert "textured" in result.stdout
    _, plain = render_cow(tmp_path, "plain", "--no-texture")
    assert np.array_equal(textured[..., 3], plain[..., 3]), "the same coverage"
    lit = (plain[..., 3] == 255) & (plain[..., 0] > 60)
    assert lit.mean() > 0.1
    albedo = textured[lit][:, :3] / plain[lit][:, :3]
    assert (plain[lit][:, :3] == plain[lit][:, :1]).all(), "untextured: the white material, grey shades"
    dark = (albedo.max(-1) < 0.5).mean()
    assert 0.02 < dark < 0.5, "the black spots cover part of the cow"
    skin = albedo[albedo.min(-1) > 0.5]
    texture = load_mesh(reference_file("cow", "cow.obj")).texture
    light_texels = texture[texture.min(-1).values > 0.5]
    assert np.abs(np.median(skin, axis=0) - light_texels.median(0).values.numpy()).max() < 0.03, "peach skin"
    assert (skin[:, 0] > skin[:, 2]).mean() > 0.9


def test_texture_filter_and_color_options(tmp_path):
    _, trilinear = render_cow(tmp_path, "trilinear")
    _, bilinear = render_cow(tmp_path, "bilinear", "--texture-filter", "bilinear")
    covered = trilinear[..., 3] == 255
    difference = np.abs(trilinear - bilinear)[covered][:, :3]
    assert 0 < difference.mean() < 8, "minified texture: mip-mapping smooths, but the colours agree"
    _, red = render_cow(tmp_path, "red", "--color", "1,0,0")
    assert (red[covered][:, 1:3] == 0).all(), "--color replaces the texture"
    out = tmp_path / "bad.png"
    result = run_cli("render", "cube", "-o", out, "--texture-filter", "nearest")
    assert_one_line_error(result, "--texture-filter", "nearest", code=2)
    result = run_cli("render", "cube", "-o", out, "--texture-filter", "bilinear", "--renderer", "soft")
    assert_one_line_error(result, "--texture-filter applies to the barycentric renderer", code=2)
    assert not out.exists()


def test_soft_renderer_draws_the_texture_too(tmp_path):
    _, soft = render_cow(tmp_path, "soft", "--renderer", "soft", "--sigma", "1e-7")
    _, soft_plain = render_cow(tmp_path, "soft_plain", "--renderer", "soft", "--sigma", "1e-7", "--no-texture")
    _, hard = render_cow(tmp_path, "hard", "--texture-filter", "bilinear")
    inside = (hard[..., 3] == 255) & (soft[..., 3] == 255)
    assert np.abs(soft - hard)[inside][:, :3].mean() < 6
    assert np.abs(soft - soft_plain)[inside][:, :3].mean() > 20


def test_missing_texture_warns_in_one_line_and_renders_the_material_colour(tmp_path):
    (tmp_path / "quad.mtl").write_text("newmtl skin\nKd 0.2 0.4 0.6\nmap_Kd gone.png\n")
    (tmp_path / "quad.obj").write_text(
        "mtllib quad.mtl\nv -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "usemtl skin\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
    out = tmp_path / "quad.png"
    result = run_cli("render", tmp_path / "quad.obj", "-o", out, "--size", "32", "--azimuth", "0", "--elevation", "0",
                     "--ambient", "0")
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip()
    assert warning.startswith("warning: ") and "\n" not in warning and "gone.png" in warning, result.stderr
    assert "Traceback" not in result.output and "textured" not in result.stdout
    image = read_png(out).astype(float)
    colour = image[image[..., 3] == 255][:, :3].mean(0)
    assert np.allclose(colour / colour[2], [0.2 / 0.6, 0.4 / 0.6, 1.0], atol=0.02), colour


def test_turntable_frames_of_the_textured_cow_match_render(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    cow = reference_file("cow", "cow.obj")
    result = run_cli("animate", cow, "-o", frames / "%d.png", "--frames", "2", "--size", "48", "--distance", "3")
    assert result.exit_code == 0, result.output
    single = tmp_path / "single.png"
    result = run_cli("render", cow, "-o", single, "--size", "48", "--distance", "3")
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_png(single), read_png(frames / "0.png")), "frame 0 looks from azimuth 30 too"
    result = run_cli("animate", cow, "-o", frames / "plain%d.png", "--frames", "1", "--size", "48", "--distance", "3",
                     "--no-texture")
    assert result.exit_code == 0, result.output
    assert not np.array_equal(read_png(frames / "plain0.png"), read_png(frames / "0.png"))


# --- bad input ---------------------------------------------------------------------------------

def write(path, text):
    path.write_text(text)
    return path


BAD_MESHES = {
    "missing": (None, "not found"),
    "text with no geometry": ("hello, I am text\n", "no faces"),
    "no faces": ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    "nan vertex": ("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "non-finite"),
    "index out of range": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "out of range"),
    "malformed face": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "malformed face line 'f 1 2 x'"),
}


@pytest.mark.parametrize("case", list(BAD_MESHES))
def test_bad_meshes_fail_cleanly(tmp_path, case):
    text, fragment = BAD_MESHES[case]
    mesh = tmp_path / "mesh.obj"
    if text is not None:
        write(mesh, text)
    out = tmp_path / "out.png"
    result = run_cli("render", mesh, "-o", out)
    assert_one_line_error(result, fragment, "mesh.obj")
    assert list(tmp_path.iterdir()) == ([mesh] if text is not None else [])


def test_file_that_is_not_a_mesh(tmp_path):
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    result = run_cli("render", picture, "-o", tmp_path / "out.png")
    assert_one_line_error(result, "picture.png")
    assert not (tmp_path / "out.png").exists()


def test_truncated_binary_mesh(tmp_path):
    mesh = tmp_path / "mesh.stl"
    mesh.write_bytes(b"\0" * 80 + (1000).to_bytes(4, "little") + b"\1" * 60)
    result = run_cli("render", mesh, "-o", tmp_path / "out.png")
    assert_one_line_error(result, "mesh.stl")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--size", "0x0"], "--size"),
    (["--size", "-5x10"], "--size"),
    (["--size", "abc"], "--size"),
    (["--size", "200000x200000"], "--size"),
    (["--size", "16000x16000"], "GiB"),
    (["--eye", "1,2"], "--eye"),
    (["--eye", "a,b,c"], "--eye"),
    (["--light", "1,2,3:4"], "--light"),
    (["--light", "x"], "--light"),
    (["--renderer", "magic"], "--renderer"),
    (["--fov", "0"], "--fov"),
    (["--azimuth", "nan"], "--azimuth"),
    (["--elevation", "inf"], "--elevation"),
    (["--elevation", "90.5"], "--elevation"),
    (["--elevation", "-91"], "--elevation"),
    (["--distance", "inf"], "--distance"),
    (["--distance", "nan"], "--distance"),
    (["--eye", "0,3,0"], "--up"),
    (["--eye", "0,0,3", "--up", "0,0,0"], "--up"),
    (["--eye", "1,2,3", "--lookat", "0,0,0", "--up", "-2,-4,-6"], "--up"),
    (["--shininess", "nan"], "--shininess"),
    (["--shininess", "inf"], "--shininess"),
    (["--renderer", "soft", "--sigma", "inf"], "--sigma"),
    (["--renderer", "soft", "--sigma", "nan"], "--sigma"),
    (["--renderer", "soft", "--gamma", "inf"], "--gamma"),
    (["--renderer", "soft", "--gamma", "0"], "--gamma"),
])
def test_bad_options_fail_cleanly(tmp_path, args, fragment, monkeypatch):
    import diffrender.cli.scene as scene

    # The memory guard compares against half the machine's RAM; pin it for a stable test.
    monkeypatch.setattr(scene.os, "sysconf", lambda name: 4096 if name == "SC_PAGE_SIZE" else (8 << 30) // 4096)
    out = tmp_path / "out.png"
    result = run_cli("render", "cube", "-o", out, *args)
    assert_one_line_error(result, fragment)
    assert not out.exists()


@pytest.mark.parametrize("name", ["out.jpg", "noext", "out.png.tmp"])
def test_output_that_is_not_a_png_name_is_refused_before_any_work(tmp_path, name):
    out = tmp_path / name
    result = run_cli("render", "cube", "-o", out, "--size", "16")
    assert_one_line_error(result, "--output", ".png", name)
    assert list(tmp_path.iterdir()) == []


def test_upper_case_png_suffix_is_a_png(tmp_path):
    out = tmp_path / "OUT.PNG"
    result = run_cli("render", "cube", "-o", out, "--size", "16")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert read_png(out).shape == (16, 16, 4)


def test_output_that_is_an_existing_folder_is_refused(tmp_path):
    (tmp_path / "out.png").mkdir()
    result = run_cli("render", "cube", "-o", tmp_path / "out.png", "--size", "16")
    assert_one_line_error(result, "existing folder", "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"] and not any((tmp_path / "out.png").iterdir())


def test_missing_or_unwritable_output_folder(tmp_path, monkeypatch):
    result = run_cli("render", "cube", "-o", tmp_path / "nope" / "out.png", "--size", "16")
    assert_one_line_error(result, "does not exist", "nope")
    locked = tmp_path / "locked"
    locked.mkdir()
    # CI runs as root, who may write anywhere: simulate a read-only folder instead of chmod.
    import diffrender.images as images

    real_access = images.os.access
    monkeypatch.setattr(images.os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    result = run_cli("render", "cube", "-o", locked / "out.png", "--size", "16")
    assert_one_line_error(result, "not writable", "locked")
    assert list(locked.iterdir()) == []
