"""`diffrender animate` end to end: decode the MP4, GIF and PNG frames it writes, replay a real
fit folder, and every bad input."""
import json
import re

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from cli_helpers import assert_error_after_progress, assert_one_line_error, read_png, run_cli
from diffrender.animation import turntable_azimuths, turntable_cameras
from diffrender.camera import Camera
from diffrender.fit import FitProblem, FitSettings, Pose, Template, Views, render_targets, run_fit
from diffrender.fit_outputs import FitRecorder
from diffrender.images import to_uint8
from diffrender.mesh import load_mesh
from diffrender.shading import Material, PointLights
from diffrender.shapes import builtin_shape


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def read_frames(path) -> np.ndarray:
    """uint8 [N,H,W,3]: every frame, composited by the reader."""
    with imageio.get_reader(path) as reader:
        frames = [np.asarray(frame) for frame in reader]
    # ffmpeg 7's GIF encoder marks pixels that repeat the previous frame transparent; Pillow
    # composites them onto that frame and hands the result back as RGBA, which must be opaque.
    for k, frame in enumerate(frames):
        if frame.shape[-1] == 4:
            assert (frame[..., 3] == 255).all(), f"frame {k} has see-through pixels"
    return np.stack([frame[..., :3] for frame in frames])


# --- turntables --------------------------------------------------------------------------------

