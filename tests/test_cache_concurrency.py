"""Issue #16 item 6: processes sharing one fresh cache build each entry once and all reuse it.

Real processes, started together: each waits for a go-file, then builds the same tokenized task and dense
baseline (tests/cache_helper.py slows both trainings by a second so that, without the entry lock, the builds
overlap and each process trains its own copy: two tokenizers, two baselines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("cache_helper.py")


def test_concurrent_builders_of_one_cache_entry_train_it_once(tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1] / "src"),
                                                                   os.environ.get("PYTHONPATH")) if p)}
    procs = [subprocess.Popen([sys.executable, str(HELPER), str(cache), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    trained = sorted(t for o in outs for t in o["trained"])
    assert trained == ["baseline", "tokenizer"], outs  # each entry built once, by whichever process came first
    assert len({o["tokenizer"] for o in outs}) == 1 and len({o["key"] for o in outs}) == 1
    assert len({o["weights"] for o in outs}) == 1  # the same dense model for the same config
    assert len(list((cache / "tasks").iterdir())) == 1 and len(list((cache / "baselines").iterdir())) == 1
