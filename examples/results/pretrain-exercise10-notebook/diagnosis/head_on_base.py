"""Frozen-head accuracy (exercise 10's classifier: 100 epochs, batch 50, Nesterov 0.01/0.95) on a saved
pair-pretrained base, over head seeds; split #2 = MNIST's 5,000 validation images."""
import json, os, sys, time
import torch
sys.path.insert(0, "examples")
torch.set_num_threads(1)
import graftnet as gn
import pretrain_exercise10 as ex

base = gn.load_model(sys.argv[1])
task = ex.split_task()["task"]
out = {"base": sys.argv[1], "pretrain": {k: base.info["pretrain"].get(k) for k in ("epochs", "steps_per_epoch", "batch_size", "shared_towers", "final")}, "runs": []}
for seed in range(int(sys.argv[2])):
    t0 = time.perf_counter(); load = os.getloadavg()[0]
    acc = ex.classify(base, task, 100, seed)
    out["runs"].append({"seed": seed, "test": acc, "seconds": round(time.perf_counter() - t0, 1), "load": load})
    print(seed, round(acc, 2), out["runs"][-1]["seconds"], flush=True)
json.dump(out, open(sys.argv[3], "w"), indent=1)
