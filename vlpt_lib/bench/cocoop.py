"""Speed benchmark: fast exact CoCoOp against the per-image, full-length reference loop, and the deep-prompt
methods (every registered method built on models.deep_prompts) against the way their official trainers compute.

    python -m vlpt_lib bench cocoop [--device cpu|cuda] [--model ViT-B-16] [--classes N] [--batch B] [--methods ...]

Both paths run on the same randomly initialised open_clip model (no downloads), the same images
and the same prompt learner. Training = forward + backward + SGD step on a batch; evaluation =
forward without gradients. Speed-ups are per image. On CUDA the run also projects a full
ImageNet-val evaluation (50,000 images x 1,000 classes) with the fast path and autocast, and records
the peak GPU memory of the timed runs and of the projection (`peak_mem_gib`, `projection_peak_mem_gib`).
`make gpu-check` (scripts/gpu_check.py) runs it at its CUDA defaults: 100 classes, batch 32.
The final line is `cocoop train speedup: <x>x  eval speedup: <y>x`; JSON and a PNG figure go to
results/bench/.

Deep-prompt methods (`--methods`, default every registered one; batch 4 as their recipes): the official trainers
run one batched pass per tower, but every forward encodes all class prompts at the full context length, at test
time too. Ours cuts the text pass after the longest EOT and, at test time, encodes a test set's prompts once
(the timed eval steps then run the image tower alone). Both run the same weights, images and code path otherwise.
Each method writes <name>_<device>.json/.png and prints `<name> train speedup: <x>x  eval speedup: <y>x`.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..models import clip as _clip  # noqa: F401  (registers the mini CLIP configs)
from ..methods import prompt as methods
from ..models.deep_prompts import DeepPromptCLIP
from ..models.prompt import PromptCLIP
from ..models.text_encoder import text_chunk_for
from ..utils.device import autocast, pick_device
from ..utils.io import atomic_write
from ..workbook import paths

_ADJ = ["red", "small", "common", "great", "spotted", "northern", "giant", "golden", "wild", "striped",
        "black", "american", "european", "mountain", "sea", "desert", "royal", "little", "grey", "water"]
_NOUN = ["fox", "owl", "beetle", "sparrow", "terrier", "willow", "orchid", "truck", "lamp", "violin",
         "salamander", "kettle", "heron", "tortoise", "mushroom", "canoe", "lizard", "warbler", "cactus", "monkey",
         "retriever", "jellyfish", "trolleybus", "harmonica", "locomotive"]


def synthetic_classnames(n: int, seed: int = 0) -> list[str]:
    """n distinct names of 1 to 3 words (ImageNet/CoOp-like lengths: most 1-2 words, a few longer)."""
    g = torch.Generator().manual_seed(seed)
    names: list[str] = []
    seen = set()
    while len(names) < n:
        words = int(torch.multinomial(torch.tensor([0.45, 0.4, 0.15]), 1, generator=g)) + 1
        parts = [_ADJ[int(torch.randint(len(_ADJ), (1,), generator=g))] for _ in range(words - 1)]
        parts.append(_NOUN[int(torch.randint(len(_NOUN), (1,), generator=g))])
        name = " ".join(parts)
        if name in seen:
            name = f"{name} {len(names)}"
        seen.add(name)
        names.append(name)
    return names


def reference_cocoop_logits(model: PromptCLIP, images: torch.Tensor) -> torch.Tensor:
    """The official CoCoOp forward: one image at a time, all class prompts at the full context length."""
    img = model.encode_images(images)
    pl = model.prompt_learner
    all_cls = torch.arange(pl.n_cls, device=img.device)
    rows = []
    for i in range(img.shape[0]):
        ctx = pl.context(img[i:i + 1])  # (1, M, C)
        prompts = pl.build_prompts(ctx, all_cls)[0]  # (K, 77, C)
        text = F.normalize(model.text_encoder(prompts, pl.eot_idx).float(), dim=-1)
        rows.append(model.logit_scale() * img[i] @ text.t())
    return torch.stack(rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(fns: dict, device, warmup: int, iters: int, use_cpu_time: bool = False):
    """Median seconds per call of each fn, calls interleaved (a, b, a, b, ...).

    use_cpu_time: measure this process's CPU time instead of wall time. On a CPU shared with other
    jobs, wall time of a long call absorbs their load while a short call may not; CPU time charges
    each path only for its own work. Returns ({name: median}, {name: {"wall": [...], "cpu": [...]}}).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            samples[name]["wall"].append(time.perf_counter() - wall)
            samples[name]["cpu"].append(time.process_time() - cpu)
    key = "cpu" if use_cpu_time else "wall"
    return {name: statistics.median(v[key]) for name, v in samples.items()}, samples


