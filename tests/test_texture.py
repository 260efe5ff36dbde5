"""Texture sampling against torch's grid_sample (forward and both gradients), gradcheck, mip
mapping against a supersampled reference, determinism across thread counts, NaN UVs and input
validation."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import same_bits_for_one_and_two_threads
from diffrender import texture
from diffrender._ext import _C


def random_case(seed, batch=2, size=(5, 7), channels=3, pixels=(6, 9), low=-0.4, high=1.4):
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(batch, *size, channels, generator=g, dtype=torch.float64)
    uv = torch.rand(batch, *pixels, 2, generator=g, dtype=torch.float64) * (high - low) + low
    return tex, uv


def grid_sample_reference(tex, uv):
    """Clamp-mode bilinear sampling with torch's grid_sample: u → x = 2u − 1, v → y = 1 − 2v."""
    grid = torch.stack([2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]], dim=-1)
    out = F.grid_sample(tex.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def tiled_reference(tex, uv):
    """Wrap-mode sampling as clamp-mode sampling of the centre tile of a 3×3 tiling."""
    folded = (uv - torch.floor(uv) + 1) / 3
    return grid_sample_reference(tex.repeat(1, 3, 3, 1), folded)


def value_and_grads(function, tex, uv, seed=1):
    leaves = [tex.clone().requires_grad_(True), uv.clone().requires_grad_(True)]
    out = function(*leaves)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed)).to(out.device)
    return (out.detach(), *torch.autograd.grad((out * weights).sum(), leaves))


def assert_all_close(actual, expected, atol=1e-12):
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, atol=atol, rtol=0), float((a - e).abs().max())


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_clamp_matches_grid_sample_with_both_gradients(channels):
    tex, uv = random_case(0, channels=channels)
    ours = value_and_grads(lambda t, u: texture.sample(t, u, boundary="clamp"), tex, uv)
    assert_all_close(ours, value_and_grads(grid_sample_reference, tex, uv))
    assert ours[1].abs().max() > 0 and ours[2].abs().max() > 0


def test_wrap_matches_grid_sample_on_a_tiled_texture():
    tex, uv = random_case(1, low=-1.7, high=2.6)
    uv[0, 0, :2] = torch.tensor([[0.0, 1.0], [1.0 - 1e-3, 1e-3]], dtype=uv.dtype)  # on and across the seam
    ours = value_and_grads(lambda t, u: texture.sample(t, u, boundary="wrap"), tex, uv)
    assert_all_close(ours, value_and_grads(tiled_reference, tex, uv))


def test_uv_convention_puts_v_zero_at_the_bottom_row():
    tex = torch.arange(6, dtype=torch.float64).reshape(1, 2, 3, 1)  # rows [0 1 2] (top) and [3 4 5]
    centres = torch.tensor([[[[0.5 / 3, 0.75], [2.5 / 3, 0.75], [0.5 / 3, 0.25], [1.5 / 3, 0.25]]]],
                           dtype=torch.float64)
    assert texture.sample(tex, centres).flatten().tolist() == [0.0, 2.0, 3.0, 4.0]


def texel_centre_distance(uv, sizes):
    """Smallest distance, in texels of any of the (height, width) levels, from a texel centre."""
    distance = torch.full(uv.shape[:-1], math.inf, dtype=uv.dtype)
    for height, width in sizes:
        for t, size in ((uv[..., 0], width), (1 - uv[..., 1], height)):
            x = t * size - 0.5
            distance = torch.minimum(distance, (x - torch.round(x)).abs())
    return distance


def uvs_away_from_kinks(seed, count, sizes, low, high):
    """[1,1,count,2] uvs at least 0.1 texel from every texel centre of every level (where the
    bilinear weights have kinks that finite differences would straddle)."""
    g = torch.Generator().manual_seed(seed)
    candidates = torch.rand(50 * count, 2, generator=g, dtype=torch.float64) * (high - low) + low
    keep = candidates[texel_centre_distance(candidates, sizes) > 0.1][:count]
    assert keep.shape[0] == count
    return keep.reshape(1, 1, count, 2)