def test_one_frame_gif_summary_is_in_the_singular(tmp_path):
    out = tmp_path / "still.gif"
    result = run_cli("animate", "teapot", "-o", out, "--frames", "1", "--size", "24")
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (1 frame of 24x24 at 30 fps; 2256 triangles, barycentric;" in result.stdout
    assert read_frames(out).shape == (1, 24, 24, 3)


def test_mp4_is_h264_yuv420p_faststart_padded_to_even(tmp_path):
    out = tmp_path / "turn.mp4"
    result = run_cli("animate", "teapot", "-o", out, "--frames", "12", "--fps", "24", "--size", "65x49")
    assert result.exit_code == 0, result.output
    assert "12 frames of 65x49 padded to 66x50 at 24 fps" in result.stdout
    assert re.search(r"12/12 frames +[0-9.]+ fps", result.stderr), "a progress bar with frames and fps"
    with imageio.get_reader(out, format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        frames = np.stack([np.asarray(frame) for frame in reader])
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p"), meta
    assert meta["fps"] == 24 and meta["size"] == (66, 50)
    assert frames.shape == (12, 50, 66, 3)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "faststart: the index precedes the media"
    # Padding repeats the edge, never rescales: the padded column and row copy their neighbours.
    assert mean_difference(frames[:, :, 65], frames[:, :, 64]) < 3
    assert mean_difference(frames[:, 49], frames[:, 48]) < 3
    differences = [mean_difference(frames[k], frames[k + 1]) for k in range(11)]
    assert min(differences) > 0.5, differences
    assert list(tmp_path.iterdir()) == [out], "no temporary file left"


def test_png_sequence_full_turn_and_frames_match_render(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    result = run_cli("animate", "teapot", "-o", frames / "%03d.png", "--frames", "24", "--size", "48",
                     "--distance", "4", "--light", "2,3,4", "--color", "0.9,0.5,0.2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in frames.iterdir()) == [f"{k:03d}.png" for k in range(24)]
    images = np.stack([read_png(frames / f"{k:03d}.png") for k in range(24)])
    assert images.shape == (24, 48, 48, 4)
    # Frame N would repeat frame 0 (a full turn), so frame N-1 is one step short of it: close to
    # frame 0 but not equal, while the half turn shows the teapot's other side.
    near, half = mean_difference(images[0], images[23]), mean_difference(images[0], images[12])
    assert 0 < near < half / 2, (near, half)
    assert all(mean_difference(images[k], images[k + 1]) > 0 for k in range(23))
    # Frame 5 looks from azimuth 30 + 360·5/24 = 105°, exactly what `render` draws with the
    # same shared lighting and colour options.
    single = tmp_path / "single.png"
    result = run_cli("render", "teapot", "-o", single, "--size", "48", "--distance", "4", "--azimuth", "105",
                     "--light", "2,3,4", "--color", "0.9,0.5,0.2")
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_png(single), images[5])


def test_png_sequence_pattern_may_hold_a_literal_percent_sign(tmp_path):
    result = run_cli("animate", "cube", "-o", tmp_path / "50%%_%02d.png", "--frames", "2", "--size", "16")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["50%_00.png", "50%_01.png"]


def test_slowest_frame_rate_reaches_the_video(tmp_path):
    """ffmpeg takes the rate as a fraction; the slowest accepted one must not round to 0."""
    out = tmp_path / "slow.mp4"
    result = run_cli("animate", "cube", "-o", out, "--frames", "2", "--fps", "0.01", "--size", "16")
    assert result.exit_code == 0, result.output
    assert imageio.get_reader(out).get_meta_data()["fps"] == pytest.approx(0.01)


def test_gif(tmp_path):
    out = tmp_path / "turn.gif"
    result = run_cli("animate", "cube", "-o", out, "--frames", "6", "--fps", "10", "--size", "40x30",
                     "--renderer", "soft", "--background", "0,0,1")
    assert result.exit_code == 0, result.output
    frames = read_frames(out)
    assert frames.shape[:3] == (6, 30, 40)
    assert imageio.get_reader(out).get_meta_data()["duration"] == 100
    assert (frames[:, 0, 0, :3] == [0, 0, 255]).all(), "--background behind the soft renders"


@pytest.mark.parametrize("name, tolerance", [("rgba.gif", 0), ("rgba.mp4", 8)])  # H.264: yuv420p, limited range
def test_video_writer_composites_rgba_frames_over_white(tmp_path, name, tolerance):
    from diffrender.video import VideoWriter

    frame = np.zeros((16, 16, 4), np.uint8)
    frame[:, :8] = [255, 0, 0, 128]  # half-transparent red: 255·a + 255·(1 − a), 255·(1 − a)
    frame[:, 8:] = [0, 0, 255, 255]
    with VideoWriter(tmp_path / name, 10.0) as writer:
        writer.append(frame)
    decoded = read_frames(tmp_path / name)[0].astype(int)
    # Away from the boundary, where H.264's chroma subsampling blends the two colours.
    assert np.abs(decoded[:, :6] - [255, 127, 127]).max() <= tolerance
    assert np.abs(decoded[:, 10:] - [0, 0, 255]).max() <= tolerance


def test_turntable_frames_the_mesh_with_one_distance():
    vertices = load_mesh("teapot").vertices * torch.tensor([2.0, 0.5, 0.5])  # long in x only
    cameras = turntable_cameras(vertices, turntable_azimuths(8), 20.0, (48, 64))
    distances = (cameras.eye - cameras.lookat).norm(dim=-1)
    assert torch.allclose(distances, distances[0].expand(8)), "one distance: the turntable does not zoom"
    clip = cameras.matrices(64 / 48) @ torch.cat([vertices, torch.ones(len(vertices), 1)], 1).T
    ndc = (clip[:, :2] / clip[:, 3:]).abs().amax(dim=(1, 2))
    assert ndc.max() <= 0.8 + 1e-4 and ndc.max() > 0.79, "fills 80% of the tighter side in the widest view"


# --- fit replays -------------------------------------------------------------------------------

SIZE = (24, 32)


@pytest.fixture(scope="module")
def fit_folder(tmp_path_factory):
    """A real fit output: a sphere fitted to synthetic cube targets from two views for 3 steps,
    one saved state per step (plus the final one), with σ annealed from the first step on."""
    folder = tmp_path_factory.mktemp("fit")
    (folder / "previews").mkdir()
    sphere, sphere_faces = builtin_shape("sphere", subdivisions=1)
    cube, cube_faces = builtin_shape("cube")
    eye = torch.tensor([[0.0, 0.5, 3.0], [3.0, 0.5, 0.0]])
    camera = Camera(eye, torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0]] * 2), fov_y=40.0)
    lights = PointLights(eye[:, None].clone(), torch.ones(2, 1, 3))
    settings = FitSettings(steps=3, frame_every=1, preview_every=100, lr=2.0, sigma=1e-3, sigma_final=1e-4,
                           anneal_start=0.0)
    truth = Template(cube * 0.4, cube_faces, torch.tensor([[0.2, 0.6, 0.9]]).expand(len(cube), 3))
    targets = render_targets(settings, truth, Pose.from_euler((0.0, 0.5, 0.0)), camera, lights, Material(), SIZE)
    problem = FitProblem(Template(sphere * 0.6, sphere_faces, torch.full((len(sphere), 3), 0.9)),
                         Pose.from_euler((0.0, 0.0, 0.0)), Views(camera, targets, ["synthetic:0", "synthetic:1"]),
                         lights, Material(), SIZE, settings)
    with FitRecorder(folder, problem) as recorder:
        result = run_fit(problem, recorder)
    recorder.finish(result, {})
    return folder, targets


