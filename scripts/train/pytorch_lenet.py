#!/usr/bin/env python3
"""PyTorch twin of `kiln train --model models/lenet/model.toml` (same architecture and recipe).

LeNet-5: conv5x5(6)-relu-maxpool2-conv5x5(16)-relu-maxpool2-flatten-fc120-relu-fc84-relu-fc10,
He-uniform weights (bound sqrt(6 / fan_in)), zero biases, softmax cross-entropy (mean over the
batch), Adam (0.9, 0.999, eps 1e-8) at a constant rate, shuffled mini-batches with the last
partial batch dropped, pixels / 255. Prints one JSON line: per-epoch loss, training seconds
(steps only, like kiln's "training: ... s in steps") and images/s, and test accuracy.

Used by scripts/train/compare_pytorch.sh; run alone:
  python3 pytorch_lenet.py --data data/mnist-10k --test data/mnist-test --epochs 5 --threads 2
"""
import argparse
import gzip
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder: Path, limit=None):
    images = next(p for p in sorted(folder.iterdir()) if "images" in p.name)
    labels = next(p for p in sorted(folder.iterdir()) if "labels" in p.name)
    x = read_idx(images).astype(np.float32) / 255.0
    y = read_idx(labels).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(x[:, None, :, :].copy()), torch.from_numpy(y.copy())


def lenet() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = (6.0 / fan_in) ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load(args.data, args.limit)
    tx, ty = load(args.test)
    model = lenet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    steps = len(x) // args.batch
    epochs = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=gen)
        model.train()
        started = time.perf_counter()
        total = 0.0
        for s in range(steps):
            idx = order[s * args.batch : (s + 1) * args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            acc = (model(tx).argmax(1) == ty).float().mean().item()
        epochs.append({
            "epoch": epoch + 1,
            "loss": total / steps,
            "seconds": seconds,
            "images_per_s": steps * args.batch / seconds,
            "test_accuracy": acc,
        })
    train_s = sum(e["seconds"] for e in epochs)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "epochs": epochs,
        "train_seconds": train_s,
        "images_per_s": steps * args.batch * args.epochs / train_s,
        "test_accuracy": epochs[-1]["test_accuracy"],
    }))


if __name__ == "__main__":
    main()
