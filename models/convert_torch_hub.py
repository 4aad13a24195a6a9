#!/usr/bin/env python3
"""Converts a torch-hub DINOv2 checkpoint (.pth state dict) to safetensors, keeping the
torch-hub tensor names (`blocks.0.attn.qkv.weight`, ...) that `stars` reads directly.

    pip install torch safetensors          # on a connected machine; CPU is enough
    curl -LO https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth
    python models/convert_torch_hub.py dinov2_vitl14_pretrain.pth dinov2_vitl14.safetensors
    sha256sum dinov2_vitl14.safetensors     # record it in models/manifest.yaml if you like

No config file is needed: `stars` reads the architecture from the tensor shapes (heads =
width / 64, as in every released DINOv2). Checkpoints saved with block chunks
(`blocks.<chunk>.<i>.`) load as they are.

`--reins CKPT` adds Rein adapters from a FlowCLAS / mmseg checkpoint (its `state_dict` tensors
under `backbone.reins.`, kept under that name; see docs/models.md#rein-adapters).

Every file is read with `torch.load(..., weights_only=True)` (torch >= 2.5), so a checkpoint
cannot run code: the other objects a training checkpoint pickles (mmengine configs, logger
state) are built as inert stand-ins, never imported.
"""
import argparse
import pickle
import re

import torch
from safetensors.torch import save_file

# How torch's weights-only unpickler names a global it refuses.
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class Opaque:
    """Stand-in for a non-tensor object of a checkpoint: made from its pickled fields without
    importing or running the class or function the file names."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def load_weights_only(path):
    """`torch.load(path, weights_only=True)`; each global it refuses is allowed again as
    `Opaque` under that name (at most 200 of them), so only tensors come out as tensors."""
    stand_ins = []
    for _ in range(200):
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            refused = REFUSED_GLOBAL.findall(str(e))
            if not refused or (Opaque, refused[0]) in stand_ins:
                # torch blocks some modules (os, posix, subprocess, ...) even as stand-ins
                what = refused[0] if refused else "an object the weights-only loader refuses"
                raise SystemExit(f"{path}: not loaded: it pickles {what}, which no checkpoint needs")
            stand_ins.append((Opaque, refused[0]))
    raise SystemExit(f"{path}: more than 200 kinds of non-tensor objects")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth", help="torch-hub checkpoint (state dict)")
    ap.add_argument("out", help="output .safetensors")
    ap.add_argument("--reins", help="FlowCLAS/mmseg checkpoint whose backbone.reins.* tensors to add")
    args = ap.parse_args()
    state = load_weights_only(args.pth)
    if "model" in state and isinstance(state["model"], dict):  # training checkpoints wrap it
        state = state["model"]
    tensors = {k: v.detach().float().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    if "patch_embed.proj.weight" not in tensors:
        raise SystemExit(f"{args.pth}: no patch_embed.proj.weight; not a torch-hub DINOv2 state dict")
    if args.reins:
        # mmseg checkpoints pickle more than tensors (meta, optimiser); those become Opaque
        ckpt = load_weights_only(args.reins)
        ckpt = ckpt.get("state_dict", ckpt)
        reins = {k: v.detach().float().contiguous() for k, v in ckpt.items()
                 if k.startswith("backbone.reins.") and torch.is_tensor(v)}
        if not reins:
            raise SystemExit(f"{args.reins}: no backbone.reins.* tensors")
        tensors.update(reins)
    save_file(tensors, args.out, metadata={"source": args.pth, "naming": "torch-hub"})
    print(f"wrote {args.out}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