@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_bilinear_gradcheck(boundary):
    tex = torch.rand(1, 4, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    uv = uvs_away_from_kinks(3, 12, [(4, 5)], -0.6, 1.6)
    inputs = (tex.requires_grad_(True), uv.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda t, u: texture.sample(t, u, boundary=boundary), inputs)


@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_trilinear_gradcheck_reaches_the_texture_through_the_pyramid(boundary):
    g = torch.Generator().manual_seed(4)
    tex = torch.rand(1, 6, 7, 2, dtype=torch.float64, generator=g)
    sizes = [level.shape[1:3] for level in texture.mip_pyramid(tex, boundary)]
    uv = uvs_away_from_kinks(5, 10, sizes, -0.3, 1.3)
    # Footprints from magnification to the 1×1 level, most of them between two levels.
    uv_da = torch.rand(1, 1, 10, 4, dtype=torch.float64, generator=g) * 0.6
    inputs = (tex.requires_grad_(True), uv.requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda t, u: texture.sample(t, u, filter="trilinear", boundary=boundary, uv_da=uv_da), inputs)


def test_lod_selects_and_blends_mip_levels():
    tex, uv = random_case(6, batch=1, size=(16, 16), pixels=(3, 4))
    levels = texture.mip_pyramid(tex, "clamp")

    def trilinear(scale, **kwargs):
        uv_da = torch.tensor([scale / 16, 0.0, 0.0, scale / 16], dtype=uv.dtype).expand(1, 3, 4, 4)
        return texture.sample(tex, uv, "trilinear", "clamp", uv_da=uv_da, **kwargs)

    def bilinear(level):
        return texture.sample(levels[level], uv, boundary="clamp")

    assert torch.allclose(trilinear(0.5), bilinear(0), atol=1e-14)
    assert torch.allclose(trilinear(2.0), bilinear(1), atol=1e-14)
    assert torch.allclose(trilinear(2.0 ** 2.25), 0.75 * bilinear(2) + 0.25 * bilinear(3), atol=1e-14)
    assert torch.allclose(trilinear(1e6), bilinear(4), atol=1e-14)
    assert torch.allclose(trilinear(1e6, max_mip_level=2), bilinear(2), atol=1e-14)


@pytest.mark.parametrize("boundary, padded_row", [("wrap", 0), ("clamp", 4)])
def test_mip_pyramid_averages_two_by_two_and_pads_odd_sides(boundary, padded_row):
    tex = torch.rand(2, 5, 4, 3, dtype=torch.float64)
    levels = texture.mip_pyramid(tex, boundary)
    assert [tuple(level.shape[1:3]) for level in levels] == [(5, 4), (3, 2), (2, 1), (1, 1)]
    assert torch.allclose(levels[1][:, 0, 0], tex[:, :2, :2].mean(dim=(1, 2)))
    padded = torch.cat([tex[:, 4:5, 2:4], tex[:, padded_row:padded_row + 1, 2:4]], dim=1)
    assert torch.allclose(levels[1][:, 2, 1], padded.mean(dim=(1, 2)))
    assert len(texture.mip_pyramid(tex, boundary, max_mip_level=1)) == 2


def test_uv_derivatives_are_central_one_sided_or_zero():
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    uv = torch.stack([0.1 * xs + 0.02 * ys, -0.3 * ys], dim=-1)[None].double()
    expected = torch.tensor([0.1, 0.0, 0.02, -0.3], dtype=torch.float64)
    assert torch.allclose(texture.uv_derivatives(uv), expected.expand(1, 4, 5, 4))
    uv[0, 1, 2, 0] += 1.0  # a bump: central differences around it see half of it
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    mask[0, 1, 2] = False  # ... unless the bump is masked out
    masked = texture.uv_derivatives(uv, mask)
    assert torch.allclose(masked[0, 1, [1, 3]], expected.expand(2, 4))
    assert torch.allclose(texture.uv_derivatives(uv)[0, 1, 1, 0], torch.tensor(0.6, dtype=torch.float64))
    isolated = torch.zeros(1, 4, 5, dtype=torch.bool)
    isolated[0, 2, 2] = True
    assert texture.uv_derivatives(uv, isolated)[0, 2, 2].abs().max() == 0


def checkerboard(size, check):
    rows = torch.arange(size) // check
    return ((rows[:, None] + rows[None, :]) % 2).double()[None, :, :, None]


def plane_uv(size, subsamples=1):
    """UVs of a textured floor seen in perspective at size² pixels (with subsamples² samples per
    pixel, pixel-major), receding from about 2 to 60 texels per pixel of a 256² texture."""
    offsets = (torch.arange(subsamples, dtype=torch.float64) + 0.5) / subsamples
    coords = (torch.arange(size, dtype=torch.float64)[:, None] + offsets[None]).reshape(-1)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    depth = 1.0 / (0.05 + 0.95 * y / size)
    u = 0.3 + (x / size - 0.5) * depth * 0.6
    v = 0.2 + depth * 0.35
    return torch.stack([u, v], dim=-1)[None]


def test_mip_mapping_aliases_far_less_than_bilinear_under_minification():
    # 4-texel checks: the near rows still resolve them, the far ones average them to grey.
    tex, size, subsamples = checkerboard(256, 4), 48, 16
    fine = texture.sample(tex, plane_uv(size, subsamples))
    reference = fine.reshape(1, size, subsamples, size, subsamples, 1).mean(dim=(2, 4))
    uv = plane_uv(size)
    bilinear_error = (texture.sample(tex, uv) - reference).abs().mean()
    trilinear_error = (texture.sample(tex, uv, filter="trilinear") - reference).abs().mean()
    grey_error = (reference - reference.mean()).abs().mean()
    assert bilinear_error > 0.2
    assert trilinear_error < 0.15 * bilinear_error
    assert trilinear_error < 0.5 * grey_error  # it keeps the pattern where the pixels resolve it


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_bit_identical_for_one_and_two_threads(filter, boundary):
    g = torch.Generator().manual_seed(7)
    tex = torch.rand(64, 48, 3, generator=g)  # shared, so pixels of both threads meet on every texel
    uv = torch.rand(2, 96, 80, 2, generator=g) * 1.4 - 0.2
    uv[:, :40] = uv[:, :40] * 0.05 + 0.5  # heavy magnification: many pixels share a few texels
    uv_da = torch.rand(2, 96, 80, 4, generator=g) * 0.05
    run = lambda t, u: texture.sample(t, u, filter, boundary, uv_da=uv_da if filter == "trilinear" else None)
    same_bits_for_one_and_two_threads(lambda: value_and_grads(run, tex, uv))


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
def test_non_finite_uvs_sample_zero_with_zero_gradient(filter):
    tex, uv = random_case(8, batch=1, pixels=(4, 4))
    bad = [(0, 0, 0, 0), (0, 1, 2, 1), (0, 3, 3, 0)]
    for (b, y, x, k), value in zip(bad, (math.nan, math.inf, -math.inf)):
        uv[b, y, x, k] = value
    out, grad_tex, grad_uv = value_and_grads(lambda t, u: texture.sample(t, u, filter), tex, uv)
    for b, y, x, _ in bad:
        assert out[b, y, x].abs().max() == 0 and grad_uv[b, y, x].abs().max() == 0
    assert torch.isfinite(out).all() and torch.isfinite(grad_tex).all() and torch.isfinite(grad_uv).all()
    good = torch.isfinite(uv).all(dim=-1)
    assert out[good].abs().min() > 0
    # Only the finite pixels feed the texture gradient (with the footprints they had).
    clean = torch.where(good[..., None], uv, torch.full_like(uv, 0.5))
    uv_da = texture.uv_derivatives(uv) if filter == "trilinear" else None
    assert uv_da is None or torch.isfinite(uv_da).all()
    expected = value_and_grads(lambda t, u: texture.sample(t, u, filter, uv_da=uv_da) * good[..., None],
                               tex, clean)[1]
    assert torch.allclose(grad_tex, expected, atol=1e-12)


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
def test_a_shared_texture_broadcasts_over_the_batch(filter):
    tex, uv = random_case(9, batch=1, pixels=(5, 5))
    uv = torch.cat([uv, uv.flip(1)])
    shared = value_and_grads(lambda t, u: texture.sample(t, u, filter), tex[0], uv)
    expanded = value_and_grads(lambda t, u: texture.sample(t.expand(2, -1, -1, -1), u, filter), tex[0], uv)
    assert_all_close(shared, expanded)
    assert_all_close(value_and_grads(lambda t, u: texture.sample(t, u, filter), tex, uv), expanded)


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
def test_each_gradient_alone_equals_the_joint_one(filter):
    tex, uv = random_case(13)
    _, grad_tex, grad_uv = value_and_grads(lambda t, u: texture.sample(t, u, filter), tex, uv)
    weights = torch.randn(2, 6, 9, 3, dtype=tex.dtype, generator=torch.Generator().manual_seed(1))
    for leaf, other, expected in ((tex, uv, grad_tex), (uv, tex, grad_uv)):
        leaf = leaf.clone().requires_grad_(True)
        pair = (leaf, other) if leaf.shape == tex.shape else (other, leaf)
        (grad,) = torch.autograd.grad((texture.sample(*pair, filter) * weights).sum(), leaf)
        assert torch.equal(grad, expected)


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
def test_empty_images_sample_nothing(filter):
    tex, _ = random_case(14)
    uv = torch.zeros(2, 0, 4, 2, dtype=tex.dtype, requires_grad=True)
    out = texture.sample(tex, uv, filter)
    assert out.shape == (2, 0, 4, 3)
    out.sum().backward()
    assert uv.grad.shape == uv.shape


def test_bad_inputs_raise_clear_errors():
    tex, uv = random_case(10)
    cases = [
        (TypeError, "texture must be float32 or float64", dict(texture=tex.long())),
        (TypeError, "uv must have the texture's dtype", dict(uv=uv.float())),
        (TypeError, "uv must be a torch.Tensor", dict(uv=uv.tolist())),
        (ValueError, r"uv must have shape \[B,H,W,2\]", dict(uv=uv[..., :1])),
        (ValueError, r"texture must have shape \[B,Ht,Wt,C\]", dict(texture=tex[0, 0])),
        (ValueError, r"texture must have shape", dict(texture=tex[..., :0])),
        (ValueError, "texture batch 3 must be 1 or the uv batch 2", dict(texture=tex[[0, 1, 1]])),
        (ValueError, "filter must be one of", dict(filter="nearest")),
        (ValueError, "boundary must be one of", dict(boundary="mirror")),
        (ValueError, "for filter='trilinear' only", dict(uv_da=torch.zeros(2, 6, 9, 4, dtype=uv.dtype))),
        (ValueError, r"uv_da must be \[B,H,W,4\]", dict(filter="trilinear", uv_da=torch.zeros(2, 6, 9, 2).double())),
        (TypeError, "uv_da must be a torch.float64", dict(filter="trilinear", uv_da=torch.zeros(2, 6, 9, 4))),
        (TypeError, "mask must be a bool", dict(filter="trilinear", mask=torch.ones(2, 6, 9))),
        (ValueError, r"mask must be \[B,H,W\]", dict(filter="trilinear", mask=torch.ones(2, 6, 8, dtype=torch.bool))),
        (ValueError, "max_mip_level must be ≥ 0", dict(filter="trilinear", max_mip_level=-1)),
        (TypeError, "max_mip_level must be an int", dict(filter="trilinear", max_mip_level=1.5)),
    ]
    for error, message, overrides in cases:
        with pytest.raises(error, match=message):
            texture.sample(**{"texture": tex, "uv": uv, **overrides})


def test_the_compiled_op_validates_its_own_inputs():
    tex, uv = random_case(11)
    flat, sizes = tex.reshape(-1), [5, 7]
    sample = lambda **kw: _C.texture_sample_forward(**{**dict(levels=flat, level_sizes=sizes, texture_batch=2,
                                                              channels=3, uv=uv, uv_da=None, filter="bilinear",
                                                              boundary="clamp"), **kw})
    assert torch.equal(sample(), texture.sample(tex, uv, boundary="clamp"))
    with pytest.raises(ValueError, match="boundary must be 'wrap' or 'clamp'"):
        sample(boundary="border")
    with pytest.raises(ValueError, match="filter must be 'bilinear' or 'trilinear'"):
        sample(filter="cubic")
    with pytest.raises(ValueError, match="levels must hold 210 elements"):
        sample(levels=flat[1:])
    with pytest.raises(ValueError, match="level_sizes must hold"):
        sample(level_sizes=[5])
    with pytest.raises(ValueError, match="texture batch must be 1 or the uv batch"):
        sample(texture_batch=3)
    with pytest.raises(ValueError, match="uv_da must be given for filter 'trilinear'"):
        sample(filter="trilinear")
    with pytest.raises(TypeError, match="must have the same dtype"):
        sample(uv=uv.float())
    with pytest.raises(ValueError, match="grad_out must be"):
        _C.texture_sample_backward(torch.zeros(2, 6, 9, 2, dtype=tex.dtype), flat, sizes, 2, 3, uv, None,
                                   "bilinear", "clamp", True, True)


@pytest.mark.parametrize("filter", ["bilinear", "trilinear"])
def test_cuda_matches_cpu_and_is_deterministic(gpu, filter):
    tex, uv = random_case(12, size=(33, 40), pixels=(50, 60))
    uv_da = torch.rand(2, 50, 60, 4, dtype=tex.dtype) * 0.1 if filter == "trilinear" else None

    def run(device):
        return value_and_grads(lambda t, u: texture.sample(t, u, filter, uv_da=None if uv_da is None else uv_da.to(device)),
                               tex.to(device), uv.to(device))

    with gpu():
        on_gpu = [x.cpu() for x in run(gpu.device)]
    assert_all_close(on_gpu, run("cpu"), atol=1e-10)
    with gpu(schedule=3):
        again = [x.cpu() for x in run(gpu.device)]
    assert all(torch.equal(a, b) for a, b in zip(on_gpu, again))
