"""Camera matrices: look_at's frame, including views straight along the up direction."""
import pytest
import torch

from diffrender import camera


def _rotation(view):
    return view[:, :3, :3]


def _assert_is_a_view_of(view, eye, center):
    rotation = _rotation(view)
    identity = torch.eye(3, dtype=view.dtype).expand_as(rotation)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), identity, atol=1e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(len(view), dtype=view.dtype), atol=1e-6)
    points = torch.stack([eye, center], dim=1)
    eye_space = camera.transform_homogeneous(view, points)[..., :3]
    torch.testing.assert_close(eye_space[:, 0], torch.zeros_like(eye), atol=1e-6, rtol=0)
    distance = (center - eye).norm(dim=-1)
    torch.testing.assert_close(eye_space[:, 1], torch.stack(
        [torch.zeros_like(distance), torch.zeros_like(distance), -distance], dim=-1), atol=1e-6, rtol=0)


def test_look_at_maps_the_eye_to_the_origin_and_the_target_down_minus_z_with_up_in_view():
    eye = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.5, -2.0]])
    center = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.1]])
    up = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    view = camera.look_at(eye, center, up)
    _assert_is_a_view_of(view, eye, center)
    image_up = _rotation(view)[:, 1]
    assert ((image_up * up).sum(-1) > 0).all(), "the world's up must point up in the image"
    assert (_rotation(view)[:, 0] * up).sum(-1).abs().max() < 1e-6, "image right must be level"


@pytest.mark.parametrize("up", [[0.0, 1.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 0.0]],
                         ids=["along", "against", "zero"])
def test_look_at_along_the_up_direction_still_gives_a_rotation(up):
    """A camera straight above its target with +y up made a zero rotation, so every point
    projected to the image centre."""
    eye = torch.tensor([[0.0, 4.0, 0.0], [0.0, -4.0, 0.0]])
    center = torch.zeros(2, 3)
    view = camera.look_at(eye, center, torch.tensor([up, up]))
    assert torch.isfinite(view).all()
    _assert_is_a_view_of(view, eye, center)


def test_views_near_the_up_direction_keep_the_plain_cross_product():
    """Only a vanishing cross product takes the fallback: a camera a hair off the pole keeps
    the frame that world_up gives it, bit for bit."""
    eye = torch.tensor([[1e-5, 4.0, 0.0], [0.0, 4.0, -1e-9]], dtype=torch.float64)
    center, up = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[0.0, 1.0, 0.0]] * 2, dtype=torch.float64)
    forward = (center - eye) / (center - eye).norm(dim=-1, keepdim=True)
    side = torch.cross(forward, up, dim=-1)
    expected_side = side / side.norm(dim=-1, keepdim=True)
    assert torch.equal(camera.look_at(eye, center, up)[:, 0, :3], expected_side)


def test_orbit_straight_down_frames_the_mesh_from_above():
    """In float64, cos(90°) rounds to 6e-17, so the orbit's eye lies on the up axis."""
    vertices = torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]],
                            dtype=torch.float64)
    cameras = camera.frame_vertices(vertices, [0.0], elevation_deg=90.0)
    clip = camera.transform_homogeneous(cameras.matrices(1.0), vertices[None])
    ndc = clip[..., :2] / clip[..., 3:]
    assert torch.isfinite(ndc).all()
    assert ndc.abs().max() <= 0.8 + 1e-5
    assert ndc.abs().amax(dim=1).min() > 0.5, "the square must span the image, not collapse to a point"


