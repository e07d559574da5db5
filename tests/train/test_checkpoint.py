"""One checkpoint schema and one run-directory schema: round trips, refusals, and interrupted runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.testing import assert_close

from structnets.models import MPNN, MPNNConfig
from structnets.train.checkpoint import (
    CheckpointError,
    RunDirectory,
    atomic_write,
    load_checkpoint,
    load_model,
    open_run,
    save_checkpoint,
)


def _mpnn() -> MPNN:
    return MPNN(MPNNConfig(atom_features=5, bond_features=3, hidden_size=8, num_targets=2))


def _graph():
    x, edge_attr = torch.randn(4, 5), torch.randn(6, 3)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    return x, edge_index, edge_attr, torch.zeros(4, dtype=torch.long), 1


def test_a_model_round_trips_through_load_model(tmp_path):
    model = _mpnn().eval()
    save_checkpoint(tmp_path / "model.pt", model, task="molprop", task_config={"epochs": 3}, extra={"names": ["a"]})
    again, checkpoint = load_model(tmp_path, task="molprop")  # the run directory or the file
    assert type(again) is MPNN and not again.training
    assert checkpoint.task == "molprop" and checkpoint.extra == {"names": ["a"]}
    assert checkpoint.task_config == {"epochs": 3} and checkpoint.library_version
    graph = _graph()
    with torch.no_grad():
        assert_close(again(*graph), model(*graph))


def test_a_checkpoint_of_another_task_is_one_line_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "model.pt", _mpnn(), task="molprop")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "model.pt", task="detect")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "model.pt") in message and "'molprop'" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, damage):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _mpnn(), task="molprop")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "structnets", "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_plain_state_dict_is_not_a_structnets_checkpoint(tmp_path):
    torch.save(_mpnn().state_dict(), tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="not a structnets checkpoint"):
        load_checkpoint(tmp_path / "old.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_finished_run_opens_and_a_changed_one_does_not(tmp_path):
    run = RunDirectory.start(tmp_path / "run", task="molprop")
    run.write_json("metrics.json", {"rmse": 1.0})
    run.save_model(_mpnn(), task_config={"x": 1})
    with pytest.raises(CheckpointError, match="incomplete"):
        open_run(tmp_path / "run", task="molprop")
    run.finish()
    assert open_run(tmp_path / "run" / "model.pt", task="molprop") == tmp_path / "run"
    with pytest.raises(CheckpointError, match="a run of task 'molprop'"):
        open_run(tmp_path / "run", task="simulate")
    (tmp_path / "run" / "metrics.json").write_text('{"rmse": 0.5}\n')
    with pytest.raises(CheckpointError, match="metrics.json: changed"):
        open_run(tmp_path / "run", task="molprop")


def test_out_naming_a_file_fails_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        RunDirectory.check_target(tmp_path / "taken")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write(tmp_path / "a.json", "{}")
    atomic_write(tmp_path / "a.json", '{"b": 1}')
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and json.loads((tmp_path / "a.json").read_text())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it


# A run writes metrics.json, then a large model.pt, then finishes; `ident` ties the two together.
_CHILD = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from structnets.models import MPNN, MPNNConfig
    from structnets.train.checkpoint import RunDirectory
    out, ident = sys.argv[1], int(sys.argv[2])
    model = MPNN(MPNNConfig(atom_features=64, bond_features=64, hidden_size=128, num_targets=1))
    run = RunDirectory.start(out, task="molprop")
    run.write_json("metrics.json", {"ident": ident})
    for name in ("a", "b", "c"):
        run.save_model(model, extra={"ident": ident}, name=f"copy_{name}.pt")
    run.save_model(model, extra={"ident": ident})
    run.finish()
    """
)


def test_a_run_killed_while_saving_is_left_as_it_was_or_marked_incomplete(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, str(script), str(out), "0"], env=env).returncode == 0
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(tmp_path / "timing"), "9"], env=env, check=True)
    duration = time.perf_counter() - started
    outcomes = set()
    for trial in range(1, 7):
        child = subprocess.Popen([sys.executable, str(script), str(out), str(trial)], env=env)
        time.sleep(duration * trial / 6.5)
        child.send_signal(signal.SIGKILL)
        child.wait()
        try:
            path = open_run(out, task="molprop")
        except CheckpointError as error:
            assert "incomplete" in str(error) and "\n" not in str(error)
            outcomes.add("incomplete")
            continue
        # A complete run: its model and its metrics are the same run's (the old one or the new one).
        ident = json.loads((path / "metrics.json").read_text())["ident"]
        assert load_checkpoint(path).extra["ident"] == ident
        outcomes.add("complete")
        # The next trial starts from a complete run again, as the first did.
    assert outcomes  # every trial ended in one of the two allowed states
    for leftover in out.iterdir():
        assert not leftover.name.endswith(".tmp") or leftover.name.startswith(".")
