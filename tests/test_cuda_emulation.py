"""The CUDA emulation itself (tests/cuda_emulation): the launch rewriting, that the emulated
module really runs the CUDA kernels, schedules and barriers, launch-configuration errors, and
NaN-filled fresh memory. The parity tests that use it are in test_cuda.py and beside each op's
tests."""
import fcntl
import threading

import pytest
import torch

from cuda_emulation.build import sole_build, translate_launches
from diffrender import barycentric
from diffrender._ext import _C
from gpu_backends import backend

pytestmark = pytest.mark.cuda_emulation


def test_translate_launches_rewrites_every_form():
    source = ("a<<<blocks_for(n), kThreads, 0, stream>>>(x, f(y, z));\n"
              "if (n) fill_bins<Setup><<<g, dim3(kTile, kTile)>>>(\n  p, q);\n"
              "ns::k<std::pair<int, T>><<<1, 1>>>();")
    assert translate_launches(source) == (
        "::cuda_emulation::launch(::cuda_emulation::config(blocks_for(n), kThreads, 0, stream), a, x, f(y, z));\n"
        "if (n) ::cuda_emulation::launch(::cuda_emulation::config(g, dim3(kTile, kTile)), fill_bins<Setup>, \n"
        "  p, q);\n"
        "::cuda_emulation::launch(::cuda_emulation::config(1, 1), ns::k<std::pair<int, T>>);")


def test_a_lock_left_by_a_killed_build_does_not_stall_the_next(tmp_path):
    (tmp_path / "lock").touch()  # what torch's builder leaves when it is killed mid-build
    with sole_build(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_the_lock_of_a_running_build_is_left_alone(tmp_path):
    (tmp_path / "lock").touch()
    entered = threading.Event()

    def second_build():
        with sole_build(tmp_path):
            entered.set()

    with open(tmp_path / "owner.lock", "w") as running:  # another build holds the folder
        fcntl.flock(running, fcntl.LOCK_EX)
        waiter = threading.Thread(target=second_build)
        waiter.start()
        assert not entered.wait(0.5) and (tmp_path / "lock").exists()
    waiter.join(10)
    assert entered.is_set() and not (tmp_path / "lock").exists()


def test_translate_launches_refuses_what_it_cannot_parse():
    with pytest.raises(ValueError, match="unbalanced"):
        translate_launches("k<<<1, 1>>>(a, (b);")
    with pytest.raises(ValueError, match="without arguments"):
        translate_launches("k<<<1, 1>>>;")


@pytest.fixture(scope="module")
def emulated():
    return backend("emulated")


def scene():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(2, 30, 4, generator=g, dtype=torch.float64) * 1.6 - 0.8
    clip[..., 3] = 1.0
    return clip, torch.randint(0, 30, (40, 3), generator=g)


def test_ops_reach_the_emulated_kernels(emulated):
    assert emulated.module.with_cuda()
    clip, triangles = scene()
    launches, blocks, barriers = emulated.module.counters()
    with emulated():
        assert _C.rasterize_triangles_forward is emulated.module.rasterize_triangles_forward
        barycentric.rasterize_triangles(clip, triangles, 40, 24)
    after = emulated.module.counters()
    # set-up and count, bin fill, and one 16x16 block per tile: 3x2 tiles, 2 images.
    assert after[0] - launches == 3
    assert after[1] - blocks >= 12
    assert after[2] > barriers, "the tile kernel's __syncthreads never switched threads"
    assert _C.rasterize_triangles_forward is not emulated.module.rasterize_triangles_forward


def test_fresh_memory_is_nan_while_emulating(emulated):
    with emulated():
        assert torch.empty(5).isnan().all()


def test_emulation_refuses_tensors_off_the_cpu(emulated):
    inputs = [torch.rand(1, 4, 3), torch.rand(1, 4, 3), torch.rand(1, 4, 3), None, None, torch.rand(1, 3),
              torch.rand(1, 1, 3), torch.rand(1, 1, 3), torch.rand(1, 3)]
    on_meta = [x if x is None else x.to("meta") for x in inputs]
    with pytest.raises(RuntimeError, match="phong_shade: the CUDA emulation takes CPU tensors, got meta"):
        emulated.module.phong_shade_forward(*on_meta)


def test_schedules_change_the_order_of_atomics(emulated):
    # The bin fill is ordered by atomics, and so by the schedule; the rasterized result must not be.
    clip, triangles = scene()
    results = []
    for schedule in (0, 1, 5):
        with emulated(schedule):
            assert emulated.module.schedule() == schedule
            results.append(barycentric.rasterize_triangles(clip, triangles, 40, 24))
    assert emulated.module.schedule() == 0
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_schedules_order_threads_and_blocks(emulated):
    module = emulated.module
    assert module.launch_order(3, 4, 2) == list(range(24))
    module.set_schedule(1)
    assert module.launch_order(3, 4, 2) == list(range(24))[::-1]
    module.set_schedule(9)
    shuffled = module.launch_order(3, 4, 2)
    assert sorted(shuffled) == list(range(24)) and shuffled != list(range(24))
    blocks = [thread // 8 for thread in shuffled]
    assert all(b == blocks[i - i % 8] for i, b in enumerate(blocks)), "blocks must run one at a time"
    assert module.launch_order(3, 4, 2) == shuffled, "a schedule must be repeatable"
    module.set_schedule(0)


@pytest.mark.parametrize("schedule", [0, 1, 9])
def test_barriers_order_shared_memory(emulated, schedule):
    module = emulated.module
    module.set_schedule(schedule)
    try:
        expected = [b * 64 + (lane + 1) % 64 for b in range(3) for lane in range(64)]
        assert module.rotate_through_shared(3, 64, True) == expected
        # Without the barrier some thread reads its neighbour's slot before it is written, or
        # (in forward order) the slot of the block before: the race shows on every schedule.
        assert module.rotate_through_shared(3, 64, False) != expected
    finally:
        module.set_schedule(0)


@pytest.mark.parametrize("config,status", [((1, 32, 1, 1), 0), ((2, 32, 32, 1), 0), ((0, 32, 1, 1), 9),
                                           ((1, 0, 1, 1), 9), ((1, 1025, 1, 1), 9), ((1, 1, 1, 65), 9)])
def test_launch_configurations_are_checked_as_cuda_does(emulated, config, status):
    assert emulated.module.launch_status(*config) == status
    assert emulated.module.launch_status(1, 1, 1, 1) == 0, "cudaGetLastError must clear the error"


def test_divergent_barriers_are_refused(emulated):
    with pytest.raises(RuntimeError, match="divergent __syncthreads"):
        emulated.module.divergent_barrier(32)
    emulated.module.launch_order(1, 4, 1)  # the emulation still works afterwards
