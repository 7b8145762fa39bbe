#!/usr/bin/python3
"""Converts a reference U-Net (GenerativeRL unet_2D) or a PRG classifier
between PyTorch (.pt) and prg.h's safetensors checkpoints, in both directions.

    /usr/bin/python3 tools/pt2safetensors.py IN.pt OUT.safetensors [flags]
    /usr/bin/python3 tools/pt2safetensors.py IN.safetensors OUT.pt

.pt -> .safetensors.  IN.pt may hold a state_dict, a dict with a 'model'
entry (GenerativeRL's checkpoints) or a whole module; wrapper prefixes
('model.', 'module.', 'diffusionModel.model.', ...) are cut back to the
U-Net's own state_dict() names (time_embed.0.weight, ...).  The config is
read off the tensor shapes wherever they determine it (in_channels,
out_channels, model_channels, num_res_blocks, channel_mult, the levels with
attention, and, for a classifier with a pool below 16, image_size); the rest
comes from the flags, else the defaults below, and the script prints which
is which.  A flag that contradicts the shapes is an error.  The config goes
into the metadata ('prg.unet'), so prg_unet_load(path, NULL) and every
program take the file as it is.

Tensors named head.norm.*, head.fc1.*, head.fc2.weight make it a classifier
(prg_classifier_load): the class count is head.fc2.weight's first dimension.

.safetensors -> .pt.  A flat state_dict: the U-Net tensors under the
reference names, so that

    sd = torch.load("clf.pt")
    unet.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=True)

loads into unet_2D (or tools/ref_unet.py's UNet) of that config; a
classifier's head tensors sit alongside under head.*, in prg.h's layout
(LayerNorm(D) -> Linear(D, D) -> tanh -> Linear(D, classes, no bias) on the
pooled encoding, D = in_channels * pool^2).  The file's prg metadata rides
in sd._metadata["prg"] (where PyTorch keeps per-module versions;
load_state_dict ignores it), so converting the .pt back needs no flags and
gives the same tensors and config.  Adam moments (optim.*) are not carried.

Flags (names of unet_2D's constructor arguments; the prg program names
--res-blocks --attention-ds --heads work too):
  --in-channels N --out-channels N --model-channels N --num-res-blocks N
  --channel-mult L (e.g. 1,2,2)  --attention-resolutions L (downsample rates, e.g. 2,4)
      checked against the shapes; needed only where no tensor tells
  --num-heads N            attention heads (default 1, unet_2D's default; the
                           PRG configs Unet_32 / Unet_64 use 4)
  --num-heads-upsample N   must equal --num-heads (-1 = the same, default)
  --image-size N           model input size (default 32; must be divisible by 2^(levels-1))
  --groups N               GroupNorm groups (default 32, unet_2D's GroupNorm32)
  --preset NAME            defaults from a prg preset (tiny32 small32 cifar32 imagenet64)
  --t-span N --t-cutoff N --path icfm|gvp   a classifier's ODE grid (default 32, 0, icfm)

Needs only torch (Debian's python3-torch) and numpy; the safetensors
format is read and written here directly."""
import argparse
import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

KEYS = ("in_channels", "out_channels", "model_channels", "num_res_blocks", "channel_mult",
        "attention_ds", "num_heads", "image_size", "groups")
LISTS = ("channel_mult", "attention_ds")
PRESETS = {
    "cifar32": "in_channels=3 out_channels=3 model_channels=128 num_res_blocks=3 channel_mult=1,2,2,2 "
               "attention_ds=2,4 num_heads=4 image_size=32 groups=32",
    "imagenet64": "in_channels=3 out_channels=3 model_channels=128 num_res_blocks=3 channel_mult=1,2,3,4 "
                  "attention_ds=4,8 num_heads=4 image_size=64 groups=32",
    "small32": "in_channels=3 out_channels=3 model_channels=64 num_res_blocks=2 channel_mult=1,2,2 "
               "attention_ds=2,4 num_heads=4 image_size=32 groups=32",
    "tiny32": "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 "
              "attention_ds=4 num_heads=4 image_size=32 groups=32",
}
ROOTS = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.", "head.", "label_emb.")
HEAD = ("head.norm.weight", "head.norm.bias", "head.fc1.weight", "head.fc1.bias", "head.fc2.weight")
CLASSIFIER_META = ("prg.num_classes", "prg.t_span", "prg.t_cutoff", "prg.path")


