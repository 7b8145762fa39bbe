#!/usr/bin/python3
"""Converts a reference U-Net checkpoint between PyTorch (.pt) and safetensors.

    /usr/bin/python3 tools/pt2safetensors.py IN.pt OUT.safetensors [--preset cifar32]
    /usr/bin/python3 tools/pt2safetensors.py IN.safetensors OUT.pt

IN.pt may hold a state_dict, a dict with a 'model' entry (GenerativeRL's
checkpoints), or a whole module; keys with the reference's wrapper prefixes
(e.g. 'model.', 'module.', 'diffusionModel.model.') are cut back to the
U-Net's own state_dict() names (time_embed.0.weight, ...).  With --preset, the
config is written to the metadata ('prg.unet'), so prg_unet_load(path, NULL)
takes it; without it, load with prg_unet_load(path, &cfg).  Tensors are
written as F32.  Needs only torch (Debian's python3-torch); the safetensors
format is written here directly."""
import json
import os
import struct
import sys

import torch

PRESET_META = {
    "cifar32": "in_channels=3,out_channels=3,model_channels=128,num_res_blocks=3,channel_mult=1:2:2:2,"
               "attention_ds=2:4,num_heads=4,image_size=32,groups=32",
    "imagenet64": "in_channels=3,out_channels=3,model_channels=128,num_res_blocks=3,channel_mult=1:2:3:4,"
                  "attention_ds=4:8,num_heads=4,image_size=64,groups=32",
    "small32": "in_channels=3,out_channels=3,model_channels=64,num_res_blocks=2,channel_mult=1:2:2,"
               "attention_ds=2:4,num_heads=4,image_size=32,groups=32",
    "tiny32": "in_channels=3,out_channels=3,model_channels=32,num_res_blocks=1,channel_mult=1:2:2,"
              "attention_ds=4,num_heads=4,image_size=32,groups=32",
}
ROOTS = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.", "head.")


def unet_name(key):
    """Strips wrapper prefixes: the name from the first U-Net root on."""
    for i in range(len(key)):
        if (i == 0 or key[i - 1] == ".") and key[i:].startswith(ROOTS):
            return key[i:]
    return None


def load_pt(path):
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    out = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        name = unet_name(k)
        if name is None:
            continue
        if name in out:
            sys.exit("pt2safetensors: two tensors map to %s" % name)
        out[name] = v.detach().to(torch.float32).contiguous()
    if not out:
        sys.exit("pt2safetensors: no U-Net tensors found in %s" % path)
    return out


def write_safetensors(path, tensors, meta):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        b = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": None}
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or name.startswith("optim."):
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=kinds[info["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


def main():
    args = [a for a in sys.argv[1:]]
    preset = None
    if "--preset" in args:
        i = args.index("--preset")
        preset = args[i + 1]
        del args[i:i + 2]
        if preset not in PRESET_META:
            sys.exit("pt2safetensors: unknown preset %s (%s)" % (preset, ", ".join(PRESET_META)))
    if len(args) != 2 or "-h" in args or "--help" in args:
        print(__doc__)
        sys.exit(0 if ("-h" in args or "--help" in args) else 2)
    src, dst = args
    if dst.endswith(".safetensors"):
        meta = {"prg.kind": "unet", "prg.unet": PRESET_META[preset]} if preset else {}
        write_safetensors(dst, load_pt(src), meta)
    else:
        torch.save(read_safetensors(src), dst)
    print("wrote", dst)


if __name__ == "__main__":
    main()
