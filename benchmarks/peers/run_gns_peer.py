"""Train geoelements/gns (PyTorch GNS) with its own train.py for a wall-time budget, roll it out, score it.

  .venv/bin/python benchmarks/peers/run_gns_peer.py --data DATA_DIR --out OUT --max-seconds 1800
  .venv/bin/python benchmarks/peers/run_gns_peer.py --data DATA_DIR --out OUT --time-only 50

DATA_DIR is any dataset structnets reads (structnets.physics.formats.open_dataset). The
peer's source is $GNS_SRC or --gns-src (default /work/peers/gns; see setup_gns.sh). See
benchmarks/peers/README.md for what is run and what is reduced.

Steps:

1. to_gns_npz.convert writes DATA_DIR in the peer's layout to OUT/gns_data (periodic
   datasets unwrapped, LagrangeBench wall types mapped to gns's kinematic type 3).
2. Training: their ``gns/train.py --mode train`` (through gns_launch.py, which only swaps
   torch_geometric's radius_graph for structnets'), on CPU, with --batch_size,
   --noise_std, --lr_init, --lr_decay, --lr_decay_steps as given here (their defaults by
   default), --ntraining_steps 10**9 (or --steps) and --nsave_steps 10**9 (so the only
   saves are their step-0 save and their final one). The budget (--max-seconds) is
   counted from the line their train() prints just before its training loop
   (``rank = None, cuda = ...``: the data is loaded and the model built by then). At the
   deadline the process gets SIGINT: their loop catches KeyboardInterrupt and saves
   model-STEP.pt and train_state-STEP.pt with STEP the steps done, which is the model
   rolled out. Their per-step log lines (``step = k/...``, flushed) are time-stamped as
   they arrive to measure steps/s.
3. Rollout: their ``--mode rollout`` on the test split with that model (same
   --noise_std: their normalisation std includes it), over every frame after the 6 input
   frames (the converted metadata's rollout sequence_length is null). Each example's
   rollout is timed between their ``processing example number i`` and ``Predicting
   example i loss`` lines.
4. Scoring, from their rollout_ex{i}.pkl files: rollout MSE (over predicted frames,
   particles and components, minimum-image differences on periodic axes; then the mean
   over trajectories), mse5/mse20 likewise over the first 5/20 predicted frames, and the
   constant-velocity baseline x_{5+k} = x_5 + k (x_5 - x_4) on the same frames (particles
   of gns's kinematic type 3 taken from the truth in both, as their rollout does).

OUT/metrics.json: steps, seconds, steps/s, rollout steps/s, MSEs, neighbour-search share,
settings. OUT/rollouts.npz: predicted_K, truth_K ([T-6, N, D], predicted frames only),
history_K ([6, N, D]) and particle_type_K per test trajectory K (in the dataset's order),
in the dataset's coordinates (wrapped back into the box if they were unwrapped), the
layout benchmarks/lagrangebench/lb_metrics.py reads.

--time-only N: train N steps (no deadline) and roll out min(--rollout-steps, T-6) steps
of the first test trajectory with the model after those steps, and report steps/s of
both (the training figure skips the first --warmup steps); writes OUT/timing.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import to_gns_npz  # noqa: E402

INPUT_SEQUENCE_LENGTH = 6  # gns/train.py (hard-coded)
KINEMATIC_PARTICLE_ID = 3  # gns/train.py (hard-coded)
BIG = 10**9

STEP_RE = re.compile(r"step = (\d+)/\d+, loss = (\S+)")
LOOP_RE = re.compile(r"^rank = .*, cuda = ")
EX_START_RE = re.compile(r"^processing example number (\d+)")
EX_END_RE = re.compile(r"^Predicting example (\d+) loss: (\S+)")
MEAN_LOSS_RE = re.compile(r"^Mean loss on rollout prediction: (\S+)")


def gns_src(arg: str | None) -> Path:
    src = Path(arg or os.environ.get("GNS_SRC") or "/work/peers/gns").resolve()
    if not (src / "gns" / "train.py").is_file():
        sys.exit(f"no geoelements/gns checkout at {src} (gns/train.py missing); run benchmarks/peers/setup_gns.sh")
    return src


class Peer:
    """One run of their train.py through gns_launch.py, stdout lines time-stamped as they arrive."""

    def __init__(self, src: Path, flags: list[str], log: Path, stats: Path, threads: int | None):
        cmd = [sys.executable, str(HERE / "gns_launch.py")]
        if threads:
            cmd += ["--threads", str(threads)]
        cmd += [str(src / "gns" / "train.py"), *flags]
        env = dict(os.environ, PYTHONUNBUFFERED="1", GNS_PEER_STATS=str(stats))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.cmd = cmd
        self.stats = stats
        self.log = open(log, "w")
        self.errlog = open(log.with_suffix(".stderr.log"), "w")
        self.log.write("# " + " ".join(cmd) + "\n")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.errlog, text=True, env=env, cwd=str(log.parent), bufsize=1
        )
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t = time.perf_counter()
            self.log.write(f"{t - self.t0:.4f} {line}")
            self.lines.put((t, line.rstrip("\n")))
        self.lines.put(None)

    def events(self, poll: float = 0.2):
        """Yields (time, line) or (time, None) every ``poll`` seconds without output; ends at EOF."""
        while True:
            try:
                item = self.lines.get(timeout=poll)
            except queue.Empty:
                yield time.perf_counter(), None
                continue
            if item is None:
                return
            yield item

    def finish(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(timeout=10)
        self.log.close()
        self.errlog.close()
        if rc != 0:
            tail = Path(self.errlog.name).read_text()[-3000:]
            raise SystemExit(f"peer exited with {rc}: {' '.join(self.cmd)}\n--- stderr tail ---\n{tail}")
        return rc

    def neighbour_stats(self) -> dict:
        return json.loads(self.stats.read_text()) if self.stats.is_file() else {}


def neighbour_share(nb: dict, seconds: float) -> float | None:
    """Share of ``seconds`` spent in radius_graph, leaving out its first call (one-off imports)."""
    if not nb or not seconds > 0 or nb.get("radius_graph_calls", 0) < 2:
        return None
    return (nb["radius_graph_seconds"] - (nb.get("radius_graph_first_call_seconds") or 0.0)) / seconds


def train(args, src: Path, data: Path, out: Path, steps: int | None, deadline_s: float | None) -> dict:
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    for old in glob.glob(str(models / "*.pt")):
        os.remove(old)
    flags = [
        "--mode",
        "train",
        f"--data_path={data}/",
        f"--model_path={models}/",
        f"--ntraining_steps={steps if steps else BIG}",
        f"--nsave_steps={BIG}",
        f"--batch_size={args.batch_size}",
        f"--noise_std={args.noise_std}",
        f"--lr_init={args.lr_init}",
        f"--lr_decay={args.lr_decay}",
        f"--lr_decay_steps={args.lr_decay_steps}",
        *args.peer_flag,
    ]
    peer = Peer(src, flags, out / "logs" / "train.log", out / "logs" / "train_neighbours.json", args.threads)
    loop_start = None
    step_times: list[tuple[float, int, float]] = []
    interrupted_at = None
    for t, line in peer.events():
        if line is not None:
            if loop_start is None and LOOP_RE.match(line):
                loop_start = t
            m = STEP_RE.search(line)
            if m:
                step_times.append((t, int(m.group(1)), float(m.group(2))))
        if (
            deadline_s is not None
            and interrupted_at is None
            and loop_start is not None
            and step_times
            and t - loop_start >= deadline_s
        ):
            peer.proc.send_signal(signal.SIGINT)
            interrupted_at = t
    end = time.perf_counter()
    peer.finish()
    if loop_start is None or not step_times:
        raise SystemExit(f"training printed no steps; see {out / 'logs'}")
    saved = sorted(glob.glob(str(models / "model-*.pt")), key=lambda p: int(re.search(r"model-(\d+)\.pt$", p).group(1)))
    final = Path(saved[-1])
    steps_done = int(re.search(r"model-(\d+)\.pt$", final.name).group(1))
    stop = interrupted_at if interrupted_at is not None else step_times[-1][0]
    seconds = stop - loop_start
    w = min(args.warmup, max(len(step_times) - 2, 0))
    (t_a, s_a, _), (t_b, s_b, _) = step_times[w], step_times[-1]
    steady = (s_b - s_a) / (t_b - t_a) if t_b > t_a else None
    nb = peer.neighbour_stats()
    losses = [x[2] for x in step_times[-100:]]
    return {
        "model_file": final.name,
        "train_steps": steps_done,
        "train_seconds": seconds,
        "train_steps_per_s": steps_done / seconds if seconds > 0 else None,
        "train_steps_per_s_after_warmup": steady,
        "warmup_steps_skipped": s_a,
        "startup_seconds": loop_start - peer.t0,
        "final_save_seconds": end - stop,
        "stopped_by": "deadline (SIGINT)" if interrupted_at is not None else "step count",
        "train_loss_last100_mean": float(np.mean(losses)),
        "train_neighbour_search_seconds": nb.get("radius_graph_seconds"),
        "train_neighbour_search_first_call_seconds": nb.get("radius_graph_first_call_seconds"),
        "train_neighbour_search_calls": nb.get("radius_graph_calls"),
        "train_neighbour_search_share": neighbour_share(nb, seconds),
        "torch_threads": nb.get("torch_threads"),
    }


def rollout(args, src: Path, data: Path, out: Path, model_file: str) -> dict:
    raw = out / "rollouts_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in glob.glob(str(raw / "*.pkl")):
        os.remove(old)
    flags = [
        "--mode",
        "rollout",
        f"--data_path={data}/",
        f"--model_path={out / 'models'}/",
        f"--model_file={model_file}",
        f"--output_path={raw}/",
        "--output_filename=rollout",
        f"--noise_std={args.noise_std}",
        *args.peer_flag,
    ]
    peer = Peer(src, flags, out / "logs" / "rollout.log", out / "logs" / "rollout_neighbours.json", args.threads)
    starts, ends, peer_mean = {}, {}, None
    for t, line in peer.events():
        if line is None:
            continue
        if m := EX_START_RE.match(line):
            starts[int(m.group(1))] = t
        elif m := EX_END_RE.match(line):
            ends[int(m.group(1))] = t
        elif m := MEAN_LOSS_RE.match(line):
            peer_mean = float(m.group(1).replace("tensor(", "").rstrip(")"))
    total = time.perf_counter() - peer.t0
    peer.finish()
    files = sorted(glob.glob(str(raw / "rollout_ex*.pkl")), key=lambda p: int(re.search(r"ex(\d+)\.pkl$", p).group(1)))
    examples = []
    for path in files:
        with open(path, "rb") as f:
            examples.append(pickle.load(f))
    nsteps = [ex["predicted_rollout"].shape[0] for ex in examples]
    seconds = sum(ends[i] - starts[i] for i in range(len(examples)))
    nb = peer.neighbour_stats()
    return {
        "examples": examples,
        "rollout_steps": int(sum(nsteps)),
        "rollout_seconds": seconds,
        "rollout_steps_per_s": sum(nsteps) / seconds if seconds > 0 else None,
        "rollout_process_seconds": total,
        "rollout_neighbour_search_seconds": nb.get("radius_graph_seconds"),
        "rollout_neighbour_search_first_call_seconds": nb.get("radius_graph_first_call_seconds"),
        "rollout_neighbour_search_share": neighbour_share(nb, seconds),
        "peer_reported_mean_rollout_loss": peer_mean,
    }


def score(examples: list[dict], metadata: dict, out: Path | None) -> dict:
    bounds = np.asarray(metadata["bounds"], dtype=np.float64)
    box = bounds[:, 1] - bounds[:, 0]
    periodic = np.asarray(metadata.get("periodic_boundary_conditions") or [False] * len(box), dtype=bool)[: len(box)]

    def diff(a, b):
        d = a - b
        return np.where(periodic, d - box * np.round(d / box), d)

    def wrap(x):
        return np.where(periodic, bounds[:, 0] + np.mod(x - bounds[:, 0], box), x)

    per, arrays = [], {}
    for k, ex in enumerate(examples):
        pred = np.asarray(ex["predicted_rollout"], dtype=np.float64)  # [T-6, N, D]
        truth = np.asarray(ex["ground_truth_rollout"], dtype=np.float64)
        hist = np.asarray(ex["initial_positions"], dtype=np.float64)  # [6, N, D]
        kinds = np.asarray(ex["particle_types"])
        steps = np.arange(1, pred.shape[0] + 1, dtype=np.float64)[:, None, None]
        base = hist[-1][None] + steps * diff(hist[-1], hist[-2])[None]
        kinematic = (kinds == KINEMATIC_PARTICLE_ID)[None, :, None]
        base = np.where(kinematic, truth, base)
        e_model = (diff(pred, truth) ** 2).mean(axis=(1, 2))  # per frame
        e_base = (diff(base, truth) ** 2).mean(axis=(1, 2))
        per.append(
            {
                "frames": int(pred.shape[0]),
                "particles": int(pred.shape[1]),
                "rollout_mse": float(e_model.mean()),
                "baseline_rollout_mse": float(e_base.mean()),
                "mse5": float(e_model[:5].mean()),
                "mse20": float(e_model[:20].mean()),
                "baseline_mse5": float(e_base[:5].mean()),
                "baseline_mse20": float(e_base[:20].mean()),
            }
        )
        arrays[f"predicted_{k}"] = wrap(pred).astype(np.float32)
        arrays[f"truth_{k}"] = wrap(truth).astype(np.float32)
        arrays[f"history_{k}"] = wrap(hist).astype(np.float32)
        arrays[f"particle_type_{k}"] = kinds
    if out is not None:
        np.savez(out, **arrays)
    keys = per[0].keys() - {"frames", "particles"}
    result = {key: float(np.mean([p[key] for p in per])) for key in sorted(keys)}
    result["per_trajectory"] = per
    result["mse_periodic_min_image"] = bool(periodic.any())
    return result


def model_shape(path: Path) -> dict:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    blocks = {int(m.group(1)) for k in state if (m := re.search(r"_processor\.gnn_stacks\.(\d+)\.", k))}
    latent = (
        state["_encode_process_decode._encoder.node_fn.0.NN-0.weight"].shape[0]
        if "_encode_process_decode._encoder.node_fn.0.NN-0.weight" in state
        else None
    )
    return {
        "message_passing_steps": len(blocks),
        "latent_size": latent,
        "parameters": int(sum(v.numel() for k, v in state.items() if "weight" in k or "bias" in k)),
    }


def source_info(src: Path) -> dict:
    info = {"gns_src": str(src)}
    marker = src / "SOURCE.json"
    if marker.is_file():
        info.update(json.loads(marker.read_text()))
    return info


def settings(args) -> dict:
    return {
        "batch_size": args.batch_size,
        "noise_std": args.noise_std,
        "lr_init": args.lr_init,
        "lr_decay": args.lr_decay,
        "lr_decay_steps": args.lr_decay_steps,
        "threads": args.threads,
        "peer_flags": args.peer_flag,
        "input_sequence_length": INPUT_SEQUENCE_LENGTH,
        "hard_coded_in_peer": {
            "latent_dim": 128,
            "nmessage_passing_steps": 10,
            "nmlp_layers": 2,
            "mlp_hidden_dim": 128,
            "particle_type_embedding_size": 16,
            "nparticle_types": 9,
            "max_num_neighbors": 128,
            "self_edges": True,
            "optimizer": "Adam",
            "loss": "sum over dims of squared normalised-acceleration error, mean over non-kinematic particles",
        },
    }


def truncated_test(data: Path, dst: Path, frames: int) -> int:
    """dst: data's metadata and train.npz, and a test.npz with only the first test trajectory, cut to ``frames``."""
    dst.mkdir(parents=True, exist_ok=True)
    with np.load(data / "test.npz", allow_pickle=True) as f:
        name = list(f.keys())[0]
        pos, kinds = f[name]
    frames = min(frames, pos.shape[0])
    np.savez(dst / "test.npz", **{name: to_gns_npz.gns_entry(pos[:frames], kinds)})
    for other in ("metadata.json", "train.npz"):
        target = dst / other
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to((data / other).resolve())
    return frames - INPUT_SEQUENCE_LENGTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder structnets reads")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--gns-src", default=None, help="geoelements/gns checkout (default $GNS_SRC or /work/peers/gns)"
    )
    parser.add_argument("--max-seconds", type=float, default=None, help="training wall-time budget")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead (or as a cap)")
    parser.add_argument(
        "--time-only",
        type=int,
        default=None,
        metavar="N",
        help="only time N training steps and a rollout; writes OUT/timing.json",
    )
    parser.add_argument("--rollout-steps", type=int, default=50, help="rollout steps timed by --time-only")
    parser.add_argument("--warmup", type=int, default=5, help="training steps left out of the steady steps/s")
    # their train.py flags and defaults
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--noise-std", type=float, default=6.7e-4)
    parser.add_argument("--lr-init", type=float, default=1e-4)
    parser.add_argument("--lr-decay", type=float, default=0.1)
    parser.add_argument("--lr-decay-steps", type=int, default=int(5e6))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--peer-flag", action="append", default=[], help="extra flag passed to their train.py")
    # conversion
    parser.add_argument("--type-map", default=None, help="see to_gns_npz.py")
    parser.add_argument("--no-unwrap", action="store_true", help="see to_gns_npz.py")
    args = parser.parse_args()
    if args.time_only is None and args.max_seconds is None and args.steps is None:
        parser.error("give --max-seconds, --steps or --time-only")

    src = gns_src(args.gns_src)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "gns_data"
    t = time.perf_counter()
    type_map = to_gns_npz.parse_type_map(args.type_map) if args.type_map is not None else None
    conversion = to_gns_npz.convert(args.data.resolve(), data, type_map, unwrap_periodic=not args.no_unwrap)
    conversion["seconds"] = time.perf_counter() - t
    metadata = json.loads((data / "metadata.json").read_text())
    common = {
        "peer": "geoelements/gns (PyTorch GNS, train.py)",
        **source_info(src),
        "data": str(args.data),
        "conversion": conversion,
        "settings": settings(args),
    }

    if args.time_only is not None:
        tr = train(args, src, data, out, steps=args.time_only, deadline_s=None)
        tdata = out / "time_data"
        nsteps = truncated_test(data, tdata, INPUT_SEQUENCE_LENGTH + args.rollout_steps)
        ro = rollout(args, src, tdata, out, tr["model_file"])
        ro.pop("examples")
        result = {
            **common,
            "mode": "time-only",
            **tr,
            "rollout_steps_timed": nsteps,
            **ro,
            "model": model_shape(out / "models" / tr["model_file"]),
            "note": "rollout of a barely trained model (neighbour counts may differ from a trained one's)",
        }
        (out / "timing.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("conversion", "settings")}, indent=1))
        return

    tr = train(args, src, data, out, steps=args.steps, deadline_s=args.max_seconds)
    ro = rollout(args, src, data, out, tr["model_file"])
    examples = ro.pop("examples")
    sc = score(examples, metadata, out / "rollouts.npz")
    result = {
        **common,
        "mode": "train",
        "max_seconds": args.max_seconds,
        **tr,
        **ro,
        **sc,
        "model": model_shape(out / "models" / tr["model_file"]),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    brief = {
        k: result[k]
        for k in (
            "train_steps",
            "train_seconds",
            "train_steps_per_s",
            "rollout_steps_per_s",
            "rollout_mse",
            "baseline_rollout_mse",
            "train_neighbour_search_share",
        )
    }
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
