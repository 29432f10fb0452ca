"""Multi-process data parallelism: ``examples/distributed_training.py`` as 2 processes x 4 CPU
devices (``jax.distributed`` over localhost, gloo collectives) against the same script as one
process with 8 devices and with 1, on the same global batches.

Each run is a fresh Python process (the device count and ``jax.distributed.initialize`` must come
before JAX starts), except the 1-device run, which calls the example's ``main`` in this process.
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "distributed_training.py"
STEPS = 5
RTOL = 1e-6  # float32 parameters after STEPS Adam steps
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
        env.pop(name, None)  # the example reads the first three; the device count is a flag
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(out: pathlib.Path, method: str, devices: int, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, str(EXAMPLE), "--steps", str(STEPS), "--method", method]
    cmd += ["--cpu-devices", str(devices), "--out", str(out), *flags]
    return subprocess.Popen(
        cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(procs: list, timeout: float = 240) -> list:
    """Waits for every process; on a failure or a timeout kills the others and reports."""
    deadline, logs = time.monotonic() + timeout, []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            logs.append(out)
            assert proc.returncode == 0, f"{proc.args}\n{out[-4000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return logs


def _load(out: pathlib.Path, process: int = 0) -> dict:
    with np.load(out / f"params_{process}.npz") as f:
        return dict(f)


def _runs(root: pathlib.Path, method: str, *flags_2x4: str) -> dict:
    """Runs 2 processes x 4 devices and 1 process x 8 devices side by side; their output dirs."""
    port = _free_port()
    dirs = {"2x4": root / f"{method}_2x4", "1x8": root / f"{method}_1x8"}
    coordinator = ("--coordinator-address", f"localhost:{port}", "--num-processes", "2")
    coordinator += flags_2x4
    t0 = time.perf_counter()
    procs = [
        _start(dirs["2x4"], method, 4, *coordinator, "--process-id", "0"),
        _start(dirs["2x4"], method, 4, *coordinator, "--process-id", "1"),
        _start(dirs["1x8"], method, 8),
    ]
    logs = _finish(procs)
    print(f"{method}: 3 processes in {time.perf_counter() - t0:.1f} s")
    assert "loss" in logs[0] and "loss" not in logs[1]  # process 0 prints, process 1 does not
    return dirs


def _assert_close(params: dict, reference: dict) -> float:
    """Every leaf within RTOL of the reference, relative to the leaf's largest entry."""
    assert params.keys() == reference.keys()
    worst = 0.0
    for name, ref in reference.items():
        scale = float(np.max(np.abs(ref)))
        np.testing.assert_allclose(params[name], ref, rtol=RTOL, atol=RTOL * scale, err_msg=name)
        worst = max(worst, float(np.max(np.abs(params[name] - ref))) / scale)
    return worst


