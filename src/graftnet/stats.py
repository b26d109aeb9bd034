"""The statistics a study's verdicts rest on, over a handful of seeds.

A study runs each variant on the same seeds as scratch, so a comparison is a set of
paired per-seed differences ``d_s = variant_s - scratch_s`` (percentage points)::

    >>> from graftnet import stats
    >>> d = [0.4, 0.9, 0.1, 0.6, 0.5]
    >>> test = stats.paired_test(d)
    >>> round(test.p, 4), round(test.hedges_g, 2)
    (0.0185, 1.37)
    >>> stats.holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    >>> stats.seeds_needed(sd=1.0, delta=1.0)      # seeds to detect a 1-point gain at sd 1
    10

What is used where, and why:

- **Accuracy of a variant**: mean and sd over seeds, with a *percentile bootstrap*
  interval of the mean (:func:`bootstrap_interval`). A percentile interval is made of
  resampled means, so it always lies within the observed values and therefore inside
  [0, 100]; a Student-t interval does not (99.5 ± 0.5 over 3 seeds reaches 100.7).
  Percentile rather than BCa: BCa's acceleration is a jackknife over the seeds, unstable
  with 5 values and undefined when they are all equal (scipy returns NaN there), which is
  exactly the all-100 % case. Over few seeds any bootstrap interval is narrower than the
  t interval (it never sees the tails the seeds missed), so the t bounds are kept too
  (``Interval.t_low``/``t_high``) and no verdict rests on the bootstrap interval.
- **Difference to scratch**: a paired Student-t test (:func:`paired_test`) and its
  t interval; with 5 seeds a sign-flip permutation or Wilcoxon test cannot give a
  two-sided p below 1/16 = 0.0625, so neither could ever reject at 5 %.
- **Several variants against scratch**: Holm's step-down adjustment (:func:`holm`)
  of the paired-t p-values across every comparison in the study, primary included; it
  controls the chance of any false "beats"/"is worse" at 5 % and is never less powerful
  than Bonferroni.
- **Effect size**: the paired (within-seed) standardized difference d_z = mean(d) / sd(d)
  and Hedges' small-sample correction g_z = J(n - 1) · d_z with the exact
  J(m) = Γ(m/2) / (√(m/2) Γ((m - 1)/2)).
- **Seeds needed**: the smallest n for which a two-sided paired t-test at level alpha has
  the asked power against a true difference ``delta`` when the differences have the
  observed sd (:func:`seeds_needed`, noncentral t; G*Power's "matched pairs" gives the
  same numbers, e.g. 34 pairs for d_z = 0.5, alpha 0.05, power 0.8).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "CONFIDENCE", "Interval", "PairedTest", "bootstrap_interval", "differences",
           "hedges_j", "holm", "paired_difference", "paired_test", "power_paired", "seeds_needed", "summarize"]

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # fixed: the same runs give the same report


@dataclass(frozen=True)
class Interval:
    """Mean, standard deviation and a confidence interval of ``n`` values.

    ``method`` says how ``low``/``high`` were made: ``"t"`` (Student t) or
    ``"bootstrap-percentile"`` (then ``t_low``/``t_high`` hold the t interval beside it).
    ``std``, ``low`` and ``high`` are ``None`` when ``n < 2`` (no spread can be estimated).

        >>> summarize([97.0, 98.0, 99.0]).mean, round(summarize([97.0, 98.0, 99.0]).low, 2)
        (98.0, 95.52)
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE
    method: str = "t"
    t_low: float | None = None
    t_high: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self, digits: int = 2, unit: str = "") -> str:
        """``"97.31 ± 0.42 (sd), 95% CI [96.99, 97.63], 10 seeds"`` (or the one value for n = 1)."""
        if self.n == 0:
            return "no runs"
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        if self.std is None:
            return f"{self.mean:.{digits}f}{unit} ({seeds}: no spread or interval)"
        kind = " (bootstrap)" if self.method.startswith("bootstrap") else ""
        return (f"{self.mean:.{digits}f}{unit} ± {self.std:.{digits}f} (sd), "
                f"{self.confidence:.0%} CI{kind} [{self.low:.{digits}f}, {self.high:.{digits}f}], {seeds}")


def _t_half(std: float, n: int, confidence: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean, sample standard deviation (ddof=1) and the Student-t interval of the mean.

        >>> summarize([1.0, 2.0, 3.0, 4.0]).std
        1.2909944487358056
    """
    data = np.asarray(list(values), dtype=float)
    n = len(data)
    if n == 0:
        return Interval(0, math.nan, None, None, None, confidence)
    mean = float(data.mean())
    if n < 2:
        return Interval(1, mean, None, None, None, confidence)
    std = float(data.std(ddof=1))
    half = _t_half(std, n, confidence)
    return Interval(n, mean, std, mean - half, mean + half, confidence)


def bootstrap_interval(values: Iterable[float], confidence: float = CONFIDENCE, *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean, sd and the percentile-bootstrap interval of the mean (resampling the values).

    The interval lies within [min, max] of the values, so accuracies stay inside [0, 100];
    ``t_low``/``t_high`` give the Student-t interval for comparison. Reproducible: the
    resampling uses a fixed ``seed``.

        >>> iv = bootstrap_interval([100.0, 100.0, 100.0])
        >>> (iv.low, iv.high, iv.method)
        (100.0, 100.0, 'bootstrap-percentile')
    """
    data = np.asarray(list(values), dtype=float)
    t = summarize(data, confidence)
    if t.n < 2:
        return dataclasses.replace(t, method="bootstrap-percentile")
    if np.all(data == data[0]):  # every resample has the same mean
        low = high = float(data[0])
    else:
        rng = np.random.default_rng(seed)
        means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)  # (resamples,)
        tail = (1 - confidence) / 2
        low, high = (float(q) for q in np.quantile(means, [tail, 1 - tail]))
        low, high = max(low, float(data.min())), min(high, float(data.max()))  # rounding of the quantile
    return Interval(t.n, t.mean, t.std, low, high, confidence, "bootstrap-percentile", t.low, t.high)


