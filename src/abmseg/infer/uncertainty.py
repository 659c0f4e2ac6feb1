"""What several stochastic predictions of one volume say together: the mean class probabilities,
their predictive entropy, and the part of it that comes from the predictions disagreeing.

The diffusion sampler is stochastic, so K samples with different seeds (and mirror test-time
augmentation) are an implicit ensemble (issue 18). With p_k the class probabilities of pass k and
p the mean, the predictive entropy H(p) = -sum_c p_c log p_c splits into the mean entropy of the
passes, E_k[H(p_k)] (what each pass is unsure of), and the mutual information
H(p) - E_k[H(p_k)] (what they disagree on: Gal et al., "Deep Bayesian Active Learning with Image
Data", ICML 2017; Depeweg et al., ICML 2018). Natural logarithms: nats, at most log C.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def entropy(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """-sum p log p over ``axis`` (0 log 0 = 0), in float32 (a volume's classes at once)."""
    p = np.asarray(probabilities, dtype=np.float32)
    logs = np.log(np.where(p > 0, p, np.float32(1.0)))
    return -(p * logs).sum(axis=axis, dtype=np.float64).astype(np.float32)


# Slices per chunk when a volume's entropy is computed: bounds the temporaries to a few slabs.
CHUNK = 16


def volume_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``entropy`` over the class axis 0 of (C, z, ...), computed a slab of z at a time."""
    p = np.asarray(probabilities)
    if p.ndim < 2:
        return entropy(p)
    out = np.empty(p.shape[1:], dtype=np.float32)
    for start in range(0, p.shape[1], CHUNK):
        out[start : start + CHUNK] = entropy(p[:, start : start + CHUNK])
    return out


@dataclass(frozen=True)
class EnsembleSummary:
    """Mean class probabilities (C, ...) and two uncertainty maps (...), all float32. The maps
    are computed when first read: a caller that wants only the mask (rule infer) pays nothing."""

    mean: np.ndarray
    # mean over the passes of each pass's entropy; None for a single pass (it is the entropy of
    # the mean then)
    expected_entropy: np.ndarray | None
    passes: int

    @property
    def labels(self) -> np.ndarray:
        """The argmax of the mean: the ensemble's mask (uint8)."""
        return np.argmax(self.mean, axis=0).astype(np.uint8)

    @cached_property
    def predictive_entropy(self) -> np.ndarray:
        return volume_entropy(self.mean)

    @cached_property
    def mutual_information(self) -> np.ndarray:
        if self.expected_entropy is None:
            return np.zeros_like(self.predictive_entropy)
        # Jensen: H(mean) >= mean H; clip the float rounding of identical passes.
        return np.maximum(self.predictive_entropy - self.expected_entropy, np.float32(0.0))


class EnsembleAccumulator:
    """Adds passes one at a time, so a volume never holds all K passes in memory."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.entropy_total: np.ndarray | None = None
        self.passes = 0

    def add(self, probabilities: np.ndarray, owned: bool = False) -> None:
        """One pass's class probabilities, classes first: (C, ...). Sums in float32: K passes of
        values in [0, 1] lose nothing that matters, and a volume's classes stay one array.
        ``owned``: the caller hands the array over (no copy; it becomes the running sum)."""
        p = np.asarray(probabilities, dtype=np.float32)
        if self.total is None:
            self.total = p if owned else p.copy()
        else:
            if p.shape != self.total.shape:
                raise ValueError(f"pass of shape {p.shape}, earlier passes {self.total.shape}")
            if self.entropy_total is None:  # a second pass: the first one's entropy counts now
                self.entropy_total = volume_entropy(self.total)
            self.total += p
            self.entropy_total += volume_entropy(p)
        self.passes += 1

    def summary(self) -> EnsembleSummary:
        if self.total is None:
            raise ValueError("no pass was added")
        if self.passes == 1:
            return EnsembleSummary(self.total, None, 1)
        passes = np.float32(self.passes)
        return EnsembleSummary(self.total / passes, self.entropy_total / passes, self.passes)


def summarise_passes(passes: list[np.ndarray]) -> EnsembleSummary:
    """All passes at once (tests, small volumes): the accumulator's result."""
    accumulator = EnsembleAccumulator()
    for probabilities in passes:
        accumulator.add(probabilities)
    return accumulator.summary()
