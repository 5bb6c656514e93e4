"""Training flushes subnormal floats for speed, on a thread of its own: what a process measures
after a training run keeps them (the masking diagnostics count exact-zero gradients)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.profiles import Recipe
from bench.train import train
from models import parse_name

REPO = Path(__file__).resolve().parents[1]

# a fresh process whose first parallel work is the training run (the data from the cache), as a
# grid's first model: then the run makes OpenMP's pool, and the pool keeps the flag it was made with
AFTER_TRAINING = """
import sys, torch
torch.set_num_threads(2)
from bench.data import load_dataset
from bench.profiles import Recipe
from bench.train import train
from models import parse_name
data = load_dataset(sys.argv[1], sys.argv[2])
train(parse_name("fastnetw8_T1"), Recipe(epochs=1, batch_size=64, lr=0.1, train_subset=256), data, torch.device("cpu"))
# a saturated softmax as a high-T model's: the wrong classes' probabilities e^-92 are subnormal
z = torch.zeros(20000, 10)
z[:, 1:] = -92.0
z.requires_grad_(True)
torch.nn.functional.cross_entropy(z, torch.zeros(20000, dtype=torch.long), reduction="sum").backward()
print((z.grad.abs().sum(1) == 0).sum().item())
"""


def test_a_training_run_leaves_no_flushed_threads_behind(mini_root, mini_cache, mini_data):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # two threads: a pool
    r = subprocess.run([sys.executable, "-c", AFTER_TRAINING, str(mini_root), str(mini_cache)], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "0"  # every row keeps its subnormal gradient (10,000 of 20,000 flushed before)


class Interrupted(Exception):
    pass


def test_an_interrupt_on_the_callers_thread_stops_the_training_thread(mini_data):
    def interrupt(signum, frame):
        raise Interrupted
    old = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        t0 = time.perf_counter()
        with pytest.raises(Interrupted):  # as Ctrl-C or bench.run's SIGTERM handler raise
            train(parse_name("fastnetw8_T1"), Recipe(epochs=50, batch_size=64, lr=0.1), mini_data, "cpu")
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    assert time.perf_counter() - t0 < 20  # not the 50 epochs
    assert not [t for t in threading.enumerate() if t.name == "train"]  # ended, not left running
