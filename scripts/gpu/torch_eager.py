#!/usr/bin/env python3
"""PyTorch-eager twins of kiln's two shipped models, timed on the same GPU as kiln-jetson.

What is compared: the TFLite int8 models (models/kws_ref_model, models/pretrainedResnet_quant)
run by kiln as int8 CUDA kernels, against FLOAT32 PyTorch modules with the same layers,
shapes, strides and paddings (batch norm already folded into the convs, as in the TFLite
graph: conv + bias + ReLU, residual adds, average pool, dense, softmax). The weights are
deterministic random values, not the dequantized TFLite weights: this machine has no TFLite
reader, and the values do not change eager PyTorch's run time (same kernels, same shapes).
Eager mode, NCHW, cuDNN autotuning on (torch.backends.cudnn.benchmark), no torch.compile,
no CUDA Graphs: the everyday PyTorch baseline the issue names.

Two figures per batch size, like kiln-jetson's: one batch with the host->device copy of the
input and the device->host copy of the output ("copies included"), and the model alone on a
resident input ("kernels only"), both synchronised, p50/p99 over --runs runs.

Usage: torch_eager.py {kws,resnet8} --batch N [--runs 200] [--warmup 20] [--device cpu];
prints one JSON line. `--device cpu` is a dry run of the model definitions on a machine
without a GPU (its timings are not the comparison).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class DsCnnKws(nn.Module):
    """MLPerf Tiny DS-CNN keyword spotting: input 1x49x10x1 (NHWC) -> 12 classes."""

    def __init__(self):
        super().__init__()
        # 10x4 filter, stride 2, TFLite SAME padding: rows (4, 5), columns (1, 1).
        self.pad = nn.ZeroPad2d((1, 1, 4, 5))
        self.conv0 = nn.Conv2d(1, 64, (10, 4), stride=2)
        self.dw = nn.ModuleList([nn.Conv2d(64, 64, 3, padding=1, groups=64) for _ in range(4)])
        self.pw = nn.ModuleList([nn.Conv2d(64, 64, 1) for _ in range(4)])
        self.fc = nn.Linear(64, 12)

    def forward(self, x):
        x = F.relu(self.conv0(self.pad(x)))
        for dw, pw in zip(self.dw, self.pw):
            x = F.relu(pw(F.relu(dw(x))))
        x = F.avg_pool2d(x, (25, 5)).flatten(1)
        return F.softmax(self.fc(x), dim=1)


class ResNet8(nn.Module):
    """MLPerf Tiny ResNet-8 (CIFAR-10): input 1x32x32x3 (NHWC) -> 10 classes."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1a = nn.Conv2d(16, 16, 3, padding=1)
        self.b1b = nn.Conv2d(16, 16, 3, padding=1)
        self.b2a = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.b2b = nn.Conv2d(32, 32, 3, padding=1)
        self.b2s = nn.Conv2d(16, 32, 1, stride=2)
        self.b3a = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.b3b = nn.Conv2d(64, 64, 3, padding=1)
        self.b3s = nn.Conv2d(32, 64, 1, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv0(x))
        x = F.relu(self.b1b(F.relu(self.b1a(x))) + x)
        x = F.relu(self.b2b(F.relu(self.b2a(x))) + self.b2s(x))
        x = F.relu(self.b3b(F.relu(self.b3a(x))) + self.b3s(x))
        x = F.avg_pool2d(x, 8).flatten(1)
        return F.softmax(self.fc(x), dim=1)


MODELS = {"kws": (DsCnnKws, (1, 49, 10)), "resnet8": (ResNet8, (3, 32, 32))}


def percentile(sorted_values, p):
    rank = round(p / 100 * (len(sorted_values) - 1))
    return sorted_values[min(rank, len(sorted_values) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cuda",
                    help="cuda (the comparison) or cpu (a dry run of the model definitions)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    cls, shape = MODELS[a.model]
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = cls().to(dev).eval()
    x_host = torch.randn(a.batch, *shape)
    if cuda:
        x_host = x_host.pin_memory()
    x_dev = x_host.to(dev)

    def timed(fn):
        times = []
        with torch.inference_mode():
            for i in range(a.warmup + a.runs):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                if i >= a.warmup:
                    times.append((time.perf_counter() - t) * 1e6)
        times.sort()
        return times

    with_copies = timed(lambda: model(x_host.to(dev, non_blocking=True)).cpu())
    kernels = timed(lambda: model(x_dev))
    p50 = percentile(with_copies, 50)
    print(json.dumps({
        "model": a.model, "framework": f"pytorch {torch.__version__} eager float32",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "batch": a.batch, "runs": a.runs,
        "p50_us": round(p50, 1), "p99_us": round(percentile(with_copies, 99), 1),
        "mean_us": round(statistics.fmean(with_copies), 1),
        "kernels_p50_us": round(percentile(kernels, 50), 1),
        "samples_per_s": round(a.batch / (p50 / 1e6)),
    }))


if __name__ == "__main__":
    main()
