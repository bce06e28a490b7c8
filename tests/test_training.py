"""The shared training pieces: exact DDP evaluation, the epoch sampler, the schedule factory, the layers."""
import ast
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from vlpt_lib.training import evaluate, loop, optim
from vlpt_lib.workbook.paths import REPO_ROOT

N_SAMPLES = 11  # odd on purpose: a padded DistributedSampler would score one sample twice on 2 ranks


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 5, generator=g)
    return TensorDataset(x, torch.randint(0, 3, (N_SAMPLES,), generator=g))


def _seg_data():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(N_SAMPLES, 3, 6, 7, generator=g)
    labels = torch.randint(0, 4, (N_SAMPLES, 6, 7), generator=g)
    labels[:, 0] = 255
    return TensorDataset(images, labels)


def _classifier():
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3)


def _segmenter(x):
    # a fixed "model": logits from the first 4 channels of a fixed projection, at half resolution
    w = torch.arange(12, dtype=torch.float32).view(4, 3, 1, 1).sin()
    return torch.nn.functional.conv2d(x, w)[:, :, ::2, ::2]


def _scores():
    cls = evaluate.evaluate_classifier(_classifier(), _data(), device=torch.device("cpu"), batch_size=4, num_classes=3)
    seg, _ = evaluate.evaluate_segmentation(_segmenter, _seg_data(), 4, device=torch.device("cpu"))
    return cls, seg


def _worker(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cls, seg = _scores()
        if rank == 0:
            out.put((cls, seg))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_evaluation_counts_every_sample_once():
    single_cls, single_seg = _scores()
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
    ddp_cls, ddp_seg = out.get()
    assert single_cls["n"] == ddp_cls["n"] == N_SAMPLES
    assert ddp_cls["top1"] == pytest.approx(single_cls["top1"]) and ddp_cls["loss"] == pytest.approx(single_cls["loss"])
    assert ddp_cls["per_class_acc"] == pytest.approx(single_cls["per_class_acc"], nan_ok=True)
    assert ddp_seg["miou"] == pytest.approx(single_seg["miou"]) and ddp_seg["aacc"] == pytest.approx(single_seg["aacc"])


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    a, b = loop.EpochSampler(10, seed=3), loop.EpochSampler(10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_uneven_global_batch_is_refused_not_rounded(monkeypatch):
    monkeypatch.setattr(loop.distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="does not split evenly over 3"):
        loop.per_rank_batch(32)


def test_dassl_cosine_follows_the_prompt_recipe():
    # Today's CoCoOp rule (engine/prompt.py lr_at before the redesign): epoch < warmup -> warmup_lr, else
    # 0.5 * lr * (1 + cos(pi * epoch / epochs)); constant within an epoch.
    import math
    lr, epochs, warmup, warmup_lr, steps = 0.002, 10, 1, 1e-5, 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = optim.create_scheduler(opt, "dassl_cosine", steps_per_epoch=steps, epochs=epochs, warmup_epochs=warmup,
                                   warmup_lr=warmup_lr, lr=lr)
    for step in range(epochs * steps):
        sched.step_update(step)
        e = step // steps
        expected = warmup_lr if e < warmup else 0.5 * lr * (1 + math.cos(math.pi * e / epochs))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)


def test_weight_decay_rule_skips_biases_norms_and_no_weight_decay():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.token = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Parameter(torch.zeros(1, 4))

        def no_weight_decay(self):
            return {"token"}

    net = Net()
    opt = optim.create_optimizer(net, opt="adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net.fc.weight)}


def test_layers_import_one_way():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports")], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_library_imports_sit_at_the_top_of_modules():
    """No project import hidden inside a function (they hid the import circles before)."""
    hidden = []
    for path in sorted((REPO_ROOT / "vlpt_lib").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("vlpt_lib")):
                    hidden.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("vlpt_lib") for a in node.names):
                    hidden.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not hidden, "imports inside functions: " + ", ".join(hidden)