def test_look_at_gradients_match_finite_differences_near_and_on_the_pole():
    eye = torch.tensor([[1.0, 2.0, 3.0], [1e-3, 3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    center = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    up = torch.tensor([[0.0, 1.0, 0.2], [0.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(camera.look_at, (eye, center, up))

    # On the pole the fallback frame is in use. Moving the eye, the target or up along the up
    # axis keeps the view on it, so finite differences stay within that branch.
    def on_the_pole(eye_height, center_height, up_length):
        zero = torch.zeros_like(eye_height)
        return camera.look_at(torch.stack([zero, eye_height, zero], dim=-1),
                              torch.stack([zero, center_height, zero], dim=-1),
                              torch.stack([zero, up_length, zero], dim=-1))

    heights = [torch.tensor(value, dtype=torch.float64, requires_grad=True) for value in ([3.0], [0.5], [1.0])]
    assert torch.autograd.gradcheck(on_the_pole, heights)
    on_the_pole(*heights).sum().backward()
    assert all(torch.isfinite(h.grad).all() for h in heights)


def _orbit_views(azimuths, elevations, dtype=torch.float64):
    azimuths = torch.as_tensor(azimuths, dtype=dtype)
    elevations = torch.as_tensor(elevations, dtype=dtype)
    cameras = camera.Camera.orbit(azimuths, elevations, torch.full_like(azimuths, 3.0),
                                  torch.tensor([[0.2, -0.1, 0.3]], dtype=dtype).expand(len(azimuths), 3))
    return cameras, cameras.view_matrices()


def test_orbit_below_the_poles_gives_the_frame_that_plus_y_gives():
    grid = torch.cartesian_prod(torch.linspace(-180.0, 180.0, 9, dtype=torch.float64),
                                torch.linspace(-89.0, 89.0, 9, dtype=torch.float64))
    cameras, views = _orbit_views(grid[:, 0], grid[:, 1])
    plus_y = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand(len(grid), 3)
    torch.testing.assert_close(views, camera.look_at(cameras.eye, cameras.lookat, plus_y), atol=1e-12, rtol=0)


@pytest.mark.parametrize("pole", [90.0, -90.0])
def test_orbit_at_a_pole_is_the_limit_of_the_orbit_rising_to_it(pole):
    """At ±90° the +y up is the view axis; the orbit's own up keeps the roll it had on the way
    there, for every azimuth."""
    azimuths = torch.linspace(-180.0, 135.0, 8, dtype=torch.float64)
    cameras, on_pole = _orbit_views(azimuths, torch.full_like(azimuths, pole))
    _assert_is_a_view_of(on_pole, cameras.eye, cameras.lookat)
    _, near_pole = _orbit_views(azimuths, torch.full_like(azimuths, pole - 1e-6 * pole / abs(pole)))
    torch.testing.assert_close(on_pole, near_pole, atol=1e-7, rtol=0)


def test_orbit_from_the_front_to_the_top_looks_down_with_the_back_at_the_image_top():
    _, views = _orbit_views([0.0], [90.0])
    torch.testing.assert_close(_rotation(views)[0], torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64), atol=1e-12, rtol=0)


def test_orbit_rolls_continuously_over_the_pole():
    """Past 90° the camera goes on over the top (upside down, as a camera carried over it
    would be) instead of flipping its roll at the pole."""
    elevations = torch.tensor([89.9, 90.0, 90.1], dtype=torch.float64)
    _, views = _orbit_views(torch.full_like(elevations, 30.0), elevations)
    image_up = _rotation(views)[:, 1]
    assert (image_up[1:] * image_up[:-1]).sum(-1).min() > 0.999


@pytest.mark.parametrize("arguments, message", [
    ((1.0, 0.0, 0.1, 10.0), r"fov_y must lie in \(0, 180\) degrees, got 0.0"),
    ((1.0, 180.0, 0.1, 10.0), r"fov_y must lie in \(0, 180\) degrees, got 180.0"),
    ((1.0, float("nan"), 0.1, 10.0), r"fov_y must lie in \(0, 180\) degrees, got nan"),
    ((0.0, 40.0, 0.1, 10.0), "aspect_ratio must be a positive finite number, got 0.0"),
    ((1.0, 40.0, 0.0, 10.0), "near_clip must be a positive finite number, got 0.0"),
    ((1.0, 40.0, 2.0, 1.0), "far_clip must be finite and beyond near_clip, got near 2.0, far 1.0"),
    ((1.0, 40.0, 0.1, float("inf")), "far_clip must be finite and beyond near_clip"),
])
def test_perspective_refuses_float_arguments_that_make_no_projection(arguments, message):
    with pytest.raises(ValueError, match="perspective: " + message):
        camera.perspective(*arguments)
    cam = camera.Camera(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]),
                        fov_y=arguments[1], near=arguments[2], far=arguments[3])
    with pytest.raises(ValueError, match="perspective: " + message):
        cam.matrices(arguments[0])


def test_perspective_takes_tensor_arguments_without_reading_them():
    # A fitted fov is a tensor; checking it would wait for a GPU at every step.
    matrices = camera.perspective(1.0, torch.tensor([0.0, 40.0]), 0.1, 10.0)
    assert matrices.shape == (2, 4, 4) and torch.isinf(matrices[0, 0, 0]) and torch.isfinite(matrices[1]).all()


def test_camera_tensors_of_another_dtype_are_named():
    eye, up = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    with pytest.raises(TypeError, match="look_at: eye is torch.float32 on cpu but center torch.float64"):
        camera.look_at(eye, torch.zeros(1, 3, dtype=torch.float64), up)
    matrices = camera.Camera(eye, torch.zeros(1, 3), up).matrices(1.0)
    with pytest.raises(TypeError, match="the vertices are torch.float64 on cpu but the camera matrices torch.float32"):
        camera.transform_homogeneous(matrices, torch.zeros(1, 5, 3, dtype=torch.float64))
