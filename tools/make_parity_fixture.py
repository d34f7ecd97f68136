#!/usr/bin/env python3
"""Writes the repository's own PyTorch parity cases to tests/fixtures/parity/ (the format of
../shared/fixtures/parity/, read by tests/parity_test.ts): `<name>.weights.safetensors` (timm names,
PyTorch layouts) and `<name>.case.safetensors` (input NCHW, labels, eval logits, pruned eval logits for
`keep_indices`, training-mode logits, loss and gradients of the mean cross-entropy).

Case `deit_d64_depth2_distilled`: a ViT with DeiT's distillation token, written here in plain torch the
way timm's VisionTransformerDistilled computes it (CLS and distillation tokens first, one position
embedding over all tokens, pre-norm blocks, final norm, `head` on CLS and `head_dist` on the distillation
token, inference = the average of both heads). Our models' forward returns that average in training
mode too, so `logits_train` and the loss are of the average (the gradient reaches both heads).

Usage: /usr/bin/python3 tools/make_parity_fixture.py [out_dir]   (Debian python3-torch; no timm needed)
"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, int(d * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, p, d):
        super().__init__()
        self.proj = nn.Conv2d(3, d, p, p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DistilledViT(nn.Module):
    """timm's VisionTransformerDistilled, reduced to what the parity case needs (timm names)."""

    def __init__(self, c):
        super().__init__()
        d, n = c["embed_dim"], (c["img_size"] // c["patch_size"]) ** 2
        self.patch_embed = PatchEmbed(c["patch_size"], d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 2, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, c["num_heads"], c["mlp_ratio"], 1e-6) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, c["num_classes"])
        self.head_dist = nn.Linear(d, c["num_classes"])

    def forward(self, x, keep_indices=None):
        t = self.patch_embed(x)
        b = t.shape[0]
        t = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), t], 1) + self.pos_embed
        if keep_indices is not None:  # both prefix tokens, then the kept patch tokens, gathered
            idx = torch.cat([torch.zeros_like(keep_indices[:, :1]), torch.ones_like(keep_indices[:, :1]), keep_indices + 2], 1)
            t = torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        return (self.head(t[:, 0]) + self.head_dist(t[:, 1])) / 2


DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parity")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    c = {"model": "vit", "num_classes": 10, "img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 2,
         "num_heads": 4, "mlp_ratio": 4.0, "distill_token": True}
    model = DistilledViT(c)
    x = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([1, 7, 3, 0])
    keep = torch.sort(torch.stack([torch.randperm(64)[:32] for _ in range(4)]), 1).values
    model.eval()
    with torch.no_grad():
        logits_eval = model(x)
        logits_pruned = model(x, keep)
    model.train()
    logits_train = model(x, keep)
    loss = F.cross_entropy(logits_train, labels)
    loss.backward()
    name = "deit_d64_depth2_distilled"
    config = json.dumps(c)
    write_safetensors(os.path.join(out, f"{name}.weights.safetensors"), dict(model.state_dict()), {"config": config})
    params = dict(model.named_parameters())
    grads = ["cls_token", "dist_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
             "blocks.1.mlp.fc1.bias", "norm.weight", "head.weight", "head_dist.weight", "head_dist.bias"]
    case = {"input": x, "labels": labels, "keep_indices": keep, "logits_eval": logits_eval,
            "logits_eval_pruned": logits_pruned, "logits_train": logits_train, "loss_train": loss.reshape(1)}
    case.update({f"grad.{g}": params[g].grad for g in grads})
    write_safetensors(os.path.join(out, f"{name}.case.safetensors"), case, {
        "config": config,
        "layout": "PyTorch (conv OIHW, linear [out,in], input NCHW)",
        "grads": "mean softmax cross-entropy of the averaged heads over the batch, training mode; with keep_indices pruning",
        "generator": f"tools/make_parity_fixture.py, torch {torch.__version__}",
    })
    print(f"wrote {name} to {out}")


if __name__ == "__main__":
    main()