def _train_step(loss_fn, opt, device, precision):
    """One timed training step: the loss under autocast, backward, SGD step."""
    def step():
        with autocast(device, precision):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _eval_step(forward, device, precision):
    def step():
        with torch.no_grad(), autocast(device, precision):
            forward()
    return step


def main(argv: list[str] | None = None) -> int:
    run_bench(argv)
    return 0


def run_bench(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vlpt_lib bench cocoop", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip model name (random weights)")
    parser.add_argument("--classes", type=int, default=None, help="number of classes (cpu 50, cuda 100)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (cpu 2, cuda 32)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per measurement (cpu 3, cuda 5)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", default="auto", help="auto (cpu fp32, cuda bf16), bf16, fp16, fp32")
    parser.add_argument("--text-chunk", type=int, default=None, help="max prompts per text pass (cpu 128, cuda 8192)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--no-share-prefix", action="store_true", help="fast path without prefix sharing")
    parser.add_argument("--no-projection", action="store_true", help="skip the ImageNet-val projection on CUDA")
    parser.add_argument("--proj-batch", type=int, default=100, help="images per batch for the projection")
    parser.add_argument("--out", default=None, help="output stem under results/bench/ (default cocoop_<device>)")
    parser.add_argument("--methods", default=None, help="comma-separated deep-prompt methods to time after CoCoOp "
                                                        "(default: every registered one; 'none': CoCoOp only)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    n_cls = args.classes or (100 if cuda else 50)
    batch = args.batch or (32 if cuda else 2)
    iters = args.iters or (5 if cuda else 3)
    chunk = args.text_chunk or text_chunk_for(device)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True

    torch.manual_seed(0)
    clip = open_clip.create_model(args.model, pretrained=None).to(device).eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    model = methods.get("CoCoOp")(clip, tokenizer, ctx_init="a photo of a", text_chunk=chunk,
                       share_prefix=not args.no_share_prefix)
    model.set_classnames(synthetic_classnames(n_cls))
    size = clip.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, n_cls, (batch,), device=device)
    eot = model.prompt_learner.eot_idx
    info = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()}, "
                                                                     f"{torch.get_num_threads()} threads)",
        "model": args.model, "classes": n_cls, "batch": batch, "iters": iters, "precision": args.precision,
        "context_length": model.text_encoder.context_length, "longest_prompt_tokens": int(eot.max()) + 1,
        "mean_prompt_tokens": float(eot.float().mean()) + 1, "text_chunk": chunk,
        "clock": "wall (cuda synchronised)" if cuda else "process CPU time (median)",
        "share_prefix": model.share_prefix and model.text_encoder.supports_shared_prefix, "torch": torch.__version__,
    }
    print(f"bench cocoop on {info['device']}: {args.model} (random weights), {n_cls} classes, batch {batch}, "
          f"prompts {info['longest_prompt_tokens']} of {info['context_length']} tokens at most", flush=True)

    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    state0 = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}

    # Same weights, same images: how close are the two paths (fp32 on CPU; autocast on CUDA)?
    model.eval()
    with torch.no_grad(), autocast(device, args.precision):
        diff = (model(images).float() - reference_cocoop_logits(model, images).float()).abs().max().item()
    info["max_abs_logit_diff"] = diff
    print(f"max |fast - reference| logit difference: {diff:.2e}", flush=True)

    def train_step(forward):
        return _train_step(lambda: F.cross_entropy(forward(images).float(), labels), opt, device, args.precision)

    def eval_step(forward):
        return _eval_step(lambda: forward(images), device, args.precision)

    fast_fwd = model
    ref_fwd = lambda x: reference_cocoop_logits(model, x)  # noqa: E731
    timings, samples = {}, {}
    clock = "GPU wall time" if cuda else "process CPU time; the machine may be shared"
    for phase, make in (("train", train_step), ("eval", eval_step)):
        model.train(phase == "train")
        best, raw = _time_pair({"fast": make(fast_fwd), "reference": make(ref_fwd)}, device, args.warmup, iters,
                               use_cpu_time=not cuda)
        for name in ("fast", "reference"):
            timings[f"{phase}_{name}_s_per_image"] = best[name] / batch
            samples[f"{phase}_{name}_s_per_batch"] = raw[name]
            wall = statistics.median(raw[name]["wall"]) / batch
            print(f"{phase:5s} {name:9s}: {1000 * best[name] / batch:9.1f} ms/image ({clock})"
                  + ("" if cuda else f"   wall {1000 * wall:9.1f} ms/image"), flush=True)
        timings[f"{phase}_wall_speedup"] = statistics.median(raw["reference"]["wall"]) / statistics.median(
            raw["fast"]["wall"])
    model.prompt_learner.load_state_dict(state0)
    train_x = timings["train_reference_s_per_image"] / timings["train_fast_s_per_image"]
    eval_x = timings["eval_reference_s_per_image"] / timings["eval_fast_s_per_image"]
    result = {**info, **timings, "train_speedup": train_x, "eval_speedup": eval_x, "samples": samples}
    if cuda:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    if cuda and not args.no_projection:
        result.update(_imagenet_projection(model, device, args, size))

    stem = args.out or f"cocoop_{device.type}"
    out_dir = paths.bench_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / f"{stem}.json", json.dumps(result, indent=2))
    _figure(result, out_dir / f"{stem}.png")
    print(f"saved {out_dir / (stem + '.json')} and {stem}.png")
    deep = {name: _bench_deep(name, clip, tokenizer, args, device, n_cls, size) for name in deep_methods(args.methods)}
    if deep:  # their headline numbers beside CoCoOp's, in the JSON make gpu-check gathers
        keys = ("batch", "train_speedup", "eval_speedup", "train_fast_images_per_s", "eval_fast_images_per_s",
                "max_abs_logit_diff")
        result["deep_prompt_methods"] = {name: {k: res[k] for k in keys} for name, res in deep.items()}
        atomic_write(out_dir / f"{stem}.json", json.dumps(result, indent=2))
    for name, res in deep.items():
        print(f"{name} train speedup: {res['train_speedup']:.1f}x  eval speedup: {res['eval_speedup']:.1f}x")
    print(f"cocoop train speedup: {train_x:.1f}x  eval speedup: {eval_x:.1f}x", flush=True)
    return result


