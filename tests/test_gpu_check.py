"""What of `make gpu-check` runs without a GPU: the wrapper parses, steps time out and fail as reported, the
summary JSON from fabricated bench output, the card names, and the MFU of a ViT-B/16 step by hand."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlpt_lib.bench import mvp as bench_mvp
from vlpt_lib.models.masking import BlockMaskGenerator

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def test_wrapper_parses():
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")], check=True)


@pytest.mark.parametrize("name, tag", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200-NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM4"),
])
def test_card_tag(name, tag):
    assert gpu_check.card_tag(name) == tag


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0),   # SXM
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("Some Other Card", None),
])
def test_peak_by_card(name, peak):
    assert bench_mvp.gpu_peak_tflops(name) == peak


def test_steps_report_ok_failure_and_timeout(tmp_path):
    py = sys.executable
    ok = gpu_check.run_step("ok", [py, "-c", "print('fine')"], 30, None, tmp_path / "ok.log")
    failed = gpu_check.run_step("bad", [py, "-c", "print('boom'); raise SystemExit(3)"], 30, None, tmp_path / "b.log")
    slow = gpu_check.run_step("slow", [py, "-c", "import time; print('waiting', flush=True); time.sleep(60)"], 1.5,
                              None, tmp_path / "s.log")
    assert (ok["status"], ok["rc"]) == ("ok", 0) and "tail" not in ok
    assert (failed["status"], failed["rc"]) == ("failed", 3) and "boom" in failed["tail"]
    assert slow["status"] == "timeout" and slow["seconds"] < 20 and "waiting" in slow["tail"]
    assert (tmp_path / "b.log").read_text() == "boom\n"


def _fabricated_benches(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "cocoop_cuda.json").write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3", "classes": 100, "train_speedup": 16.0, "eval_speedup": 40.0,
        "imagenet_val_projection_min": 2.5, "peak_mem_gib": 30.0, "projection_peak_mem_gib": 12.0}))
    (folder / "mvp_cuda_beit_base_b128.json").write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3", "peak_tflops": 989.0, "peak_source": "data sheet", "best_mode": "compiled",
        "records": [{"mode": "eager", "img_per_s": 300.0, "mfu": 0.10},
                    {"mode": "tuned", "img_per_s": 1200.0, "mfu": 0.40},
                    {"mode": "compiled", "img_per_s": 1500.0, "mfu": 0.50, "peak_mem_gib": 20.0}]}))
    for name in ("cocoop_cuda.png", "mvp_cuda_beit_base_b128.png"):
        (folder / name).write_bytes(b"png")


def _fabricated_dry_run(folder: Path) -> None:
    for run, peak in (("prompt-aaa", 3.5), ("pretrain-bbb", 11.0), ("segment-ccc", None)):
        (folder / "runs" / run).mkdir(parents=True)
        result = {"run_id": run, "wall_s": 4.0} | ({"peak_mem_gib": peak} if peak is not None else {})
        (folder / "runs" / run / "result.json").write_text(json.dumps(result))
    (folder / "notebooks").mkdir()
    for name, status in (("10_mvp_pretrain", "ok"), ("20_cocoop_base2new", "failed")):
        (folder / "notebooks" / f"{name}.run.json").write_text(json.dumps({"status": status, "seconds": 9.0}))


def test_summary_json_targets_and_figures(tmp_path, capsys):
    bench_src, root = tmp_path / "work" / "bench", tmp_path / "results"
    _fabricated_benches(bench_src)
    _fabricated_dry_run(root / "dry-run" / "paper")
    steps = [{"step": "cocoop", "status": "ok", "rc": 0, "seconds": 60.0, "command": []},
             {"step": "dry-run", "status": "failed", "rc": 1, "seconds": 200.0, "command": [], "tail": ["x"]}]
    gpu_check.summarize("NVIDIA H100 80GB HBM3", steps, bench_src, root, 300.0)

    written = json.loads((root / "bench" / "gpu_check-H100.json").read_text())
    assert written["card"] == "NVIDIA H100 80GB HBM3" and written["steps"] == steps
    targets = {t["key"]: t for t in written["targets"]}
    # 16x against >= 20x: a miss, short by 20 / 16 = 1.25x
    assert targets["cocoop_train_speedup"]["pass"] is False and "1.25x short" in targets["cocoop_train_speedup"]["note"]
    assert targets["imagenet_val_eval_min"]["pass"] is True and targets["imagenet_val_eval_min"]["value"] == 2.5
    # the bench's best mode (compiled): MFU 0.50 -> 50 %, against >= 45 %
    assert targets["mvp_mfu_pct"]["pass"] is True and targets["mvp_mfu_pct"]["value"] == pytest.approx(50.0)
    dry = written["dry_run"]
    assert dry["max_peak_mem_gib"] == 11.0 and dry["jobs_without_peak_mem"] == 1 and len(dry["notebooks"]) == 2
    assert (root / "bench" / "cocoop-H100.png").read_bytes() == b"png"
    assert (root / "bench" / "mvp-H100.png").exists()
    out = capsys.readouterr().out
    assert "MISS" in out and "pass" in out and "1/2 notebooks ok" in out


def test_summary_without_bench_output_marks_targets_unmeasured(tmp_path, capsys):
    steps = [{"step": "setup", "status": "failed", "rc": 1, "seconds": 3.0, "command": [], "tail": ["no wheel"]},
             {"step": "dry-run", "status": "skipped", "rc": None, "seconds": 0.0, "command": [], "tail": []}]
    written = gpu_check.summarize("NVIDIA H200", steps, tmp_path / "missing", tmp_path / "results", 5.0)
    assert [t["pass"] for t in written["targets"]] == [None, None, None]
    assert written["dry_run"] is None and written["figures"] == {}
    assert (tmp_path / "results" / "bench" / "gpu_check-H200.json").exists()


def test_speedup_target_only_counts_at_100_classes():
    values = gpu_check.target_values({"classes": 50, "train_speedup": 30.0}, None)
    assert values["cocoop_train_speedup"] is None


def _vit_b16_forward_flops(n_patches: int, head_tokens: int, head_out: int) -> tuple[int, int, int]:
    """(patch embedding, transformer blocks, output head) FLOPs of one ViT-B/16 image forward: 2 FLOPs per
    multiply-add of every weight matmul, plus the attention's Q K^T and A V."""
    width, depth, mlp, patch = 768, 12, 3072, 16
    tokens = n_patches + 1  # + class token
    embed = 2 * n_patches * (3 * patch * patch) * width
    weight_macs_per_token = 3 * width * width + width * width + 2 * width * mlp  # qkv, out proj, fc1, fc2
    attention = 2 * 2 * tokens * tokens * width  # Q K^T and A V, each tokens^2 * width multiply-adds
    blocks = depth * (2 * tokens * weight_macs_per_token + attention)
    head = 2 * head_tokens * width * head_out
    return embed, blocks, head


