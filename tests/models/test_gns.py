import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import structnets
from structnets.models.gns import GNSConfig, LearnedSimulator

EXACT = dict(atol=1e-10, rtol=0)


@dataclass(frozen=True)
class _Metadata:
    """The simulator's needs, and nothing from the physics field."""

    bounds: tuple = ((0.1, 0.9), (0.1, 0.9))
    default_connectivity_radius: float = 0.08
    dim: int = 2
    vel_mean: tuple = (0.0, 1e-3)
    vel_std: tuple = (1e-2, 2e-2)
    acc_mean: tuple = (0.0, -1e-3)
    acc_std: tuple = (1e-3, 2e-3)


def _model(steps: int = 3) -> LearnedSimulator:
    return LearnedSimulator(_Metadata(), GNSConfig(latent_size=16, message_passing_steps=steps)).double()


def _history(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    start = 0.3 + 0.4 * torch.rand(n, 1, 2, dtype=torch.double)
    history = start + torch.randn(n, 6, 2, dtype=torch.double).cumsum(1) * 3e-3
    return history, torch.randint(0, 9, (n,))


def _forward_by_hand(model: LearnedSimulator, history: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """Sanchez-Gonzalez et al.'s encode-process-decode, the processor written as its own loop."""
    position = history[:, -1]
    velocity = (history[:, 1:] - history[:, :-1] - model.vel_mean) / model.vel_std
    walls = torch.cat([position - model.bounds[:, 0], model.bounds[:, 1] - position], -1).div(model.radius).clamp(-1, 1)
    h = model.node_encoder(torch.cat([velocity.flatten(1), model.type_embedding(kinds), walls], -1))
    senders, receivers = model.graph(position)
    displacement = (position[senders] - position[receivers]) / model.radius
    e = model.edge_encoder(torch.cat([displacement, displacement.norm(dim=-1, keepdim=True)], -1))
    for edge_mlp, node_update in zip(model.edge_updates, model.node_updates):
        e = e + nn.Sequential.forward(edge_mlp, torch.cat([e, h[senders], h[receivers]], -1))
        incoming = torch.zeros_like(h).index_add(0, receivers, e)
        h = h + node_update.net(torch.cat([h, incoming], -1))
    return model.decoder(h)


def test_forward_matches_the_processor_written_out():
    model = _model()
    history, kinds = _history()
    assert model.graph(history[:, -1]).shape[1] > 40  # the particles interact
    out = model(history, kinds)
    expected = _forward_by_hand(model, history, kinds)
    assert_close(out, expected, **EXACT)
    ours = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    theirs = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    for a, b in zip(ours, theirs):
        assert_close(a, b, **EXACT)


def test_accelerations_follow_the_particles_when_they_are_reordered():
    model = _model()
    history, kinds = _history()
    perm = torch.randperm(history.shape[0])
    assert_close(model(history[perm], kinds[perm]), model(history, kinds)[perm], **EXACT)


def test_step_is_semi_implicit_euler_and_rollout_feeds_each_step_back():
    model = _model(steps=2)
    history, kinds = _history(12)
    acceleration = model(history, kinds) * model.acc_std + model.acc_mean
    step = model.step(history, kinds)
    assert_close(step, history[:, -1] + (history[:, -1] - history[:, -2]) + acceleration, **EXACT)
    rollout = model.rollout(history.transpose(0, 1), kinds, 3)
    assert rollout.shape == (3, 12, 2)
    for t in range(3):
        assert_close(rollout[t], model.step(history, kinds), **EXACT)
        history = torch.cat([history[:, 1:], rollout[t].unsqueeze(1)], 1)


def test_the_physics_fields_metadata_is_accepted():
    from structnets.physics.particles import SimulationMetadata

    fields = dict(_Metadata().__dict__)
    metadata = SimulationMetadata(dt=0.0025, sequence_length=100, **fields)
    model = LearnedSimulator(metadata, GNSConfig(latent_size=8, message_passing_steps=1))
    assert model.radius == 0.08 and model.metadata is metadata
    assert_close(model.acc_std, torch.tensor([1e-3, 2e-3]))
    assert_close(model.bounds, torch.tensor([[0.1, 0.9], [0.1, 0.9]]))


@dataclass(frozen=True)
class _PeriodicMetadata(_Metadata):
    bounds: tuple = ((0.0, 1.0), (-0.5, 0.5), (0.0, 2.0))
    default_connectivity_radius: float = 0.2
    dim: int = 3
    vel_mean: tuple = (0.0, 0.0, 0.0)
    vel_std: tuple = (1e-2, 1e-2, 1e-2)
    acc_mean: tuple = (0.0, 0.0, 0.0)
    acc_std: tuple = (1e-3, 1e-3, 1e-3)
    periodic_boundary_conditions: tuple = (True, True, False)


def _periodic_case(n: int = 120):
    torch.manual_seed(3)
    model = LearnedSimulator(_PeriodicMetadata(), GNSConfig(latent_size=16, message_passing_steps=2)).double()
    low, high = model.bounds[:, 0].double(), model.bounds[:, 1].double()
    start = low + (high - low) * torch.rand(n, 1, 3, dtype=torch.double)
    history = start + torch.randn(n, 6, 3, dtype=torch.double).cumsum(1) * 5e-3
    return model, model.wrap(history), torch.randint(0, 9, (n,))


def test_a_periodic_simulator_is_unchanged_by_a_shift_around_its_box():
    model, history, kinds = _periodic_case()
    before = model(history, kinds)
    # Shifting every particle along the periodic axes and wrapping them back changes nothing;
    # many particles now sit on the other side of a face from their neighbours and their own past.
    shift = torch.tensor([0.37, 0.81, 0.0], dtype=torch.double)
    shifted = model.wrap(history + shift)
    assert (shifted[:, 1:] - shifted[:, :-1]).abs().max() > 0.5  # raw differences jump across the box
    assert_close(model(shifted, kinds), before, atol=1e-9, rtol=0)
    # Along the axis with walls it is not a symmetry: the wall features see the shift.
    walled = history + torch.tensor([0.0, 0.0, 0.05], dtype=torch.double)
    assert (model(walled, kinds) - before).abs().max() > 1e-4
    # The graph links neighbours through the faces, the minimum image's distance under the radius.
    senders, receivers = model.graph(history[:, -1])
    gap = model.displacement(history[senders, -1], history[receivers, -1])
    assert bool((gap.norm(dim=1) < model.radius).all())
    raw = (history[senders, -1] - history[receivers, -1]).norm(dim=1)
    assert bool((raw > 0.5).any())  # some edges cross a face


def test_a_periodic_step_wraps_and_has_no_wall_features_on_periodic_axes():
    model, history, kinds = _periodic_case()
    # Node inputs: 5 velocities and the type embedding, walls only on the one walled axis.
    assert model.node_encoder[0].in_features == 5 * 3 + 16 + 2
    nxt = model.step(history, kinds)
    low, high = model.bounds[:, 0].double(), model.bounds[:, 1].double()
    assert bool(((nxt[:, :2] >= low[:2]) & (nxt[:, :2] < high[:2])).all())
    # The step is the minimum-image velocity plus the acceleration, wrapped.
    acceleration = model(history, kinds) * model.acc_std + model.acc_mean
    velocity = model.displacement(history[:, -1], history[:, -2])
    assert_close(model.displacement(nxt, history[:, -1]), velocity + acceleration, atol=1e-12, rtol=0)
    truth = model.wrap(history[:, -1] + velocity + 1e-4)
    assert_close(model.target_acceleration(history, truth), torch.full_like(velocity, 1e-4), atol=1e-12, rtol=0)


def test_a_periodic_radius_of_half_the_box_is_refused():
    bad = GNSConfig(latent_size=8, message_passing_steps=1, connectivity_radius=0.5)
    with pytest.raises(ValueError, match=r"radius 0.5 is not below half the periodic box's side on axis 0 \(1\)"):
        LearnedSimulator(_PeriodicMetadata(), bad)
    assert LearnedSimulator(_PeriodicMetadata(), GNSConfig(connectivity_radius=0.3)).radius == 0.3


def test_state_dict_keys_are_those_of_trained_checkpoints():
    model = LearnedSimulator(_Metadata(), GNSConfig(latent_size=8, message_passing_steps=2, mlp_layers=1))
    mlp = ["0", "2", "3"]  # Linear, (ReLU), Linear, LayerNorm
    expected = {"type_embedding"} | {f"{name}.{k}" for name in ("node_encoder", "edge_encoder") for k in mlp}
    expected |= {f"edge_updates.{i}.{k}" for i in range(2) for k in mlp}
    expected |= {f"node_updates.{i}.net.{k}" for i in range(2) for k in mlp}
    expected |= {"decoder.0", "decoder.2"}
    assert {key.rsplit(".", 1)[0] for key in model.state_dict()} == expected
    assert len(model.state_dict()) == 41


def test_a_given_graph_and_a_pyg_container_are_taken():
    from torch_geometric.data import Batch, Data

    model = _model()
    history, kinds = _history()
    expected = model(history, kinds)
    graph = model.graph(history[:, -1])
    assert_close(model(history, kinds, edge_index=graph), expected, **EXACT)
    assert_close(model(Data(history=history, particle_type=kinds)), expected, **EXACT)
    assert_close(model(Data(history=history, particle_type=kinds, edge_index=graph)), expected, **EXACT)
    # A graph of one's own is used as given: without edges the particles do not interact.
    alone = model(history, kinds, edge_index=torch.zeros(2, 0, dtype=torch.long))
    assert not torch.allclose(alone, expected)
    # Two simulations in one Batch, their neighbourhoods kept apart by batch; windows carry no edges.
    other, other_kinds = _history(25)
    empty = torch.zeros(2, 0, dtype=torch.long)
    batch = Batch.from_data_list(
        [
            Data(history=h, particle_type=k, edge_index=empty, num_nodes=h.shape[0])
            for h, k in ((history, kinds), (other, other_kinds))
        ]
    )
    assert_close(model(batch), torch.cat([expected, model(other, other_kinds)]), **EXACT)
    assert_close(model.step(batch), torch.cat([model.step(history, kinds), model.step(other, other_kinds)]), **EXACT)
    with pytest.raises(ValueError, match="call model\\(data\\)"):
        model(batch, kinds)


def test_export_and_onnx_take_any_number_of_particles_and_edges(tmp_path):
    """The one-step model on a graph computed outside, exported once, matches eager on other sizes."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _model().float().eval()
    (history, kinds), (other, other_kinds) = _history(40), _history(70)
    history, other = history.float(), other.float()
    graph, other_graph = model.graph(history[:, -1]), model.graph(other[:, -1])
    assert other_graph.shape[1] != graph.shape[1]
    particles, edges = torch.export.Dim("particles"), torch.export.Dim("edges")
    shapes = {"history": {0: particles}, "particle_type": {0: particles}, "edge_index": {1: edges}}
    kwargs = {"edge_index": graph}
    program = torch.export.export(model, (history, kinds), kwargs=kwargs, dynamic_shapes=shapes)
    expected = model(other, other_kinds)
    assert_close(program.module()(other, other_kinds, edge_index=other_graph), expected, atol=1e-5, rtol=1e-5)
    onnx = torch.onnx.export(model, (history, kinds), kwargs=kwargs, dynamic_shapes=shapes, dynamo=True, verbose=False)
    onnx.save(str(tmp_path / "gns.onnx"))
    session = ort.InferenceSession(str(tmp_path / "gns.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"history": other.numpy(), "particle_type": other_kinds.numpy(), "edge_index": other_graph.numpy()}
    assert_close(torch.from_numpy(session.run(None, feeds)[0]), expected.detach(), atol=1e-5, rtol=1e-5)


FIELDS = {"chem", "lidar", "physics", "text", "sequences", "train", "cli"}


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of the modules a file imports (``from .. import x`` counts ``x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_models_and_building_blocks_import_no_field():
    """Imports point one way: a model never imports a field package (nor the engine, nor the CLI)."""
    root = Path(structnets.__file__).parent
    for layer in ("models", "nn"):
        for path in sorted((root / layer).glob("*.py")):
            for name in _imported_modules(path, f"structnets.{layer}"):
                parts = name.split(".")
                assert not (parts[0] == "structnets" and parts[1:2] and parts[1] in FIELDS), f"{path} imports {name}"
