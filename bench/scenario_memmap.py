"""(e) Memory-mapped feature cache against the in-RAM cache, same model, same data.

``FeatureCache(memory_budget=0, directory=...)`` always writes the features to a .npy
file and memory-maps it; ``FeatureCache()`` keeps them in RAM. Two cuts: the 11.2.4
model of scenario (b) (hidden1-2 frozen: (N, 50) features) and the same model with only
hidden1 frozen ((N, 300) features, 66 MB). Note: the file fits in the page cache here,
so this measures the memmap path's overhead, not a disk bound larger than RAM.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from common import Scenario, measure, ratio
from contenders import GraftnetFit
from scenario_frozen import BATCH, grafted_model


def _model(frozen: str):
    def make():
        model = grafted_model()
        model.unfreeze("all").freeze(frozen)
        return model
    return make


def _build_seconds(make, data: Any, cache: Any, device: Any) -> float:
    from graftnet.cache import cache_cut

    model = make().to(device)
    prefix, _ = model.split(cache_cut(model) - 1)
    t0 = time.perf_counter()
    cache.features(prefix, data.train, device=device)
    return time.perf_counter() - t0


def scenarios(ctx: Any) -> list[Scenario]:
    from graftnet.cache import FeatureCache

    no_valid, _ = ctx.fashion()
    out = []
    with tempfile.TemporaryDirectory(prefix="graftnet-bench-memmap-") as folder:
        for frozen, width in (("hidden[12]", 50), ("hidden1", 300)):
            s = Scenario(f"memmap_{width}", f"(e) memmap vs RAM cache, frozen {frozen}: ({len(no_valid.train):,}, "
                         f"{width}) features, batch {BATCH}, {ctx.device.type}", reference="graftnet fit, RAM cache")
            make = _model(frozen)
            ram, disk = FeatureCache(), FeatureCache(memory_budget=0, directory=f"{folder}/{width}")
            contenders = [
                GraftnetFit("graftnet fit, RAM cache", make, no_valid, batch=BATCH, device=ctx.device, cache=ram,
                            optimizer="sgd", lr=0.01),
                GraftnetFit("graftnet fit, memmap cache", make, no_valid, batch=BATCH, device=ctx.device, cache=disk,
                            optimizer="sgd", lr=0.01),
                GraftnetFit("graftnet fit, cache=False", make, no_valid, batch=BATCH, device=ctx.device, cache=False,
                            optimizer="sgd", lr=0.01),
            ]
            ctx.log(s.title)
            s.rows = measure(contenders, ctx.passes, log=ctx.log)
            s.figures["disk bytes"] = disk.stats()["disk_bytes"]
            s.figures["build seconds: RAM, memmap (fresh caches)"] = (
                round(_build_seconds(make, no_valid, FeatureCache(), ctx.device), 3),
                round(_build_seconds(make, no_valid, FeatureCache(memory_budget=0, directory=f"{folder}/b{width}"),
                                     ctx.device), 3))
            speed = ratio(s.median("graftnet fit, RAM cache"), s.median("graftnet fit, memmap cache"))
            s.target("memmap speed / RAM speed", speed, 0.5, better="higher")
            out.append(s)
    return out