def _count(hlo: str) -> dict:
    return {c: len(re.findall(rf"\b{c}(?:-start)?\(", hlo)) for c in COLLECTIVES}


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.-]+) \(.*\{$")
_CALLED = re.compile(
    r"(?:condition|body|to_apply|calls|branch_computations)=\{?([^}\s,]+(?:, ?%[\w.-]+)*)"
)


def _computations(hlo: str) -> dict:
    """The computations of an HLO module's text: name -> its lines."""
    comps, name = {}, None
    for line in hlo.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            name = m.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return comps


def _loop_computations(hlo: str) -> set:
    """Every computation run inside a ``while`` loop (bodies, conditions and what they call)."""
    comps = _computations(hlo)

    def called(lines):
        for line in lines:
            for group in _CALLED.findall(line):
                yield from (c.strip().lstrip("%") for c in group.split(","))

    todo = [
        c
        for lines in comps.values()
        for line in lines
        if " while(" in line
        for c in called([line])
        if c
    ]
    inside = set()
    while todo:
        c = todo.pop()
        if c in inside or c not in comps:
            continue
        inside.add(c)
        todo.extend(called(comps[c]))
    return inside


_LOOP_HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(%a, %b)
}

%body (p: (s32[], f32[])) -> (s32[], f32[]) {
  %v = f32[] get-tuple-element(%p), index=1
  %r = f32[] all-reduce(%v), replica_groups={}, to_apply=%add
  ROOT %t = (s32[], f32[]) tuple(%i, %r)
}

%cond (p: (s32[], f32[])) -> pred[] {
  ROOT %c = pred[] constant(false)
}

ENTRY %main (x: f32[]) -> (s32[], f32[]) {
  %t0 = (s32[], f32[]) tuple(%z, %x)
  ROOT %w = (s32[], f32[]) while(%t0), condition=%cond, body=%body
}
"""


def test_loop_parser_finds_a_collective_in_a_loop():
    # The HLO check below is only as good as its parser: a loop body with an all-reduce is found.
    loops = _loop_computations(_LOOP_HLO)
    assert loops == {"body", "cond", "add"}
    comps = _computations(_LOOP_HLO)
    assert [c for c in sorted(loops) if any(_count(x)["all-reduce"] for x in comps[c])] == ["body"]


@pytest.fixture(scope="module")
def backprop_runs(tmp_path_factory):
    return _runs(tmp_path_factory.mktemp("distributed"), "backprop")


@pytest.mark.slow
def test_two_processes_match_one_process(backprop_runs):
    mp, sp = backprop_runs["2x4"], backprop_runs["1x8"]
    # Replicated parameters: both processes hold the same values, bit for bit.
    p0, p1 = _load(mp, 0), _load(mp, 1)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    worst = _assert_close(p0, _load(sp))
    print(f"2x4 vs 1x8: largest relative parameter difference {worst:.2e}")
    res_mp = json.loads((mp / "result.json").read_text())
    res_sp = json.loads((sp / "result.json").read_text())
    assert (res_mp["processes"], res_mp["devices"]) == (2, 8)
    assert (res_sp["processes"], res_sp["devices"]) == (1, 8)
    np.testing.assert_allclose(res_mp["losses"], res_sp["losses"], rtol=RTOL)
    assert len(res_mp["losses"]) == STEPS and res_mp["losses"][-1] < res_mp["losses"][0]
    # The same program everywhere: one all-reduce (the loss and the gradient, combined by XLA).
    assert res_mp["collectives"] == res_sp["collectives"]


@pytest.mark.slow
def test_sharded_step_communicates_only_the_gradient(backprop_runs):
    # Forward and backward run on each device's rows; no gathers, no permutes; the gradient (and
    # the mean loss) are summed over the batch by XLA's all-reduce, combined into one.
    for run in ("1x8", "2x4"):
        hlo = (backprop_runs[run] / "train_step.hlo.txt").read_text()
        count = _count(hlo)
        print(f"collectives in the {run} train step:", count)
        assert count == {c: int(c == "all-reduce") for c in COLLECTIVES}, count
        # No collective inside any loop. (Lists of 32 items take the loop-free dense structure
        # on CPU, so the step may hold no solver loop at all; longer lists loop per device.)
        loops = _loop_computations(hlo)
        comps = _computations(hlo)
        inside = [c for c in loops if any(_count(line)["all-reduce"] for line in comps[c])]
        assert not inside, inside


@pytest.mark.slow
def test_one_device_in_process_matches(backprop_runs, tmp_path, float32_default):
    # The plain single-process script (here in this process, on its one CPU device): same
    # parameters as 8 devices; only the summation order of the gradient differs.
    import importlib.util

    spec = importlib.util.spec_from_file_location("distributed_training", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    res = example.main(["--steps", str(STEPS), "--out", str(tmp_path)])
    assert (res["processes"], res["devices"]) == (1, jax.device_count())
    worst = _assert_close(_load(tmp_path), _load(backprop_runs["1x8"]))
    print(f"1x1 vs 1x8: largest relative parameter difference {worst:.2e}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "params_0.npz",
        "result.json",
        "train_step.hlo.txt",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_forward_gradients_sharded_params_two_processes_match_one_process(tmp_path, axis_type):
    # forward_value_and_grad under the same jit: a replicated key gives every device the same
    # tangents, the all-reduce carries the loss and the directional derivatives. The 2-process run
    # also splits parameters and Adam's moments over the 8 devices (--shard-params): the tangents
    # (indexed by element, not by device) and so the result stay the same.
    # The 2-process run uses Explicit or Auto mesh axes; the 1-process reference uses Explicit.
    runs = _runs(tmp_path, "forward", "--shard-params", "--axis-type", axis_type)
    p0, p1 = _load(runs["2x4"], 0), _load(runs["2x4"], 1)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    worst = _assert_close(p0, _load(runs["1x8"]))
    print(f"forward, 2x4 sharded params vs 1x8 replicated: largest relative difference {worst:.2e}")
    res = json.loads((runs["1x8"] / "result.json").read_text())
    assert res["collectives"] == {c: int(c == "all-reduce") for c in COLLECTIVES}
    sharded = json.loads((runs["2x4"] / "result.json").read_text())["collectives"]
    print("collectives with sharded parameters:", sharded)
    assert sharded["all-gather"] > 0 and sharded["all-to-all"] == 0
