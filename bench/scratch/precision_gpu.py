"""fp32 / bf16 / fp16 training on CUDA: accuracy, epoch time, and whether the step was graphed.

    GRAFTNET_DATA=build/bench-data python bench/scratch/precision_gpu.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import torch  # noqa: E402

import graftnet as gn  # noqa: E402
from graftnet import train  # noqa: E402

data = gn.datasets.fashion_mnist().to("cuda")
for precision in ("fp32", "bf16", "fp16"):
    for batch in (200, 50):
        graphed = []
        original = train._GraphedStep.maybe.__func__

        def spy(cls, *args, _orig=original, **kw):
            result = _orig(cls, *args, **kw)
            graphed.append(result is not None)
            return result

        train._GraphedStep.maybe = classmethod(spy)
        torch.manual_seed(0)
        model = gn.Network.mlp(data.input_shape, [300, 100], 10)
        t0 = time.perf_counter()
        history = gn.fit(model, data, epochs=4, batch_size=batch, optimizer=gn.SGD(lr=0.01), seed=0,
                         precision=precision, verbose=False, device="cuda")
        wall = time.perf_counter() - t0
        train._GraphedStep.maybe = classmethod(original)
        test = gn.evaluate(model, data)["accuracy"]
        epoch_s = sorted(history["seconds"][1:])[1]
        print(f"{precision} b{batch}: graphed={graphed[0]} median epoch {epoch_s:.4f}s (epochs 2-4), "
              f"val_acc {history.last('val_accuracy'):.4f}, test_acc {test:.4f}, fit wall {wall:.2f}s", flush=True)
print(torch.__version__, torch.cuda.get_device_name())
