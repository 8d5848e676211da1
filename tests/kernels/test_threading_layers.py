"""The fused kernels are safe to call from several Python threads in every numba
threading layer.

numba's ``workqueue`` layer (its fallback where neither OpenMP nor TBB is present) is
not thread-safe: two threads launching ``parallel=True`` kernels at once abort the
process ("Concurrent access has been detected", exit 134). ``omp`` and ``tbb`` are.
Each layer runs in a fresh interpreter (the layer is chosen once per process); a layer
this machine lacks is skipped.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

LACKS_LAYER = 77  # the script's exit status when numba cannot load the requested layer

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    import torch
    import ropelab
    from ropelab import RopeConfig, apply_rope, apply_rope_, kernels, rope_tables

    if kernels.backend() != "numba":  # a layer numba cannot start leaves the reference path
        print(kernels.backend_note())
        sys.exit(LACKS_LAYER if "threading layer" in kernels.backend_note() else 1)
    config = RopeConfig(64)
    x0 = np.random.default_rng(0).standard_normal((4, 8, 512, 64)).astype(np.float32)
    assert x0.size >= kernels.PARALLEL_MIN_ELEMENTS  # the parallel kernels, not the serial ones
    cos, sin = rope_tables(config, np.arange(512))
    try:
        want = apply_rope(x0, cos, sin, layout="interleaved")  # first launch picks the layer
    except ValueError as err:  # "No threading layer could be loaded"
        print(err)
        sys.exit(LACKS_LAYER)
    import numba
    print("layer", numba.threading_layer(), flush=True)
    errors = []

    def work():
        try:
            for _ in range(30):
                x = x0.copy()
                apply_rope_(x, cos, sin, layout="interleaved")
                assert np.array_equal(x, want)
                assert np.array_equal(apply_rope(x0, cos, sin, layout="interleaved"), want)
                t = torch.from_numpy(x0.copy())
                apply_rope_(t, torch.from_numpy(cos), torch.from_numpy(sin), layout="interleaved")
                assert np.array_equal(t.numpy(), want)
        except BaseException as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    print("ok", flush=True)
    """
)


def _run(layer):
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("ROPELAB_DISABLE_NUMBA", None)
    script = f"LACKS_LAYER = {LACKS_LAYER}\n" + SCRIPT
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)


def _check(layer):
    done = _run(layer)
    if done.returncode == LACKS_LAYER:
        pytest.skip(f"numba's {layer} threading layer is not available here: {done.stdout.strip()}")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert f"layer {layer}" in done.stdout and "ok" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["omp", "tbb"])
def test_threads_in_a_thread_safe_layer(layer):
    _check(layer)


@pytest.mark.slow
def test_threads_in_the_workqueue_layer():
    _check("workqueue")