def paired_difference(values: Mapping[Any, float], reference: Mapping[Any, float],
                      confidence: float = CONFIDENCE) -> Interval:
    """Summary (t interval) of ``values[s] - reference[s]`` over the keys (seeds) both have.

        >>> paired_difference({0: 98.0, 1: 99.0}, {0: 97.0, 1: 97.5, 2: 96.0}).mean
        1.25
    """
    return summarize(differences(values, reference), confidence)


def differences(values: Mapping[Any, float], reference: Mapping[Any, float]) -> list[float]:
    """``values[s] - reference[s]`` for the keys both have, in ``values``' order."""
    return [values[key] - reference[key] for key in values if key in reference]


# ---------------------------------------------------------------- tests and effect sizes
@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test on per-seed differences, with the paired effect size.

    ``p`` is ``None`` with fewer than 2 differences; ``cohen_dz``/``hedges_g`` are ``None``
    also when the differences have no spread (every seed moved by the same amount).
    """

    n: int
    mean: float
    sd: float | None
    t: float | None
    p: float | None
    cohen_dz: float | None
    hedges_g: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def hedges_j(df: int) -> float:
    """Hedges' exact small-sample correction J(df) = Γ(df/2) / (√(df/2) Γ((df-1)/2)).

        >>> round(hedges_j(9), 4)      # 1 - 3/(4*9 - 1) = 0.9143 is the usual approximation
        0.9139
    """
    if df < 2:
        return math.nan
    return math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)


def paired_test(diffs: Sequence[float]) -> PairedTest:
    """Student's paired t-test (two-sided, H0: mean difference 0) and d_z / Hedges' g_z.

    The same p as ``scipy.stats.ttest_rel(a, b)`` for ``diffs = a - b``; where the
    differences are all equal (sd 0) p is 0 for a non-zero difference and 1 for none.
    """
    from scipy import stats

    d = np.asarray(list(diffs), dtype=float)
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, None, None, None, None, None)
    mean = float(d.mean())
    if n < 2:
        return PairedTest(1, mean, None, None, None, None, None)
    sd = float(d.std(ddof=1))
    if sd == 0 or not math.isfinite(sd):
        p = 1.0 if mean == 0 else 0.0
        return PairedTest(n, mean, sd, math.copysign(math.inf, mean) if mean else 0.0, p, None, None)
    t = mean / (sd / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), n - 1))
    dz = mean / sd
    return PairedTest(n, mean, sd, t, p, dz, hedges_j(n - 1) * dz)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the order given (``None`` stays ``None``).

    Sorted ascending, the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)); a comparison is significant at
    level alpha when its adjusted p is below alpha (statsmodels' ``multipletests``
    with ``method="holm"`` gives the same values).

        >>> holm([0.01, 0.04, 0.03, 0.005])
        [0.03, 0.06, 0.06, 0.02]
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = round(running, 15)
    return out


# ---------------------------------------------------------------- power
def power_paired(n: int, delta: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with ``n`` pairs against a true mean difference
    ``delta`` when the differences have standard deviation ``sd`` (noncentral t)."""
    from scipy import stats

    if n < 2:
        return math.nan
    if sd == 0:
        return 1.0
    df = n - 1
    noncentrality = abs(delta) / sd * math.sqrt(n)
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))


def seeds_needed(sd: float, delta: float = 1.0, *, alpha: float = ALPHA, power: float = 0.8,
                 limit: int = 100_000) -> int | None:
    """The fewest seeds (pairs, >= 2) that detect a true difference ``delta`` with ``power``
    in a two-sided paired t-test at ``alpha``, when per-seed differences have sd ``sd``.

    ``None`` when even ``limit`` seeds would not do.

        >>> seeds_needed(sd=2.0, delta=1.0)      # d_z = 0.5: G*Power's matched pairs give 34
        34
    """
    if not sd > 0:
        return 2
    if power_paired(2, delta, sd, alpha) >= power:
        return 2
    low, high = 2, 4  # power(low) < power <= power(high): power grows with n
    while power_paired(high, delta, sd, alpha) < power:
        if high >= limit:
            return None
        low, high = high, min(limit, high * 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if power_paired(mid, delta, sd, alpha) >= power else (mid, high)
    return high
