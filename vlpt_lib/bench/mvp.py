"""Speed benchmark of one MVP pre-training step: teacher forward + student forward/backward + AdamW step.

    python -m vlpt_lib bench mvp [--device cpu|cuda] [--model beit_base|mini|smoke] [--batch B]
                                 [--steps N] [--warmup W] [--modes eager,tuned,compiled] [--max-seconds S]

Synthetic in-memory batches (random images in [0, 1], BEiT block masks made once), random weights
(no downloads). In the same run it compares
  eager:    fp32, attention written out (timm fused_attn off), plain AdamW (for-each);
  tuned:    bf16 autocast on CUDA, fused attention (SDPA via timm fused_attn; open_clip's MHA uses
            SDPA too), fused AdamW, TF32 matmuls;
  compiled: tuned + torch.compile of the student and the teacher (first steps compile: warm-up).
Model FLOPs per step are counted once with torch.utils.flop_counter (student forward+backward and
teacher forward; matmuls, convolutions and attention). MFU = counted FLOPs per second / peak: the
card's bf16 dense peak (PEAK_TFLOPS: H100 SXM and H200 989 TFLOP/s, H100 PCIe 756); on CPU the peak
is measured (a large fp32 matmul), so CPU "MFU" reads as the fraction of this machine's own sgemm
rate. The last line is
    mvp pretrain: <n> img/s, MFU <m>%, <x>x over fp32 eager
JSON and a PNG go to results/bench/ (paths.bench_dir()).

GPU recipe (what `make gpu-check` runs, scripts/gpu_check.py; about 3 minutes of H100 time):
    python -m vlpt_lib bench mvp --device cuda --model beit_base --batch 128 --steps 20 --warmup 5 \
        --modes eager,tuned,compiled --max-seconds 30
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import open_clip
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vlpt_lib.models.clip  # noqa: F401  (registers the mini CLIP configs)
from vlpt_lib.models.masking import BlockMaskGenerator
from vlpt_lib.models.mvp import ClipTeacher, MVPStudent, masked_loss
from vlpt_lib.utils.device import autocast, pick_device
from vlpt_lib.utils.io import atomic_write
from vlpt_lib.workbook import paths

# bf16 dense tensor-core peak (TFLOP/s) by a piece of torch.cuda.get_device_name(); the longest matching piece
# wins ("H100 PCIe" before "H100"). Source: NVIDIA's data sheets, which quote bf16 "with sparsity": dense is half
# (H100 SXM 1,979 -> 989; H100 PCIe 1,513 -> 756; H100 NVL 1,671 -> 835; H200 SXM 1,979 -> 989; H200 NVL 1,671
# -> 835; A100 dense 312). An H100 SXM reports itself as "NVIDIA H100 80GB HBM3", hence the bare "H100" entry.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200 NVL": 835.0, "H200": 989.0,
               "H800": 989.0, "GH200": 989.0, "A100": 312.0, "A800": 312.0,
               "L40S": 362.0, "L4": 121.0, "A10": 125.0, "V100": 125.0, "RTX 4090": 165.0}
TEACHERS = {"beit_base": "ViT-B-16", "beit_large": "ViT-B-16", "mini": "vlpt-mini-clip", "smoke": "vlpt-smoke-clip"}


def gpu_peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key]
    return None


def mfu(flops_per_step: float, seconds_per_step: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: the model's counted FLOPs per second as a fraction of the card's peak."""
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