def test_replay_has_one_frame_per_saved_state_next_to_the_targets(fit_folder, tmp_path):
    folder, targets = fit_folder
    states = torch.load(folder / "states.pt", weights_only=True)
    count = len(states["steps"])
    assert count == 4 and len(set(states["sigma"].tolist())) == 3, "the soft replay meets σ changes"
    for renderer in ("barycentric", "soft"):
        out = tmp_path / renderer
        out.mkdir()
        result = run_cli("animate", folder, "-o", out / "%02d.png", "--renderer", renderer)
        assert result.exit_code == 0, result.output
        frames = np.stack([np.asarray(imageio.imread(out / f"{k:02d}.png")) for k in range(count)])
        assert not (out / f"{count:02d}.png").exists()
        height, width = SIZE
        assert frames.shape == (count, 2 * height, 2 * width, 3), "one row per view, render | target"
        expected = to_uint8(targets[..., :3] + (1 - targets[..., 3:])).reshape(2 * height, width, 3)
        assert (frames[:, :, width:] == expected).all(), "the targets, per view, in every frame"
        renders = frames[:, :, :width]
        assert (renders != 255).any(axis=-1).mean() > 0.1, "the mesh is drawn over white"
        assert mean_difference(renders[0], renders[-1]) > 0.1, "the mesh evolves"


def test_soft_replay_draws_each_state_with_the_fits_sigma(fit_folder, tmp_path):
    """--sigma does not apply to a replay: each state is drawn with the σ the fit had then."""
    folder, _ = fit_folder
    outputs = []
    for sigma in ("1e-2", "1e-6"):
        out = tmp_path / sigma
        out.mkdir()
        result = run_cli("animate", folder, "-o", out / "%02d.png", "--renderer", "soft", "--sigma", sigma)
        assert result.exit_code == 0, result.output
        outputs.append(np.stack([np.asarray(imageio.imread(out / f"{k:02d}.png")) for k in range(4)]))
    assert np.array_equal(*outputs)
    assert mean_difference(outputs[0][0], outputs[0][-1]) > 0