def deep_methods(selection: str | None) -> list[str]:
    """The registered methods built on deep prompts in both towers (or those named, checked)."""
    deep = [n for n in methods.names() if issubclass(methods.get(n), DeepPromptCLIP)]
    if selection is None:
        return deep
    if selection.strip().lower() == "none":
        return []
    names = [n.strip() for n in selection.split(",") if n.strip()]
    bad = [n for n in names if n not in deep]
    if bad:
        raise SystemExit(f"--methods: {', '.join(bad)} not among the deep-prompt methods ({', '.join(deep)})")
    return names


def official_style(model: DeepPromptCLIP, fn):
    """fn run the way the official deep-prompt trainers compute: every call encodes all class prompts in one
    pass at the full context length, and keeps no text features between test batches."""
    def call(*args):
        saved = model.truncate, model.text_chunk
        model.truncate, model.text_chunk, model._text_cache = False, 1 << 30, None
        try:
            return fn(*args)
        finally:
            model.truncate, model.text_chunk = saved
    return call


def _bench_deep(name: str, clip, tokenizer, args, device, n_cls: int, size) -> dict:
    cuda = device.type == "cuda"
    batch = args.batch or (32 if cuda else 4)
    iters = args.iters or (5 if cuda else 3)
    cls = methods.get(name)
    recipe = methods.validate({"method": name, "data_root": "."})
    torch.manual_seed(0)
    model = cls(clip, tokenizer, text_chunk=args.text_chunk or text_chunk_for(device),
                **cls.model_kwargs(recipe)).to(device)
    model.set_classnames(synthetic_classnames(n_cls))
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, n_cls, (batch,), device=device)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=recipe.lr, momentum=0.9, weight_decay=5e-4)
    state0 = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    model.eval()
    with torch.no_grad(), autocast(device, args.precision):
        diff = (model(images).float() - official_style(model, model)(images).float()).abs().max().item()

    def train_step(forward):
        return _train_step(lambda: forward(images, labels)["loss"], opt, device, args.precision)

    def eval_step(forward):
        return _eval_step(lambda: forward(images), device, args.precision)

    result = {"method": name, "model": args.model, "classes": n_cls, "batch": batch, "iters": iters,
              "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
              "clock": "wall (cuda synchronised)" if cuda else "process CPU time (median)",
              "max_abs_logit_diff": diff, "recipe": {k: getattr(recipe, k) for k in cls.model_kwargs(recipe)
                                                     if k != "seed_ctx"}}
    print(f"bench {name}: {n_cls} classes, batch {batch}; max |ours - official-style| logit difference {diff:.2e}",
          flush=True)
    for phase, make in (("train", train_step), ("eval", eval_step)):
        model.train(phase == "train")
        # at least one untimed step each: frozen features a method keeps per class set (a template ensemble the
        # official trainer computes once at start too) are not part of a step
        best, raw = _time_pair({"fast": make(model), "reference": make(official_style(model, model))}, device,
                               max(1, args.warmup), iters, use_cpu_time=not cuda)
        for path in ("fast", "reference"):
            result[f"{phase}_{path}_s_per_image"] = best[path] / batch
            result[f"{phase}_{path}_images_per_s"] = batch / best[path]
            print(f"{name} {phase:5s} {path:9s}: {1000 * best[path] / batch:9.1f} ms/image, "
                  f"{batch / best[path]:8.1f} images/s", flush=True)
        result[f"{phase}_speedup"] = best["reference"] / best["fast"]
    model.prompt_learner.load_state_dict(state0)
    if cuda:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    stem = f"{name.lower()}_{device.type}"
    out_dir = paths.bench_dir()
    atomic_write(out_dir / f"{stem}.json", json.dumps(result, indent=2))
    _figure(result, out_dir / f"{stem}.png", title=f"{name} {args.model}, {n_cls} classes, batch {batch}, "
                                                   f"{result['device']}",
            labels=("official-style (full-length text every batch)", "ours (cut at EOT, test prompts once)"))
    return result