def cpu_peak_tflops(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul rate (TFLOP/s), the CPU stand-in for a data-sheet peak."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def build(model: str, teacher_name: str, device: torch.device, fused_attn: bool):
    clip_model = open_clip.create_model(teacher_name, pretrained=None, device=device)
    teacher = ClipTeacher(clip_model, precision="auto").to(device)
    student = MVPStudent(model, target_dim=teacher.out_dim).to(device)
    for blk in student.encoder.blocks:
        blk.attn.fused_attn = fused_attn
    return student, teacher


def make_step(student, teacher, opt, device, precision: str, compiled: bool):
    teacher.precision = precision
    fwd_student = torch.compile(student) if compiled else student
    grid = student.grid

    def step(images, mask):
        tgt = teacher(images, grid)[mask]
        with autocast(device, precision):
            pred = fwd_student(images, mask)
        loss = masked_loss(pred, tgt, "cosine")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        opt.step()
        return loss

    if compiled:
        teacher.visual.forward_intermediates = torch.compile(teacher.visual.forward_intermediates)
    return step


def count_flops(student, teacher, images, mask) -> dict:
    # In eval + no_grad nn.MultiheadAttention takes a fused fast path the counter does not see; count the
    # same maths with the modules flagged as training (no dropout in CLIP, so identical outputs). SDPA runs on
    # its math backend while counting: the counter knows no CPU flash kernel, and the matmuls it is made of
    # count the same on every device.
    modules = list(teacher.visual.modules())
    for m in modules:
        m.training = True
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc_t:
            tgt = teacher(images, student.grid)[mask]
    finally:
        for m in modules:
            m.training = False
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc_s:
        loss = masked_loss(student(images, mask), tgt, "cosine")
        loss.backward()
    student.zero_grad(set_to_none=True)
    return {"teacher_fwd": fc_t.get_total_flops(), "student_fwd_bwd": fc_s.get_total_flops()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(mode: str, args, device, images, mask) -> dict:
    tuned = mode != "eager"
    precision = ("bf16" if device.type == "cuda" else args.cpu_precision) if tuned else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tuned
        torch.backends.cudnn.allow_tf32 = tuned
    torch.manual_seed(0)
    student, teacher = build(args.model, args.teacher, device, fused_attn=tuned)
    fused = tuned and device.type == "cuda"
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.05,
                            fused=fused or None, foreach=None if fused else True)
    step = make_step(student, teacher, opt, device, precision, compiled=mode == "compiled")
    t_start = time.perf_counter()
    for _ in range(args.warmup):
        step(images, mask)
    sync(device)
    warm_s = time.perf_counter() - t_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, t0 = [], time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step(images, mask)
        sync(device)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - t0 > args.max_seconds:
            break
    total = sum(times)
    rec = {"mode": mode, "precision": precision, "fused_attn": tuned, "fused_adamw": fused,
           "compiled": mode == "compiled", "steps": len(times), "warmup_s": round(warm_s, 3),
           "step_s_median": float(np.median(times)), "img_per_s": args.batch * len(times) / total,
           "loss": loss.item()}
    if device.type == "cuda":
        rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    del student, teacher, opt, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m vlpt_lib bench mvp", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--model", default=None, help="student arch: beit_base | beit_large | mini | smoke "
                                                 "(default: beit_base on cuda, mini on cpu)")
    p.add_argument("--teacher", default=None, help="open_clip model name (default: ViT-B-16 for beit_*)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 128 cuda / 32 cpu)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 20 cuda / 5 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default 5 cuda / 1 cpu)")
    p.add_argument("--modes", default=None, help="comma list of eager,tuned,compiled "
                                                 "(default eager,tuned,compiled on cuda; eager,tuned on cpu)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="cap on the timed loop of each mode")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak used for MFU")
    p.add_argument("--cpu-precision", default="fp32", help="tuned precision on CPU (fp32 | bf16)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--out", default=None, help="output folder (default results/bench)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """CLI entry (exit status 0); `run_bench` returns the result dict."""
    run_bench(argv)
    return 0


def run_bench(argv=None) -> dict:
    args = parse(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    args.model = args.model or ("beit_base" if cuda else "mini")
    args.teacher = args.teacher or TEACHERS.get(args.model, "ViT-B-16")
    args.batch = args.batch or (128 if cuda else 32)
    args.steps = args.steps or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    modes = (args.modes or ("eager,tuned,compiled" if cuda else "eager,tuned")).split(",")

    # inputs and FLOPs (counted once, eager fp32, same maths as every mode)
    torch.manual_seed(0)
    student, teacher = build(args.model, args.teacher, device, fused_attn=False)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, student.img_size, student.img_size, generator=g).to(device)
    masker = BlockMaskGenerator.from_ratio(student.grid)
    mask = torch.from_numpy(masker.batch(args.batch, seed=0)).flatten(1).to(device)
    flops = count_flops(student, teacher, images, mask)
    del student, teacher
    flops_step = flops["teacher_fwd"] + flops["student_fwd_bwd"]
    if args.peak_tflops:
        peak, peak_src = args.peak_tflops, "--peak-tflops"
    elif cuda:
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak_tflops(name)
        peak_src = f"{name} bf16 dense data sheet" if peak else f"{name}: unknown peak (pass --peak-tflops)"
    else:
        peak, peak_src = cpu_peak_tflops(), "measured fp32 sgemm of this CPU"

    records = []
    for mode in modes:
        try:
            rec = time_mode(mode.strip(), args, device, images, mask)
        except Exception as err:  # e.g. torch.compile unavailable: report, keep the other modes
            rec = {"mode": mode, "error": f"{type(err).__name__}: {err}"}
        if "img_per_s" in rec:
            seconds_per_step = args.batch / rec["img_per_s"]
            rec["tflops"] = flops_step / seconds_per_step / 1e12
            rec["mfu"] = mfu(flops_step, seconds_per_step, peak) if peak else None
        records.append(rec)
        print(json.dumps(rec), flush=True)

    ok = [r for r in records if "img_per_s" in r]
    eager = next((r for r in ok if r["mode"] == "eager"), None)
    best = max(ok, key=lambda r: r["img_per_s"], default=None)  # the fastest mode, eager included
    out = {"bench": "mvp_pretrain_step", "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
           "device_type": device.type, "torch": torch.__version__, "model": args.model, "teacher": args.teacher,
           "batch": args.batch, "img_size": images.shape[-1], "masked_per_image": int(masker.num_masking_patches),
           "flops_per_step": flops, "gflops_per_image": flops_step / args.batch / 1e9,
           "peak_tflops": peak, "peak_source": peak_src, "records": records,
           "best_mode": best["mode"] if best else None,
           "speedup_over_fp32_eager": best["img_per_s"] / eager["img_per_s"] if best and eager else None}
    folder = paths.bench_dir() if args.out is None else Path(args.out)
    stem = f"mvp_{device.type}_{args.model}_b{args.batch}"
    atomic_write(folder / f"{stem}.json", json.dumps(out, indent=2))
    _figure(out, folder / f"{stem}.png")
    if best:
        mfu_text = f"{best['mfu'] * 100:.1f}%" if best.get("mfu") is not None else "n/a"
        x = f"{out['speedup_over_fp32_eager']:.2f}x" if out["speedup_over_fp32_eager"] else "n/a"
        print(f"flops/img {out['gflops_per_image']:.2f} GFLOP, peak {peak} TFLOP/s ({peak_src}); JSON {folder / (stem + '.json')}")
        print(f"mvp pretrain: {best['img_per_s']:.1f} img/s, MFU {mfu_text}, {x} over fp32 eager")
    return out


def _figure(out: dict, path) -> None:
    matplotlib.use("Agg")

    ok = [r for r in out["records"] if "img_per_s" in r]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([r["mode"] for r in ok], [r["img_per_s"] for r in ok], color="tab:blue")
    for i, r in enumerate(ok):
        label = f"{r['img_per_s']:.0f}" + (f"\nMFU {r['mfu'] * 100:.0f}%" if r.get("mfu") is not None else "")
        ax.text(i, r["img_per_s"], label, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("images / s")
    ax.set_ylim(0, 1.3 * max(r["img_per_s"] for r in ok))  # room for the labels above the bars, below the title
    ax.set_title(f"MVP pre-training step, {out['model']} + {out['teacher']}, batch {out['batch']}\n{out['device']}",
                 fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


if __name__ == "__main__":
    main()