def fail(msg):
    sys.exit("pt2safetensors: " + msg)


# ---- the config as prg.h writes it (prg_unet_config_format / _parse) ----

def value_text(v):
    """A field as the config text writes it: 4, 1,2,2 or none."""
    if isinstance(v, tuple):
        return ",".join(map(str, v)) if v else "none"
    return str(v)


def config_text(c):
    """The text of prg_unet_config_format: the 'prg.unet' metadata value."""
    return " ".join("%s=%s" % (k, value_text(c[k])) for k in KEYS)


def parse_config(text):
    c = {}
    for item in text.split():
        k, _, v = item.partition("=")
        if k not in KEYS or k in c:
            fail("config text '%s': unknown or repeated key %s" % (text, k))
        c[k] = tuple(int(x) for x in v.split(",")) if k in LISTS and v != "none" else (() if k in LISTS else int(v))
    missing = [k for k in KEYS if k not in c]
    if missing:
        fail("config text '%s' lacks %s" % (text, ", ".join(missing)))
    return c


# ---- the reference's state_dict layout for a config ----

def layout(c):
    """(name, shape) of every tensor of unet_2D's state_dict(), in its order
    (scale-shift ResBlocks, legacy attention, conv resampling)."""
    mc, ed = c["model_channels"], 4 * c["model_channels"]
    out = []

    def affine(p, shape_w, n_out):
        out.append((p + ".weight", shape_w))
        out.append((p + ".bias", (n_out,)))

    def norm(p, ch):
        affine(p, (ch,), ch)

    def conv(p, cin, cout, k, dims=2):
        affine(p, (cout, cin) + (k,) * dims, cout)

    def res(p, cin, cout):
        norm(p + ".in_layers.0", cin)
        conv(p + ".in_layers.2", cin, cout, 3)
        affine(p + ".emb_layers.1", (2 * cout, ed), 2 * cout)
        norm(p + ".out_layers.0", cout)
        conv(p + ".out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(p + ".skip_connection", cin, cout, 1)

    def attn(p, ch):
        norm(p + ".norm", ch)
        conv(p + ".qkv", ch, 3 * ch, 1, dims=1)
        conv(p + ".proj_out", ch, ch, 1, dims=1)

    affine("time_embed.0", (ed, mc), ed)
    affine("time_embed.2", (ed, ed), ed)
    conv("input_blocks.0.0", c["in_channels"], mc, 3)
    skips, ch, ds, k = [mc], mc, 1, 1
    mult = c["channel_mult"]
    for level, m in enumerate(mult):
        for _ in range(c["num_res_blocks"]):
            res("input_blocks.%d.0" % k, ch, m * mc)
            ch = m * mc
            if ds in c["attention_ds"]:
                attn("input_blocks.%d.1" % k, ch)
            skips.append(ch)
            k += 1
        if level != len(mult) - 1:
            conv("input_blocks.%d.0.op" % k, ch, ch, 3)
            skips.append(ch)
            ds *= 2
            k += 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    k = 0
    for level in reversed(range(len(mult))):
        for i in range(c["num_res_blocks"] + 1):
            p = "output_blocks.%d." % k
            res(p + "0", ch + skips.pop(), mult[level] * mc)
            ch = mult[level] * mc
            j = 1
            if ds in c["attention_ds"]:
                attn(p + "1", ch)
                j = 2
            if level and i == c["num_res_blocks"]:
                conv(p + "%d.conv" % j, ch, ch, 3)
                ds //= 2
            k += 1
    norm("out.0", ch)
    conv("out.2", mc, c["out_channels"], 3)
    return out


def check_config(c):
    """prg_unet_config_check's rules, with the flag that fixes each."""
    mult, levels = c["channel_mult"], len(c["channel_mult"])
    for level, m in enumerate(mult):
        ch = m * c["model_channels"]
        if ch % c["groups"]:
            fail("level %d has %d channels, not divisible by groups=%d: give the GroupNorm groups the model was "
                 "built with (--groups N)" % (level, ch, c["groups"]))
        if ((1 << level) in c["attention_ds"] or level == levels - 1) and ch % c["num_heads"]:
            fail("attention on %d channels (level %d) does not split into num_heads=%d (--num-heads)"
                 % (ch, level, c["num_heads"]))
    if c["image_size"] % (1 << (levels - 1)):
        fail("image_size=%d is not divisible by 2^(levels-1) = %d (--image-size)" % (c["image_size"], 1 << (levels - 1)))


# ---- reading a state dict's config off its shapes ----

def infer(sd):
    """The config fields the shapes determine, or an error saying what is
    not the reference U-Net prg.h runs."""
    def shape(name):
        if name not in sd:
            fail("no tensor '%s': not a unet_2D state_dict" % name)
        return tuple(sd[name].shape)

    if "label_emb.weight" in sd:
        fail("label_emb.weight: a class-conditional U-Net (num_classes set); prg.h's U-Net is unconditional")
    ed, mc = shape("time_embed.0.weight")
    if ed != 4 * mc:
        fail("time_embed.0.weight is %s, the reference has [4*model_channels, model_channels]" % [ed, mc])
    c = {"model_channels": mc, "in_channels": shape("input_blocks.0.0.weight")[1],
         "out_channels": shape("out.2.weight")[0]}
    blocks = sorted({int(n.split(".")[1]) for n in sd if n.startswith("input_blocks.")})
    if blocks != list(range(len(blocks))):
        fail("input_blocks %s: a block without tensors (downsampling without a convolution, unet_2D's "
             "conv_resample=False) is not supported" % blocks)
    levels = [[]]  # per level: [(width, has attention)] of its ResBlocks
    for k in blocks[1:]:
        p = "input_blocks.%d." % k
        if p + "0.op.weight" in sd:
            levels.append([])
            continue
        width = shape(p + "0.in_layers.2.weight")[0]
        emb = shape(p + "0.emb_layers.1.weight")[0]
        if emb != 2 * width:
            fail("%s0.emb_layers.1.weight has %d rows for %d channels: prg.h runs scale-shift ResBlocks "
                 "(use_scale_shift_norm=True), not this model" % (p, emb, width))
        levels[-1].append((width, p + "1.qkv.weight" in sd))
    nrb = len(levels[0])
    mult, attn = [], []
    for i, lv in enumerate(levels):
        if len(lv) != nrb or not lv:
            fail("level %d has %d ResBlocks, level 0 has %d: not a unet_2D layout" % (i, len(lv), nrb))
        widths, att = {w for w, _ in lv}, {a for _, a in lv}
        if len(widths) != 1 or len(att) != 1 or next(iter(widths)) % mc:
            fail("level %d: ResBlock widths %s / attention %s are not one multiple of model_channels=%d"
                 % (i, sorted(widths), sorted(att), mc))
        mult.append(next(iter(widths)) // mc)
        if att.pop():
            attn.append(1 << i)
    c.update(num_res_blocks=nrb, channel_mult=tuple(mult), attention_ds=tuple(attn))
    return c


def head_pool(sd, cin):
    """The pool side of a classifier head, from head.norm.weight [cin*pool^2]."""
    d = sd["head.norm.weight"].shape[0]
    p = int(round(math.sqrt(d / cin)))
    if p * p * cin != d or p > 16:
        fail("head.norm.weight has %d entries: not in_channels * pool^2 (in_channels %d, pool <= 16)" % (d, cin))
    want = {"head.norm.weight": (d,), "head.norm.bias": (d,), "head.fc1.weight": (d, d), "head.fc1.bias": (d,)}
    for name in HEAD:
        if name not in sd:
            fail("classifier head without '%s' (needs %s)" % (name, ", ".join(HEAD)))
        s = tuple(sd[name].shape)
        if name in want and s != want[name] or name == "head.fc2.weight" and (len(s) != 2 or s[1] != d):
            fail("%s is %s, the head of D=%d needs %s" % (name, list(s), d, list(want.get(name, ("classes", d)))))
    return p


def resolve(sd, args, file_meta):
    """The full config: shapes, then flags, then the .pt's own prg metadata,
    then the preset or the reference's defaults.  Prints the sources."""
    shapes = infer(sd)
    base = parse_config(PRESETS[args.preset]) if args.preset else {}
    base_from = "--preset " + args.preset if args.preset else None
    if file_meta.get("prg.unet"):
        base = parse_config(file_meta["prg.unet"])
        base_from = "the .pt's prg metadata"
    flags = {k: getattr(args, k) for k in KEYS if getattr(args, k) is not None}
    c, how = {}, {}
    rates = [1 << i for i in range(len(shapes["channel_mult"]))]
    for k, v in shapes.items():
        c[k], how[k] = v, "shapes"
        if k in flags:
            f = flags[k]
            if k == "attention_ds":  # rates the model does not reach add no attention blocks in unet_2D
                f = tuple(sorted(x for x in set(f) if x in rates))
            if f != v:
                fail("--%s %s contradicts the tensor shapes, which give %s"
                     % (k.replace("_", "-"), value_text(flags[k]), value_text(v)))
    defaults = {"num_heads": (1, "unet_2D's default; the PRG configs use 4"), "image_size": (32, "prg's default"),
                "groups": (32, "unet_2D's GroupNorm32")}
    pool = head_pool(sd, c["in_channels"]) if "head.norm.weight" in sd else None
    for k in ("num_heads", "image_size", "groups"):
        if k == "image_size" and pool is not None and pool < 16:
            c[k], how[k] = pool, "shapes"  # the head pools to min(image_size, 16)
            if k in flags and flags[k] != pool:
                fail("--image-size %d contradicts the head, whose pool side %d is the image size" % (flags[k], pool))
        elif k in flags:
            c[k], how[k] = flags[k], "flag"
        elif k in base:
            c[k], how[k] = base[k], base_from
        else:
            c[k], how[k] = defaults[k][0], "assumed: " + defaults[k][1]
    if pool == 16 and c["image_size"] % 16:
        fail("image_size=%d: the head pools 16x16, so the image size is a multiple of 16 (--image-size)"
             % c["image_size"])
    if args.num_heads_upsample not in (None, -1) and args.num_heads_upsample != c["num_heads"]:
        fail("--num-heads-upsample %d differs from num_heads=%d: prg.h uses one head count everywhere"
             % (args.num_heads_upsample, c["num_heads"]))
    check_config(c)
    got = dict((n, tuple(sd[n].shape)) for n in sd if not n.startswith("head."))
    want = layout(c)
    for n, s in want:
        if n not in got:
            fail("tensor '%s' %s is missing (config %s)" % (n, list(s), config_text(c)))
        if got[n] != s:
            fail("tensor '%s' is %s, config %s needs %s" % (n, list(got[n]), config_text(c), list(s)))
    extra = sorted(set(got) - {n for n, _ in want})
    if extra:
        fail("tensors not in a unet_2D of config %s: %s" % (config_text(c), ", ".join(extra[:5])))
    say = lambda src: " ".join("%s=%s" % (k, value_text(c[k])) for k in KEYS if how[k] == src)
    print("from the tensor shapes: " + say("shapes"))
    for src in sorted({how[k] for k in KEYS} - {"shapes"}, key=str):
        print("from %s: %s" % ("the flags" if src == "flag" else src, say(src)))
    return c, [n for n, _ in want]


# ---- files ----

def unet_name(key):
    """Strips wrapper prefixes: the name from the first U-Net root on."""
    for i in range(len(key)):
        if (i == 0 or key[i - 1] == ".") and key[i:].startswith(ROOTS):
            return key[i:]
    return None


def load_pt(path):
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # missing file, not a torch file, a module whose class is not importable
        fail("%s: torch.load failed: %s" % (path, e))
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        fail("%s holds a %s, not a state_dict" % (path, type(obj).__name__))
    meta = dict(getattr(obj, "_metadata", None) or {}).get("prg") or {}
    out, ignored = {}, []
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        name = unet_name(k)
        if name is None:
            ignored.append(k)
            continue
        if name in out:
            fail("two tensors map to %s (e.g. a model and its EMA copy): save one state_dict" % name)
        out[name] = v.detach().to(torch.float32).contiguous()
    if not out:
        fail("no U-Net tensors found in %s" % path)
    if ignored:
        print("ignored %d tensors that are neither the U-Net's nor a head.* of prg's: %s%s"
              % (len(ignored), ", ".join(ignored[:4]), ", ..." if len(ignored) > 4 else ""))
    return out, meta


def write_safetensors(path, tensors, meta):
    header, offset, blobs = OrderedDict(), 0, []
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
    """(OrderedDict of float32 tensors in file order, metadata); optim.* left out."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n), object_pairs_hook=OrderedDict)
            data = f.read()
    except (OSError, ValueError, struct.error) as e:
        fail("%s: not a readable safetensors file: %s" % (path, e))
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__" or name.startswith("optim."):
            continue
        a, b = info["data_offsets"]
        if not 0 <= a <= b <= len(data):
            fail("%s: tensor %s lies outside the file (truncated?)" % (path, name))
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in ("F32", "F16"):
            arr = np.frombuffer(data[a:b], dtype="<f4" if info["dtype"] == "F32" else "<f2").astype(np.float32)
        else:
            fail("%s: tensor %s has dtype %s (F32, F16, BF16 only)" % (path, name, info["dtype"]))
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out, dict(header.get("__metadata__", {}))


def to_safetensors(src, dst, args):
    sd, meta = load_pt(src)
    cfg, order = resolve(sd, args, meta)
    tensors = OrderedDict((n, sd[n]) for n in order)
    out_meta = OrderedDict([("prg.kind", "unet"), ("prg.unet", config_text(cfg))])
    if "head.norm.weight" in sd:
        tensors.update((n, sd[n]) for n in HEAD)
        extra = sorted(n for n in sd if n.startswith("head.") and n not in HEAD)
        if extra:
            fail("head tensors prg.h's head does not have: %s" % ", ".join(extra))
        grid = {"prg.t_span": args.t_span, "prg.t_cutoff": args.t_cutoff, "prg.path": args.path}
        defaults = {"prg.t_span": "32", "prg.t_cutoff": "0", "prg.path": "icfm"}
        out_meta["prg.kind"] = "classifier"
        out_meta["prg.num_classes"] = str(sd["head.fc2.weight"].shape[0])
        for k in ("prg.t_span", "prg.t_cutoff", "prg.path"):
            out_meta[k] = str(grid[k]) if grid[k] is not None else meta.get(k, defaults[k])
        print("classifier: %s classes, t_span %s, t_cutoff %s, path %s" % tuple(
            out_meta[k] for k in CLASSIFIER_META))
    write_safetensors(dst, tensors, out_meta)


def to_pt(src, dst):
    tensors, meta = read_safetensors(src)
    if meta.get("prg.unet"):
        cfg = parse_config(meta["prg.unet"])
        want = layout(cfg)
        for n, s in want:
            if n not in tensors or tuple(tensors[n].shape) != s:
                fail("%s: tensor '%s' does not match its metadata's config %s" % (src, n, meta["prg.unet"]))
        print("config: " + meta["prg.unet"])
    sd = OrderedDict(tensors)
    sd._metadata = OrderedDict([("prg", OrderedDict((k, v) for k, v in meta.items() if k.startswith("prg.")))])
    tmp = dst + ".tmp"
    torch.save(sd, tmp)
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser(prog="pt2safetensors.py", usage="%(prog)s IN OUT [flags]  (--help)",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=True)
    ap.add_argument("src")
    ap.add_argument("dst")
    num = lambda *names, **kw: ap.add_argument(*names, type=int, default=None, help=argparse.SUPPRESS, **kw)
    lst = lambda *names, **kw: ap.add_argument(
        *names, default=None, help=argparse.SUPPRESS, **kw,
        type=lambda s: () if s == "none" else tuple(sorted(int(x) for x in s.split(","))))
    num("--in-channels", dest="in_channels")
    num("--out-channels", dest="out_channels")
    num("--model-channels", dest="model_channels")
    num("--num-res-blocks", "--res-blocks", dest="num_res_blocks")
    lst("--channel-mult", dest="channel_mult")
    lst("--attention-resolutions", "--attention-ds", dest="attention_ds")
    num("--num-heads", "--heads", dest="num_heads")
    num("--num-heads-upsample", dest="num_heads_upsample")
    num("--image-size", dest="image_size")
    num("--groups", dest="groups")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help=argparse.SUPPRESS)
    num("--t-span", dest="t_span")
    num("--t-cutoff", dest="t_cutoff")
    ap.add_argument("--path", choices=("icfm", "gvp"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dst.endswith(".safetensors"):
        to_safetensors(args.src, args.dst, args)
    elif args.src.endswith(".safetensors"):
        if any(getattr(args, k) is not None for k in KEYS + ("num_heads_upsample", "preset", "t_span", "t_cutoff", "path")):
            fail("config flags apply to .pt -> .safetensors; a .safetensors file carries its config")
        to_pt(args.src, args.dst)
    else:
        fail("one of IN, OUT must end in .safetensors (see --help)")
    print("wrote", args.dst)


if __name__ == "__main__":
    main()
