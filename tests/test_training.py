"""The shared training pieces: exact DDP evaluation, the epoch sampler, the optimizer and schedule factories
(training/optim.py: Dassl's and BEiT's schedules, timm's cosine and poly, the weight-decay rule), the layers."""
import ast
import logging
import os
import socket
import subprocess
import sys

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from timm.scheduler import CosineLRScheduler, PolyLRScheduler
from torch.utils.data import TensorDataset

from numerics import EPS64, assert_close_fp32
from references import beit_cosine_scheduler, dassl_epoch_lrs
from vlpt_lib.models.mvp import beit_finetune_param_groups
from vlpt_lib.models.segmentation import BeitUperNet, layer_decay_param_groups
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
    # accuracies and IoUs come from integer counts: equal to the bit
    assert ddp_cls["top1"] == single_cls["top1"]
    assert ddp_cls["per_class_acc"] == pytest.approx(single_cls["per_class_acc"], rel=0, abs=0, nan_ok=True)
    assert (ddp_seg["miou"], ddp_seg["aacc"]) == (single_seg["miou"], single_seg["aacc"])
    # the mean loss sums N_SAMPLES float32 terms in another grouping (tests/numerics.py)
    assert_close_fp32(ddp_cls["loss"], single_cls["loss"], k=N_SAMPLES, msg="mean loss")


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


def test_dassl_reference_rule_gives_the_published_sequence():
    # CoCoOp (vit_b16_c4_ep10_batch1_ctxv1): lr 0.002, 10 epochs, 1 constant warm-up epoch at 1e-5
    assert dassl_epoch_lrs(0.002, 10, 1, 1e-5) == pytest.approx(
        [1e-05, 0.002, 0.0019510565, 0.0018090170, 0.0015877853, 0.0013090170, 0.001, 0.0006909830,
         0.0004122147, 0.0001909830], abs=0.5e-10)  # the list's 10 decimals


@pytest.mark.parametrize("epochs", [10, 50, 200])
def test_dassl_cosine_equals_dassl(epochs):
    lr, warmup, warmup_lr, steps = 0.002, 1, 1e-5, 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = optim.create_scheduler(opt, "dassl_cosine", steps_per_epoch=steps, epochs=epochs, warmup_epochs=warmup,
                                   warmup_lr=warmup_lr, lr=lr)
    expected = dassl_epoch_lrs(lr, epochs, warmup, warmup_lr)
    for step in range(epochs * steps):
        sched.step_update(step)
        got = opt.param_groups[0]["lr"]
        if step // steps < warmup:
            assert got == warmup_lr  # the constant warm-up lr, as given
        # float64 formulas in another arrangement: a few eps64 of the peak lr (tests/numerics.py)
        assert got == pytest.approx(expected[step // steps], rel=0, abs=16 * EPS64 * lr)


@pytest.mark.parametrize("warmup_epochs,start", [(2, 0.0), (1, 1e-6), (0, 0.0)])
def test_beit_cosine_equals_beits_cosine_scheduler(warmup_epochs, start):
    lr, min_lr, epochs, niter = 5e-4, 1e-6, 6, 7
    expected = beit_cosine_scheduler(lr, min_lr, epochs, niter, warmup_epochs, start)
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=lr)
    sched = optim.create_scheduler(opt, "beit_cosine", steps_per_epoch=niter, epochs=epochs,
                                   warmup_epochs=warmup_epochs, warmup_lr=start, min_lr=min_lr)
    for step in range(epochs * niter):
        sched.step_update(step)  # engine_for_finetuning: lr_schedule_values[it] * param_group["lr_scale"]
        assert opt.param_groups[0]["lr"] == pytest.approx(expected[step] * 0.5, rel=0, abs=16 * EPS64 * lr)


def test_weight_decay_rule_skips_biases_norms_and_no_weight_decay():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.token = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Parameter(torch.zeros(1, 4))

        def no_weight_decay(self):
            return {"token"}

    net = Net()
    opt = optim.create_optimizer(net, opt="adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net.fc.weight)}
    assert all(g["betas"] == (0.9, 0.98) and g["lr"] == 1e-3 for g in opt.param_groups)


def _canon(groups):
    return sorted((sorted(id(p) for p in g["params"]), g["weight_decay"], round(g.get("lr_scale", 1.0), 12))
                  for g in groups)


def test_explicit_groups_pass_through_the_optimizer_factory():
    """finetune and segment build BEiT's groups themselves: create_optimizer keeps each group's weight
    decay and lr scale as given."""
    model = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=3, num_heads=2, num_classes=5, global_pool="avg")
    groups = beit_finetune_param_groups(model, 0.05, 0.65)
    opt = optim.create_optimizer(groups, opt="adamw", lr=1e-3, weight_decay=0.05)
    assert _canon(opt.param_groups) == _canon(beit_finetune_param_groups(model, 0.05, 0.65))
    seg = BeitUperNet(timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                        embed_dim=32, depth=4, num_heads=2, num_classes=0), 5, 16, 8)
    groups = layer_decay_param_groups(seg, 0.05, 0.65)
    opt = optim.create_optimizer(groups, opt="adamw", lr=1e-3, weight_decay=0.05)
    assert _canon(opt.param_groups) == _canon(layer_decay_param_groups(seg, 0.05, 0.65))