def _imagenet_projection(model: PromptCLIP, device, args, size) -> dict:
    """Time the fast eval on 1,000 classes and extrapolate to ImageNet-val (50,000 images)."""
    n_images, n_cls = 50_000, 1000
    model.set_classnames(synthetic_classnames(n_cls, seed=1))
    images = torch.randn(args.proj_batch, 3, *size, device=device)

    def step():
        with torch.no_grad(), autocast(device, args.precision):
            model(images)

    torch.cuda.reset_peak_memory_stats(device)
    per_batch = _time_pair({"fast": step}, device, 1, 3)[0]["fast"]
    projected = per_batch * n_images / args.proj_batch
    eot = model.prompt_learner.eot_idx
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"projected ImageNet-val eval (50,000 images x 1,000 classes, {args.proj_batch} images/batch, "
          f"prompts up to {int(eot.max()) + 1} tokens): {projected / 60:.1f} min on this GPU "
          f"({1000 * per_batch / args.proj_batch:.2f} ms/image, peak {peak_gib:.1f} GiB)", flush=True)
    return {"imagenet_val_projection_min": projected / 60, "projection_s_per_image": per_batch / args.proj_batch,
            "projection_batch": args.proj_batch, "projection_classes": n_cls,
            "projection_longest_prompt_tokens": int(eot.max()) + 1, "projection_peak_mem_gib": peak_gib}


def _figure(result: dict, path, title: str | None = None,
            labels=("per-image reference (full 77 tokens)", "fast exact (batched, cut at EOT)")) -> None:
    fig = Figure(figsize=(5.5, 3.2))  # no pyplot: renders with Agg whatever the session's backend
    ax = fig.subplots()
    groups = ["train", "eval"]
    ref = [1000 * result[f"{g}_reference_s_per_image"] for g in groups]
    fast = [1000 * result[f"{g}_fast_s_per_image"] for g in groups]
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], ref, 0.4, label=labels[0])
    ax.bar([x + 0.2 for x in xs], fast, 0.4, label=labels[1])
    for x, r, f in zip(xs, ref, fast):
        ax.text(x + 0.2, f, f"{r / f:.1f}x", ha="center", va="bottom")
    ax.set_xticks(list(xs), groups)
    ax.set_ylabel("ms per image")
    ax.set_title(title or f"CoCoOp {result['model']}, {result['classes']} classes, {result['device']}", fontsize=8)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


if __name__ == "__main__":
    main()
