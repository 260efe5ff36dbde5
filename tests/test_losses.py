"""diffrender.losses against tiny hand-computed cases."""
import math

import pytest
import torch

from diffrender.losses import (MeshTopology, edge_length, flatten_loss, hard_iou, normal_consistency, rgb_mse,
                               silhouette_mse, soft_iou_loss, uniform_laplacian)
from diffrender.shapes import icosphere

# A unit square in the z = 0 plane split along its 0-2 diagonal, both triangles counter-clockwise.
SQUARE = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def folded(height: float) -> torch.Tensor:
    """The square with corner 3 lifted to z = height (0 is flat)."""
    vertices = SQUARE.clone()
    vertices[3, 2] = height
    return vertices


def test_silhouette_mse_is_the_mean_squared_alpha_difference():
    alpha = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    target = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert silhouette_mse(alpha, target).item() == pytest.approx((0 + 0.25 + 1 + 0.0625) / 4)


def test_soft_iou_loss_per_view_then_averaged():
    alpha = torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    # View 0: intersection 1, union 1 + 1 + 0.5 = 2.5; view 1: identical masks.
    assert soft_iou_loss(alpha, target).item() == pytest.approx(1 - (0.4 + 1.0) / 2)


def test_rgb_mse_weights_pixels_by_the_union_of_coverages():
    rgba = torch.zeros(1, 1, 3, 4)
    target = torch.zeros(1, 1, 3, 4)
    rgba[0, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 1.0])  # covered by both, error 0.5 - 0.25 per channel
    target[0, 0, 0] = torch.tensor([0.25, 0.25, 0.25, 1.0])
    target[0, 0, 1] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # covered by the target only: error 1 in red
    # Pixel 2 is background in both and must not dilute the mean.
    expected = (3 * 0.25 ** 2 + 1.0) / (3 * 2)
    assert rgb_mse(rgba, target).item() == pytest.approx(expected)


def test_rgb_mse_pushes_no_gradient_through_its_weights():
    rgba = torch.full((1, 1, 1, 4), 0.5, requires_grad=True)
    target = torch.zeros(1, 1, 1, 4)
    rgb_mse(rgba, target).backward()
    assert rgba.grad[..., 3].abs().max() == 0 and rgba.grad[..., :3].abs().min() > 0


def test_hard_iou_counts_pixels_and_treats_two_empty_masks_as_equal():
    mask = torch.tensor([[[True, True], [False, False]], [[False, False], [False, False]]])
    target = torch.tensor([[[True, False], [True, False]], [[False, False], [False, False]]])
    assert hard_iou(mask, target).tolist() == pytest.approx([1 / 3, 1.0])


def test_topology_of_the_square():
    topology = MeshTopology.from_faces(SQUARE_FACES, 4)
    assert topology.edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]
    assert topology.degree.tolist() == [3, 2, 3, 2]
    assert topology.face_pairs.tolist() == [[0, 1]]
    assert topology.hinges.tolist() == [[0, 2, 1, 3]]  # the shared diagonal, then the far corners


def test_topology_of_a_closed_mesh_shares_every_edge():
    vertices, faces = icosphere(2)
    topology = MeshTopology.from_faces(faces, len(vertices))
    assert len(topology.edges) == 3 * len(faces) // 2 == len(topology.hinges)
    assert topology.degree.sum().item() == 2 * len(topology.edges)
    pairs = topology.face_pairs
    shared = [set(faces[a].tolist()) & set(faces[b].tolist()) for a, b in pairs.tolist()]
    assert all(len(s) == 2 for s in shared)


def test_edge_length_is_the_mean_unsquared_length():
    topology = MeshTopology.from_faces(SQUARE_FACES, 4)
    assert edge_length(SQUARE, topology).item() == pytest.approx((4 + math.sqrt(2)) / 5)


def test_uniform_laplacian_of_one_triangle():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    topology = MeshTopology.from_faces(torch.tensor([[0, 1, 2]]), 3)
    # v - mean(others): (-1,-1,0), (2,-1,0), (-1,2,0).
    expected = (math.sqrt(2) + 2 * math.sqrt(5)) / 3
    assert uniform_laplacian(vertices, topology).item() == pytest.approx(expected)


def test_uniform_laplacian_ignores_unused_vertices_and_is_zero_on_a_flat_regular_fan():
    # A hexagon fan: the centre is the mean of its ring, the unused vertex 7 adds 0 (not NaN).
    ring = [[math.cos(k * math.pi / 3), math.sin(k * math.pi / 3), 0.0] for k in range(6)]
    vertices = torch.tensor([[0.0, 0.0, 0.0]] + ring + [[5.0, 5.0, 5.0]])
    faces = torch.tensor([[0, k, k % 6 + 1] for k in range(1, 7)])
    topology = MeshTopology.from_faces(faces, 8)
    per_vertex = uniform_laplacian(vertices, topology) * 8
    ring_term = torch.tensor(ring[0]) - (torch.tensor(ring[1]) + torch.tensor(ring[5])) / 3  # centre is 0
    assert per_vertex.item() == pytest.approx(6 * ring_term.norm().item(), rel=1e-5)


def test_normal_consistency_flat_and_folded():
    topology = MeshTopology.from_faces(SQUARE_FACES, 4)
    assert normal_consistency(SQUARE, SQUARE_FACES, topology).item() == pytest.approx(0.0, abs=1e-7)
    # Lifting corner 3 by 1 tilts face (0,2,3) to normal (1,-1,1)/√3 against (0,0,1): cos = 1/√3.
    value = normal_consistency(folded(1.0), SQUARE_FACES, topology).item()
    assert value == pytest.approx(1 - 1 / math.sqrt(3))


def test_flatten_loss_flat_right_angle_and_fully_folded():
    topology = MeshTopology.from_faces(SQUARE_FACES, 4)
    assert flatten_loss(SQUARE, topology).item() == pytest.approx(0.0, abs=1e-7)
    # Corner 3 straight above the diagonal's midpoint's perpendicular: the two wings at 90°.
    right = SQUARE.clone()
    right[3] = torch.tensor([0.5, 0.5, math.sqrt(0.5)])
    assert flatten_loss(right, topology).item() == pytest.approx(1.0, abs=1e-6)
    # Corner 3 mirrored onto corner 1's side: the wings coincide, cos = 1, loss (1 + 1)² = 4.
    closed = SQUARE.clone()
    closed[3] = torch.tensor([1.0, 0.0, 0.0]) + torch.tensor([0.0, 0.0, 1e-3])
    assert flatten_loss(closed, topology).item() == pytest.approx(4.0, abs=1e-4)


@pytest.mark.parametrize("loss", ["laplacian", "flatten", "normal", "edge"])
def test_mesh_losses_have_correct_gradients(loss):
    torch.manual_seed(0)
    vertices, faces = icosphere(1)
    vertices = (vertices.double() + 0.05 * torch.randn_like(vertices.double())).requires_grad_()
    topology = MeshTopology.from_faces(faces, len(vertices))
    functions = {"laplacian": lambda v: uniform_laplacian(v, topology), "flatten": lambda v: flatten_loss(v, topology),
                 "normal": lambda v: normal_consistency(v, faces, topology), "edge": lambda v: edge_length(v, topology)}
    assert torch.autograd.gradcheck(functions[loss], (vertices,), eps=1e-6, atol=1e-6)