def test_mvp_flops_and_mfu_match_the_architecture_by_hand():
    torch.manual_seed(0)
    student, teacher = bench_mvp.build("beit_base", "ViT-B-16", torch.device("cpu"), fused_attn=False)
    mask = torch.from_numpy(BlockMaskGenerator.from_ratio(student.grid).batch(1, seed=0)).flatten(1)
    counted = bench_mvp.count_flops(student, teacher, torch.rand(1, 3, 224, 224), mask)

    n_masked, clip_dim = int(mask.sum()), 512
    # student: forward, then backward = 2x forward for every matmul that needs input and weight gradients; the
    # patch embedding needs only its weight gradient (images take none): 1x
    embed, blocks, head = _vit_b16_forward_flops(196, n_masked, clip_dim)
    student_fwd_bwd = (embed + blocks + head) + (embed + 2 * blocks + 2 * head)
    # teacher: forward only, its 196 patch tokens projected to the CLIP width
    embed, blocks, proj = _vit_b16_forward_flops(196, 196, clip_dim)
    assert counted == {"student_fwd_bwd": student_fwd_bwd, "teacher_fwd": embed + blocks + proj}

    total = student_fwd_bwd + embed + blocks + proj
    assert total == 140_604_358_656  # 105.32 GFLOP student forward+backward + 35.28 GFLOP teacher forward
    # one such step in 0.25 ms on an H100 SXM: 140.6e9 / 0.25e-3 s / 989e12 FLOP/s = 0.5687
    assert bench_mvp.mfu(total, 0.25e-3, 989.0) == pytest.approx(0.56867, abs=0.5e-5)  # its 5 decimals
