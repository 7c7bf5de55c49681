"""Time the LightMBN composite loss (forward + backward): vectorised against a per-anchor loop.

Usage: python benchmarks/losses.py [--repeats N]

The loss is 0.5·cross_entropy(ε=0.1) over 7 logit heads + 0.5·multi_similarity(margin 0.7) over
3 feature heads, for a 6×8 P×K batch, 751 classes, 512-d features. The loop formulation mines and
sums multi-similarity anchor by anchor in Python, as the reference implementation does; its
cross-entropy is the same vectorised call in both. Both values are checked to agree.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reidcli.losses.criterion import build_criterion
from reidcli.recipe.loss import CrossEntropy, MultiSimilarity


class Output:
    def __init__(self, logits, features):
        self.logits, self.features = logits, features


def ms_loop(feats, labels, margin=0.7, alpha=2.0, beta=40.0, lam=0.5):
    """Multi-similarity mined per anchor with a Python loop over the batch."""
    x = F.normalize(feats, dim=1)
    sim = x @ x.t()
    losses = []
    for i in range(len(x)):
        pos = sim[i][labels == labels[i]]
        pos = pos[pos < 1 - 1e-5]
        neg_all = sim[i][labels != labels[i]]
        neg = neg_all[neg_all + margin > pos.min()]
        pos = pos[pos - margin < neg_all.max()]
        if len(neg) < 1 or len(pos) < 1:
            continue
        pos_loss = torch.log(1 + torch.exp(-alpha * (pos - lam)).sum()) / alpha
        neg_loss = torch.log(1 + torch.exp(beta * (neg - lam)).sum()) / beta
        losses.append(pos_loss + neg_loss)
    return sum(losses) / len(x)


def loop_composite(output, labels):
    ce = sum(F.cross_entropy(z, labels, label_smoothing=0.1) for z in output.logits)
    ms = sum(ms_loop(f, labels) for f in output.features)
    return 0.5 * ce + 0.5 * ms


def time_it(fn, output, labels, repeats):
    times = []
    for _ in range(repeats + 3):  # the first three warm up
        for t in (*output.logits, *output.features):
            t.grad = None
        start = time.perf_counter()
        fn(output, labels).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(8)
    logits = [torch.randn(48, 751, generator=gen).requires_grad_() for _ in range(7)]
    feats = [torch.randn(48, 512, generator=gen).requires_grad_() for _ in range(3)]
    output = Output(logits, feats)
    criterion = build_criterion(
        [CrossEntropy(weight=0.5), MultiSimilarity(weight=0.5, margin=0.7)], 751, 512
    )

    def vectorised(out, y):
        return criterion(out, y)[0]

    a, b = vectorised(output, labels).item(), loop_composite(output, labels).item()
    assert abs(a - b) <= 1e-5 * abs(b), (a, b)
    fast = time_it(vectorised, output, labels, args.repeats)
    slow = time_it(loop_composite, output, labels, args.repeats)
    threads = torch.get_num_threads()
    print(f"loss value {a:.6f} (loop {b:.6f}); torch {torch.__version__}, threads {threads}")
    print(f"vectorised:        {fast * 1e3:7.2f} ms (median of {args.repeats}, forward + backward)")
    print(f"per-anchor loop:   {slow * 1e3:7.2f} ms")
    print(f"speed-up:          {slow / fast:7.1f}x")
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}  cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
