#!/usr/bin/python3
"""Writes the PyTorch reference fixtures that tests/check_parity.c compares
mpt against, as llm.c's test does: for each model description given, the
same model built in PyTorch from the same JSON, given weights and inputs,
its logits, loss, every parameter gradient, and the losses of 5 SGD
(momentum, weight decay) and 5 AdamW steps (10 each for a language model).

A language model (kinds embedding, block, lm_head: models/gpt-mini.json)
is built as GPT-2 is: token + position embedding, pre-norm blocks of causal
multi-head attention and a tanh-GELU MLP, the final layer norm, a head tied
to the token embedding; its input is token ids (stored as floats, as mpt
takes them), one label per position, the loss the mean over all of them.

Run with Debian's torch:  /usr/bin/python3 tests/torch_reference.py \
    tests/fixtures/torch/mlp-tiny.json tests/fixtures/torch/cnn-tiny.json \
    tests/fixtures/torch/gpt-tiny.json
Each MODEL.json gets MODEL.safetensors beside it (written with the format's
plain rules, no safetensors package needed).  Computed in float64 and
stored as float32, so the fixtures are the exact answer to fp32 rounding.
"""
import json
import math
import struct
import sys

import torch

BATCH = 6
STEPS = 5
SGD = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
ADAMW = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


class Embedding(torch.nn.Module):
    """wte[token] + wpe[position]: mpt's embedding, parameters "wte", "wpe"."""

    def __init__(self, vocab, dim, positions):
        super().__init__()
        self.wte = torch.nn.Parameter(0.02 * torch.randn(vocab, dim))
        self.wpe = torch.nn.Parameter(0.02 * torch.randn(positions, dim))

    def forward(self, idx):
        return self.wte[idx.long()] + self.wpe[: idx.shape[1]]


class Block(torch.nn.Module):
    """mpt's block: x1 = x + proj(attn(ln_1(x))), y = x1 + fc_proj(gelu(fc(ln_2(x1))))."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.fc, self.fc_proj = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.fc_proj(torch.nn.functional.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class LMHead(torch.nn.Module):
    """x @ wte^T with the embedding's very parameter (held outside the
    module tree, so that it is named once, "0.wte", and its gradient sums
    both uses)."""

    def __init__(self, embedding):
        super().__init__()
        self.tied = [embedding]

    def forward(self, x):
        return x @ self.tied[0].wte.T


def build(desc):
    """The nn.Sequential of a model description: the same names mpt uses."""
    layers, shape = [], list(desc["input"])
    for spec in desc["layers"]:
        kind = spec["kind"]
        if kind == "linear":
            layers.append(torch.nn.Linear(shape[0], spec["units"]))
            shape = [spec["units"]]
        elif kind == "relu":
            layers.append(torch.nn.ReLU())
        elif kind == "gelu":
            layers.append(torch.nn.GELU(approximate="tanh"))
        elif kind == "layernorm":
            layers.append(torch.nn.LayerNorm(shape[-1], eps=spec.get("eps", 1e-5)))
        elif kind == "flatten":
            layers.append(torch.nn.Flatten())
            shape = [shape[0] * shape[1] * shape[2]]
        elif kind == "conv2d":
            k, s, p = spec["kernel"], spec.get("stride", 1), spec.get("padding", 0)
            layers.append(torch.nn.Conv2d(shape[0], spec["channels"], k, stride=s, padding=p))
            shape = [spec["channels"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        elif kind == "maxpool2d":
            k, s, p = spec["kernel"], spec.get("stride", spec["kernel"]), spec.get("padding", 0)
            layers.append(torch.nn.MaxPool2d(k, stride=s, padding=p))
            shape = [shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        elif kind == "embedding":
            layers.append(Embedding(spec["vocab"], spec["dim"], shape[0]))
            shape = [shape[0], spec["dim"]]
        elif kind == "block":
            layers.append(Block(shape[-1], spec["heads"]))
        elif kind == "lm_head":
            embedding = next(m for m in reversed(layers) if isinstance(m, Embedding))
            layers.append(LMHead(embedding))
            shape = [shape[0], embedding.wte.shape[0]]
        elif kind == "softmax_cross_entropy":
            pass  # applied as the loss below
        else:
            raise SystemExit(f"torch_reference.py: no PyTorch mapping for kind {kind}")
    return torch.nn.Sequential(*layers).double()


def save_safetensors(path, tensors, meta):
    header, blobs, offset = {}, [], 0
    for name, (dtype, t) in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def xent(logits, y):
    """The mean loss over every label: one per sample, or one per position
    of a language model's [batch, T, vocab] logits."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def losses(model, params, x, y, make_opt, steps):
    model.load_state_dict(params)
    opt = make_opt(model.parameters())
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = xent(model(x), y)
        out.append(loss.item())
        loss.backward()
        opt.step()
    return torch.tensor(out, dtype=torch.float32)


def main(paths):
    for path in paths:
        desc = json.load(open(path))
        torch.manual_seed(1234)
        model = build(desc)
        # Perturb LayerNorm's weights too, so their gradients are tested
        # away from the identity.
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(0.1 * torch.randn_like(p))
        # Round parameters and inputs to fp32 first: mpt starts from the
        # same float32 values.
        params = {k: v.float().double() for k, v in model.state_dict().items()}
        lm = desc["layers"][0]["kind"] == "embedding"
        if lm:  # token ids in, the next tokens (here: any) as labels
            vocab = desc["layers"][0]["vocab"]
            x = torch.randint(0, vocab, [BATCH] + desc["input"]).double()
            y = torch.randint(0, vocab, [BATCH] + desc["input"])
        else:
            x = torch.randn([BATCH] + desc["input"], dtype=torch.float32).double()
            classes = desc["layers"][-2].get("units")
            y = torch.randint(0, classes, (BATCH,))
        steps = 10 if lm else STEPS
        model.load_state_dict(params)
        logits = model(x)
        loss = xent(logits, y)
        loss.backward()
        tensors = {"input": ("F32", x.float()), "labels": ("I32", y.int()),
                   "logits": ("F32", logits.detach().float()), "loss": ("F32", loss.detach().float().reshape([]))}
        for name, p in model.named_parameters():
            tensors["param." + name] = ("F32", params[name].float())
            tensors["grad." + name] = ("F32", p.grad.float())
        tensors["sgd_losses"] = ("F32", losses(model, params, x, y, lambda ps: torch.optim.SGD(ps, **SGD), steps))
        tensors["adamw_losses"] = ("F32", losses(model, params, x, y, lambda ps: torch.optim.AdamW(ps, **ADAMW), steps))
        meta = {"generator": "tests/torch_reference.py", "torch": torch.__version__,
                "sgd": json.dumps(SGD), "adamw": json.dumps(ADAMW)}
        out = path[:-len(".json")] + ".safetensors"
        save_safetensors(out, tensors, meta)
        print(f"wrote {out}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
