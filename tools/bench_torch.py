#!/usr/bin/env python3
"""PyTorch side of `deno task bench`: the same architectures, batch and thread count as tools/bench.ts.

Usage: bench_torch.py '<json spec>'   (spec: {"config": <our model config JSON>, "batch": 64,
       "threads": 2, "inferIters": 10, "trainIters": 10, "latencyIters": 20, "warmup": 3, "maxWarmup": 12,
       "tolerance": 0.05})
Each phase warms up until its step time is stable (tools/bench_protocol.py, the rule tools/bench.ts uses:
at least `warmup` steps, until the last 3 agree within `tolerance`, at most `maxWarmup`), then times its
iterations. Prints one JSON object: {"torch": version, "inferImgS", "latencyMs", "trainImgS", "peakRssMiB",
"baseRssMiB", "threads", "trainTiming", "inferTiming", "latencyTiming"} (timings: warm-up steps, whether
the warm-up settled, every timed step in seconds). Architectures are rebuilt from our config JSON (lib/models/types.ts), with
plain torch modules (no timm), so the bench needs only Debian's python3-torch.
"""
import json
import math
import resource
import sys

import torch
import torch.nn as nn

from bench_protocol import time_until_stable
import torch.nn.functional as F


def rss_mib(field="VmHWM"):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, eps, mom):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps, momentum=mom)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps, momentum=mom)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=eps, momentum=mom))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet18 (cifar or imagenet stem), optionally truncated after `stages`, optional importance head."""

    def __init__(self, c):
        super().__init__()
        w, eps, mom = c.get("width", 64), c.get("bnEps", 1e-5), c.get("bnMomentum", 0.1)
        self.stages = c.get("stages", 4)
        if c.get("stem", "cifar") == "cifar":
            self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(w, eps=eps, momentum=mom)
        chans, cin = [w, 2 * w, 4 * w, 8 * w], w
        self.layers = nn.ModuleList()
        for i in range(self.stages):
            s = 1 if i == 0 else 2
            self.layers.append(nn.Sequential(BasicBlock(cin, chans[i], s, eps, mom), BasicBlock(chans[i], chans[i], 1, eps, mom)))
            cin = chans[i]
        self.fc = nn.Linear(8 * w, c["numClasses"]) if self.stages == 4 else None
        imp = c.get("importance")
        self.imp = imp
        if imp:
            ch = w if imp["stage"] == 0 else chans[imp["stage"] - 1]
            self.importance_head = nn.Linear(ch, 1)

    def scores(self, f):
        g = self.imp["grid"]
        h = f.shape[2]
        if h != g:
            f = F.avg_pool2d(f, h // g) if h % g == 0 else F.interpolate(f, size=(g, g), mode="nearest")
        return self.importance_head(f.flatten(2).transpose(1, 2)).squeeze(-1)  # [B, g*g]

    def forward(self, x, up_to=None):
        up_to = self.stages if up_to is None else up_to
        y = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        scores = self.scores(y) if self.imp and self.imp["stage"] == 0 else None
        for i in range(up_to):
            y = self.layers[i](y)
            if self.imp and self.imp["stage"] == i + 1:
                scores = self.scores(y)
        if up_to < 4 or self.fc is None:
            return None, scores
        return self.fc(y.mean((2, 3))), scores


class Block(nn.Module):
    def __init__(self, d, heads, mlp, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, int(d * mlp))
        self.fc2 = nn.Linear(int(d * mlp), d)
        self.h = heads

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.h) ** -0.5
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["embedDim"], c["patchSize"]
        n = (c["imgSize"] // p) ** 2
        eps = c.get("lnEps", 1e-6)
        self.patch_embed = nn.Conv2d(c.get("inChans", 3), d, p, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, c["numHeads"], c["mlpRatio"], eps) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=eps)
        self.head = nn.Linear(d, c["numClasses"])

    def forward(self, x, keep_indices=None):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        if keep_indices is not None:  # gather CLS + kept patch tokens: the blocks really run on fewer tokens
            idx = torch.cat([torch.zeros_like(keep_indices[:, :1]), keep_indices + 1], 1)
            t = torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.norm(t)[:, 0])


class Hybrid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        v = c["vit"]
        grid = v["imgSize"] // v["patchSize"]
        r = dict(c["resnet"], importance={"stage": c["scoreStage"], "grid": grid})
        self.cnn = ResNet18(r)
        self.vit = ViT(v)
        self.n = grid * grid

    def forward(self, x):
        xs = x
        if self.c.get("scorerImgSize"):
            s = self.c["scorerImgSize"]
            xs = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        up_to = 4 if self.c.get("cnnHead") else self.c["scoreStage"]
        _, scores = self.cnn(xs, up_to)
        k = max(1, min(self.n, math.floor(self.c["keepRatio"] * self.n + 0.5)))  # as JS Math.round
        idx = scores.topk(k, dim=1).indices
        return self.vit(x, idx)


def build(c):
    return {"resnet18": ResNet18, "vit": ViT, "hybrid": Hybrid}[c["model"]](c)


def logits_of(model, x):
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec.get("threads", 2))
    torch.manual_seed(0)
    base = rss_mib("VmRSS")
    c = spec["config"]
    model = build(c)
    size = c["vit"]["imgSize"] if c["model"] == "hybrid" else c["imgSize"]
    classes = c["vit"]["numClasses"] if c["model"] == "hybrid" else c["numClasses"]
    b = spec.get("batch", 64)
    x = torch.randn(b, 3, size, size)
    y = torch.randint(0, classes, (b,))
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "baseRssMiB": base}
    def timed(fn, iters):
        # The same protocol as tools/bench.ts: warm up until stable, median of the timed iterations.
        return time_until_stable(fn, min_warmup=spec.get("warmup", 3), max_warmup=spec.get("maxWarmup"),
                                 tolerance=spec.get("tolerance", 0.05), iters=iters)

    if spec.get("trainIters", 0) > 0:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(logits_of(model, x), y)
            loss.backward()
            opt.step()

        t = timed(step, spec["trainIters"])
        out["trainImgS"] = b / t["medianS"]
        out["trainTiming"] = t
        out["trainPeakRssMiB"] = rss_mib()
    model.eval()
    with torch.no_grad():
        if spec.get("inferIters", 0) > 0:
            t = timed(lambda: logits_of(model, x), spec["inferIters"])
            out["inferImgS"] = b / t["medianS"]
            out["inferTiming"] = t
        if spec.get("latencyIters", 0) > 0:
            x1 = x[:1].contiguous()
            t = timed(lambda: logits_of(model, x1), spec["latencyIters"])
            out["latencyMs"] = t["medianS"] * 1000
            out["latencyTiming"] = t
    out["peakRssMiB"] = rss_mib()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