def test_replay_mp4_and_turntable_of_the_final_mesh(fit_folder, tmp_path):
    folder, _ = fit_folder
    replay = tmp_path / "replay.mp4"
    result = run_cli("animate", folder, "-o", replay, "--fps", "5")
    assert result.exit_code == 0, result.output
    with imageio.get_reader(replay, format="FFMPEG") as reader:
        assert reader.get_meta_data()["size"] == (64, 48) and reader.get_meta_data()["fps"] == 5
        assert reader.count_frames() == 4
    spin = tmp_path / "spin.gif"
    result = run_cli("animate", folder, "--turntable", "-o", spin, "--frames", "5", "--size", "32")
    assert result.exit_code == 0, result.output
    frames = read_frames(spin)
    assert frames.shape[:3] == (5, 32, 32) and mean_difference(frames[0], frames[2]) > 0


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,fragments,code", [
    (["missing.obj"], ["mesh file not found", "missing.obj"], 1),
    (["teapot", "-o", "{tmp}/out.avi"], ["unknown output type", "out.avi"], 2),
    (["teapot", "-o", "{tmp}/frames.png"], ["unknown output type", "%04d.png"], 2),
    (["teapot", "-o", "{tmp}/%d_%d.png"], ["frame pattern '%d_%d.png'", "exactly one"], 2),
    (["teapot", "-o", "{tmp}/a%%d.png"], ["frame pattern 'a%%d.png'", "exactly one"], 2),
    (["teapot", "-o", "{tmp}/%s_%03d.png"], ["frame pattern '%s_%03d.png'", "exactly one"], 2),
    (["teapot", "--frames", "0"], ["--frames", "at least 1"], 2),
    (["teapot", "--fps", "-5"], ["--fps", "-5"], 2),
    (["teapot", "--fps", "100000"], ["--fps", "100000"], 2),
    (["teapot", "--fps", "nan"], ["--fps"], 2),
    (["teapot", "--fps", "1e-300"], ["--fps must lie in [0.01, 240]"], 2),
    (["teapot", "--elevation", "95"], ["--elevation", "[-90, 90]"], 2),
    (["teapot", "--azimuth", "nan"], ["--azimuth", "finite"], 2),
    (["teapot", "--degrees", "inf"], ["--degrees", "finite"], 2),
    (["teapot", "--distance", "inf"], ["--distance", "finite"], 2),
    (["teapot", "--renderer", "soft", "--sigma", "nan"], ["--sigma", "positive finite"], 2),
    (["teapot", "--shininess", "inf"], ["--shininess", "positive finite"], 2),
    (["teapot", "--renderer", "magic"], ["--renderer"], 2),
    (["teapot", "--ambient", "2"], ["--ambient"], 2),
    (["teapot", "--light", "1,2"], ["--light"], 2),
    (["teapot", "-o", "{tmp}/nope/out.mp4"], ["does not exist", "nope"], 1),
])
def test_bad_arguments_fail_cleanly(tmp_path, args, fragments, code):
    args = [arg.format(tmp=tmp_path) for arg in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.mp4")]
    result = run_cli("animate", *args, "--size", "16")
    assert_one_line_error(result, *fragments, code=code)
    assert list(tmp_path.iterdir()) == []


def test_folder_that_is_not_a_fit_output(tmp_path, fit_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("animate", empty, "-o", tmp_path / "out.mp4")
    assert_one_line_error(result, "not a fit output folder", "params.json", code=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "params.json").write_text(json.dumps({"image_size": [24, 32]}))
    (broken / "states.pt").write_bytes(b"not a torch file")
    result = run_cli("animate", broken, "-o", tmp_path / "out.mp4")
    assert_one_line_error(result, "cannot read", "states.pt", code=1)
    states = torch.load(fit_folder[0] / "states.pt", weights_only=True)
    torch.save({**states, "format": 7}, broken / "states.pt")
    result = run_cli("animate", broken, "-o", tmp_path / "out.mp4")
    assert_one_line_error(result, "unsupported format 7", code=1)
    torch.save({key: value for key, value in states.items() if key != "targets"}, broken / "states.pt")
    result = run_cli("animate", broken, "-o", tmp_path / "out.mp4")
    assert_one_line_error(result, "lacks targets", code=1)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("name", ["out.mp4", "frames/%02d.png"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, name):
    import errno

    from diffrender.video import VideoWriter

    def full(self, frame):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VideoWriter, "append", full)
    (tmp_path / "frames").mkdir()
    result = run_cli("animate", "cube", "-o", tmp_path / name, "--size", "16", "--frames", "2")
    assert_error_after_progress(result, f"writing {tmp_path / name} failed: No space left on device")
    assert [p.name for p in tmp_path.rglob("*")] == ["frames"]


def test_no_ffmpeg(tmp_path, monkeypatch):
    # imageio-ffmpeg takes an explicit IMAGEIO_FFMPEG_EXE as given: a missing one means no ffmpeg.
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    out = tmp_path / "out.mp4"
    result = run_cli("animate", "teapot", "-o", out, "--size", "16", "--frames", "2")
    assert_one_line_error(result, "no ffmpeg", "imageio-ffmpeg", code=1)
    assert list(tmp_path.iterdir()) == []
    result = run_cli("animate", "teapot", "-o", tmp_path / "out.gif", "--size", "16", "--frames", "2")
    assert_one_line_error(result, "no ffmpeg", code=1)
    (tmp_path / "frames").mkdir()
    result = run_cli("animate", "teapot", "-o", tmp_path / "frames" / "%02d.png", "--size", "16", "--frames", "2")
    assert result.exit_code == 0, "PNG sequences need no ffmpeg"
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00.png", "01.png"]


@pytest.mark.parametrize("name", ["out.mp4", "out.gif"])
def test_output_that_is_an_existing_folder_is_refused_before_any_frame(tmp_path, monkeypatch, name):
    import diffrender.cli.animate as animate

    def no_frames(*args, **kwargs):
        pytest.fail("rendered a frame")
        yield

    monkeypatch.setattr(animate, "turntable_frames", no_frames)
    (tmp_path / name).mkdir()
    result = run_cli("animate", "cube", "-o", tmp_path / name, "--size", "16", "--frames", "2")
    assert_one_line_error(result, "existing folder", name, code=1)
    assert [p.name for p in tmp_path.rglob("*")] == [name]


@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "frames/%02d.png"])
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, name):
    import diffrender.cli.animate as animate

    real = animate.turntable_frames

    def interrupted(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(animate, "turntable_frames", interrupted)
    (tmp_path / "frames").mkdir()
    result = run_cli("animate", "cube", "-o", tmp_path / name, "--size", "256", "--frames", "40")
    assert result.exit_code == 130 and result.stderr.strip().endswith("error: interrupted"), result.output
    assert [p.name for p in tmp_path.rglob("*")] == ["frames"], "no partial video or frames"


def test_help_lists_the_shared_look_options():
    result = run_cli("animate", "--help")
    assert result.exit_code == 0
    for option in ("--frames", "--fps", "--degrees", "--turntable", "--light", "--ambient", "--color",
                   "--background", "--specular", "--shininess", "--renderer"):
        assert option in result.stdout, option

