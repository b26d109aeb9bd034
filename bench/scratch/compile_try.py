"""torch.compile of forward+loss (and of opt.step) for the MLP or the cached head on the CPU:
THREADS=1 python compile_try.py frozen 200 none|fwd|opt|both (prints compile time and us/step)."""
import time, torch, sys, os, statistics
import torch.nn.functional as F
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
from graftnet.network import Network
from graftnet.data import fashion_mnist
d = fashion_mnist(); X, Y = d.train.x, d.train.y
kind, B, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "mlp":
    net = Network.mlp((1, 28, 28), [300, 100], 10); start = 0; x = X
else:
    net = Network.mlp((1, 28, 28), [300, 50, 50, 20], 10).freeze("flatten|hidden[12]"); start = 3
    with torch.inference_mode(): x = net(X, stop=3).clone()
mods = torch.nn.Sequential(*list(net._modules.values())[start:])
opt = torch.optim.SGD([p for p in mods.parameters() if p.requires_grad], lr=0.01, foreach=True)
def fwd(xb, yb):
    out = mods(xb)
    loss = F.cross_entropy(out, yb, reduction="sum")
    return loss, out
step_opt = opt.step
if mode in ("fwd", "both"):
    fwd = torch.compile(fwd)
if mode in ("opt", "both"):
    step_opt = torch.compile(opt.step)
def epoch():
    t = time.perf_counter()
    n = len(x); perm = torch.randperm(n); xs, ys = x[perm], Y[perm]
    losses = torch.empty(n // B); correct = torch.zeros((), dtype=torch.long)
    for s in range(n // B):
        xb, yb = xs[s*B:(s+1)*B], ys[s*B:(s+1)*B]
        loss, out = fwd(xb, yb)
        opt.zero_grad(set_to_none=True)
        (loss / B).backward()
        step_opt()
        with torch.no_grad():
            losses[s] = loss.detach(); correct += (out.detach().argmax(1) == yb).sum()
    float(losses.sum()); int(correct)
    return time.perf_counter() - t
t = time.perf_counter(); first = epoch(); print("first epoch (incl compile)", round(first, 2))
ts = [epoch() for _ in range(5)]
print(kind, B, mode, "median", round(statistics.median(ts), 4), "min", round(min(ts), 4), "us/step", round(statistics.median(ts) / (len(x)//B) * 1e6, 1))
