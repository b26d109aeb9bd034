"""1 vs 2 intra-op threads for a LeanLoop replica of the training loop, interleaved, 5 passes:
python bench/scratch/threads_ab.py (shows the OpenMP collapse on a loaded 2-core machine)."""
import sys, statistics, torch
sys.path[:0] = ["bench", "src"]
from common import fashion_arrays
from lean_loop import LeanLoop
from contenders import torch_mlp
from scenario_frozen import _hidden2_features, NEW
torch.set_num_interop_threads(1)
data, _ = fashion_arrays()
x, y = data.train.x, data.train.y
feats = _hidden2_features(x)
cases = {"cached head b200": (lambda: torch_mlp(NEW[2:], flatten=False), feats, 200),
         "mlp b50": (lambda: torch_mlp([784, 300, 100, 10]), x, 50),
         "mlp b200": (lambda: torch_mlp([784, 300, 100, 10]), x, 200)}
for name, (fn, xx, b) in cases.items():
    loop = LeanLoop("lean", fn, xx, y, batch=b, device=torch.device("cpu"))
    loop.setup()
    res = {1: [], 2: []}
    for t in (1, 2):
        torch.set_num_threads(t); loop.run()
    for p in range(5):
        for t in (1, 2):
            torch.set_num_threads(t); res[t].append(loop.run())
    print(name, {t: round(statistics.median(v), 4) for t, v in res.items()}, {t: [round(a, 3) for a in v] for t, v in res.items()}, flush=True)