def test_schedules_match_the_old_per_iteration_settings():
    """create_scheduler("cosine"/"poly") gives the lr sequence of the pre-redesign make_scheduler."""
    def lrs(sched, opt, n):
        out = []
        for step in range(n):
            sched.step_update(step)
            out.append(opt.param_groups[0]["lr"])
        return out

    spe, p = 7, torch.nn.Parameter(torch.zeros(1))
    for kind, new_kw, total, warm, extra in (
            ("cosine", dict(epochs=3, warmup_epochs=1), 3 * spe, spe, {}),
            ("poly", dict(total_steps=20, warmup_steps=4, power=1.0), 20, 4, dict(power=1.0))):
        opt_a, opt_b = torch.optim.AdamW([p], lr=1e-3), torch.optim.AdamW([p], lr=1e-3)
        common = dict(t_initial=total, warmup_t=min(warm, total - 1), warmup_lr_init=1e-6, lr_min=1e-5,
                      t_in_epochs=False, warmup_prefix=False)
        old = (PolyLRScheduler(opt_a, **extra, **common) if kind == "poly" else CosineLRScheduler(opt_a, **common))
        new = optim.create_scheduler(opt_b, kind, steps_per_epoch=spe, warmup_lr=1e-6, min_lr=1e-5,
                                     warmup_prefix=False, **new_kw)
        assert lrs(new, opt_b, total) == lrs(old, opt_a, total)


def test_layers_import_one_way():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports")], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_library_imports_sit_at_the_top_of_modules():
    """No project import hidden inside a function (they hid the import circles before). The command line's entry
    point is exempt: nothing imports it, so it hides no circle, and its imports wait for a command so that `--help`
    answers at once (tests/test_cache.py pins which modules --help loads)."""
    hidden = []
    for path in sorted((REPO_ROOT / "vlpt_lib").rglob("*.py")):
        if path == REPO_ROOT / "vlpt_lib" / "__main__.py":
            continue
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


def test_damaged_last_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    """An unfinished run keeps its previous save; a last.pt cut short is named in a warning and the previous one
    is used; a finished run's save drops the fallback; with nothing readable the job starts over (None)."""
    from vlpt_lib.training import checkpoint
    checkpoint.save(tmp_path, {"epoch": 0}, keep_previous=True)
    checkpoint.save(tmp_path, {"epoch": 1}, keep_previous=True)
    assert checkpoint.load(tmp_path)["epoch"] == 1
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:40])  # a copy cut short
    logger = logging.getLogger("vlpt")  # the project's logger does not propagate: listen to it directly
    logger.addHandler(caplog.handler)
    try:
        assert checkpoint.load(tmp_path)["epoch"] == 0
    finally:
        logger.removeHandler(caplog.handler)
    assert str(last) in caplog.text and "previous-last.pt" in caplog.text
    checkpoint.save(tmp_path, {"epoch": 2})  # the last epoch: nothing will resume the run
    assert not (tmp_path / "previous-last.pt").exists() and checkpoint.load(tmp_path)["epoch"] == 2
    last.write_bytes(b"")
    assert checkpoint.load(tmp_path) is None


@pytest.mark.parametrize("max_steps, closed", [(None, [(5, 5), (5, 5)]), (7, [(5, 5), (2, 2)])])
def test_epoch_bars_close_full_when_training_ends_as_planned(tmp_path, monkeypatch, max_steps, closed):
    """Lab draws a bar closed short in red, as if interrupted: the last step of a run (and a max_steps stop
    mid-epoch) must leave every epoch's bar full."""
    bars = []

    class Bar:
        def __init__(self, total=None, **kw):
            self.n, self.total, self.closed = 0, total, None
            bars.append(self)

        def update(self, k=1):
            self.n += k

        def close(self):
            self.closed = (self.n, self.total)

    monkeypatch.setattr(loop, "bar", Bar)
    model = torch.nn.Linear(2, 1)
    data = TensorDataset(torch.randn(10, 2), torch.randn(10, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = optim.create_scheduler(opt, "constant", steps_per_epoch=5, epochs=2)
    step_fn = lambda m, batch: torch.nn.functional.mse_loss(m(batch[0]), batch[1])  # noqa: E731
    loop.train(model, data, step_fn, opt, sched, tmp_path, device=torch.device("cpu"), epochs=2, batch_size=2,
               seed=0, max_steps=max_steps)
    assert [b.closed for b in bars] == closed


def test_epoch_log_line_is_readable_and_shows_the_lr_magnitude():
    rec = {"epoch": 2, "step": 6, "loss": 1.934123, "acc": 25.0, "lr": 1e-5, "elapsed_s": 0.61}
    assert loop.epoch_line("CoOp OxfordPets", 10, rec) == \
        "CoOp OxfordPets · epoch 2/10 · loss 1.934 · acc 25 · lr 1.0e-05 · 0.6 s"


def test_logs_go_to_stdout_in_a_notebook_kernel_and_stderr_elsewhere(monkeypatch, capsys):
    from vlpt_lib.utils import progress
    log = progress.get_logger()
    log.info("in a terminal")
    assert "in a terminal" in capsys.readouterr().err
    monkeypatch.setattr(progress, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    log.info("in a kernel")  # Lab draws stderr as a pink block: the run's account goes to stdout there
    out = capsys.readouterr()
    assert "in a kernel" in out.out and "in a kernel" not in out.err


def test_open_clips_random_init_warning_is_quiet_only_where_random_weights_are_meant(caplog):
    from vlpt_lib.models.clip import random_init_expected
    with caplog.at_level(logging.WARNING):
        with random_init_expected():
            logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
            logging.warning("another warning")
        logging.warning("No pretrained weights loaded for model 'y'. Model initialized randomly.")
    assert [r.getMessage()[:40] for r in caplog.records] == ["another warning",
                                                             "No pretrained weights loaded for model '"]
