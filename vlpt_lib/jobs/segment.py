"""ADE20K semantic segmentation job: UperNet on the (pre-trained or scratch) BEiT backbone; mIoU on val.

    run(cfg, run_dir) -> {"miou": ..., "history": [...], "rows": [tidy row], "examples": file, ...}

What is this job's own: the joint image + mask transforms (crop 512, random rescale of (2048, 512)
by 0.5-2.0, random crop with at most 75 % of one class, flip, photometric distortion), the UperNet
model (decoder 768 channels) with its auxiliary FCN head (256 channels, loss weight 0.4), BEiT's mmseg
LayerDecayOptimizerConstructor groups over the full backbone depth (models.segmentation), and
the test: the image rescaled to the short side of img_scale, sliding window (crop, stride), logits
resized to the label's size, mIoU from dataset-wide intersections and unions (exact under DDP),
label 0 ignored via reduce_zero_label (done by the ADE20K loader). The loop, AdamW, the
per-iteration poly schedule with mmcv's linear warm-up (training.optim.MmcvPoly), DDP and resume come from
`vlpt_lib.training`.

Iteration-based like mmseg (160k x 16): the loop runs ceil(iters / steps per epoch) epochs and stops
at `optim.iters` steps; a checkpoint per epoch, evaluation every `eval_every` epochs and at the end.

Defaults = BEiT's ADE20K recipe (upernet_beit_base_12_512_slide_160k_ade20k); every field names its
source in `Field(description=...)` (the notebooks' recipe card).
"""
from __future__ import annotations

import io
import math
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ..data.ade20k import ADE20K
from ..data.imagefolder import limit
from ..data.synthetic import SyntheticScenes
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from ..models.segmentation import BeitUperNet, layer_decay_param_groups, seg_loss, slide_inference
from ..training import loop, optim
from ..training.evaluate import evaluate_segmentation
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.fields import Count, Index, NonNegative, Positive, Probability
from ..utils.io import atomic_write
from ..utils.metrics import IGNORE_INDEX
from ..utils.progress import get_logger
from .pretrain import Init, RunSettings, Strict


# Sources: "BEiT upernet config" = microsoft/unilm beit/semantic_segmentation/configs/beit/upernet/
# upernet_beit_base_12_512_slide_160k_ade20k_pt.py and the _base_ files it includes (models/upernet_beit.py,
# datasets/ade20k.py, schedules/schedule_160k.py); "[A]" where we choose, with the reason; "[env]" how to run.
class Data(Strict):
    kind: Literal["ade20k", "synthetic"] = Field("ade20k", description="workbook parameter: ADEChallengeData2016, "
                                                                       "or synthetic in-memory scenes (tests)")
    root: str | None = Field(None, description="workbook parameter: the profile's data root (holds "
                                               "ADEChallengeData2016/)")
    crop: Count = Field(512, description="BEiT upernet config: crop_size (512, 512)")
    img_scale: tuple[Count, Count] = Field((2048, 512), description="BEiT _base_/datasets/ade20k.py: Resize img_scale "
                                                                    "(2048, 512) (train and test)")
    ratio_range: tuple[Positive, Positive] = Field((0.5, 2.0), description="BEiT _base_/datasets/ade20k.py: Resize "
                                                                           "ratio_range (0.5, 2.0)")
    cat_max_ratio: Probability = Field(0.75,
        description="BEiT _base_/datasets/ade20k.py: RandomCrop cat_max_ratio 0.75")
    photometric: bool = Field(True, description="BEiT _base_/datasets/ade20k.py: PhotoMetricDistortion with mmseg "
                                                "0.11.0's defaults, each step with p 0.5 on the uint8 crop: "
                                                "brightness + U(-32, 32), pixel values x U(0.5, 1.5) first or "
                                                "last, HSV saturation x U(0.5, 1.5), hue + randint(-18, 18) = "
                                                "-18..17 on OpenCV's 0..179 (-36..34 degrees) "
                                                "(jobs.segment.PhotoMetricDistortion)")
    stride: Count | None = Field(341, description="BEiT upernet config: test_cfg slide, stride (341, 341) "
                                                  "(None: ceil(2/3 crop))")
    max_train: Count | None = Field(None, description="workbook parameter: cap on the train images (None: all)")
    max_val: Count | None = Field(None, description="workbook parameter: cap on the val images (None: all)")
    num_workers: Index = Field(0, description="[env] DataLoader workers (the notebook passes its knob)")
    num_classes: Count | None = Field(None, description="BEiT upernet config: num_classes 150 (None: the dataset's; "
                                                        "label 0 ignored, reduce_zero_label)")
    n: Count = Field(16, description="[env] synthetic only: train scenes")
    n_val: Count = Field(4, description="[env] synthetic only: val scenes")
    size: Count | None = Field(None, description="[env] synthetic only: scene size (None: crop)")

    @model_validator(mode="after")
    def _default_stride(self):
        if self.stride is None:
            self.stride = math.ceil(self.crop * 2 / 3)
        return self


class Model(Strict):
    """UperNet on the ViT pyramid: mmseg 0.x's UPerHead + FCNHead layer for layer (vlpt_lib.models.segmentation);
    SyncBatchNorm under DDP, as mmseg's SyncBN."""
    decoder_channels: Count = Field(768, description="BEiT upernet config: decode_head channels=768 (UPerHead, pool "
                                                     "scales 1, 2, 3, 6)")
    aux_channels: Count = Field(256, description="BEiT _base_/models/upernet_beit.py: auxiliary FCNHead channels 256, "
                                                 "in_index 2")
    aux_weight: NonNegative = Field(0.4, description="BEiT _base_/models/upernet_beit.py: auxiliary loss_weight 0.4")
    out_indices: list[int] | None = Field(None, description="BEiT upernet config: out_indices [3, 5, 7, 11] "
                                                            "(None: those, at the same relative depths when shallower)")


class Optim(Strict):
    iters: Count = Field(160_000, description="BEiT _base_/schedules/schedule_160k.py: max_iters 160000")
    batch_size: Count = Field(16, description="BEiT upernet config: samples_per_gpu 2 x 8 GPUs = global 16")
    lr: Positive = Field(7e-4, description="BEiT upernet config: AdamW lr 7e-4 (at batch 16)")
    lr_ref_batch: Count | None = Field(16, description="[A] the batch `lr` is quoted at; linear scaling for another "
                                                       "batch (BEiT does not scale); None: lr used as is")
    schedule: Literal["mmcv_poly"] = Field("mmcv_poly", description="BEiT upernet config: lr_config policy poly, "
                                                                    "warmup linear, by_epoch False = mmcv 1.3.0 "
                                                                    "PolyLrUpdaterHook, per iteration "
                                                                    "(training.optim.MmcvPoly)")
    min_lr: NonNegative = Field(0.0, description="BEiT upernet config: poly min_lr 0.0")
    warmup_iters: Index = Field(1500, description="BEiT upernet config: warmup_iters 1500, linear: the poly lr times "
                                                  "1 - (1 - i/1500)(1 - warmup_ratio) at iteration i < 1500")
    warmup_ratio: Probability = Field(1e-6, description="BEiT upernet config: warmup_ratio 1e-6 (iteration 0 trains at "
                                                        "1e-6 x its poly lr)")
    power: Positive = Field(1.0, description="BEiT upernet config: poly power 1.0")
    weight_decay: NonNegative = Field(0.05, description="BEiT upernet config: weight_decay 0.05; not on 1-D and .bias "
                                                        "(LayerDecayOptimizerConstructor): cls token and rel-pos "
                                                        "tables ARE decayed")
    layer_decay: Probability = Field(0.65,
        description="BEiT upernet config: LayerDecayOptimizerConstructor num_layers 12, "
                    "layer_decay_rate 0.65: scale 0.65^(13-id), decoder and heads id 13")
    drop_path: Probability = Field(0.1, description="BEiT upernet config: backbone drop_path_rate 0.1")
    betas: tuple[Probability, Probability] = Field((0.9, 0.999),
        description="BEiT upernet config: AdamW betas (0.9, 0.999)")
    eps: Positive = Field(1e-8, description="BEiT upernet config: AdamW eps (torch default 1e-8)")
    clip_grad: Positive | None = Field(None, description="BEiT upernet config: optimizer_config grad_clip None")


class Config(RunSettings):
    method: str = Field("MVP", description="workbook parameter: the table row this run fills")
    examples: Index = Field(4, description="[env] validation predictions kept for the figure")
    eval_every: int = Field(0, description="[A] evaluate every n epochs; 0: only at the end (BEiT's mmseg evaluates "
                                           "every 16k iterations; the table reports the final model)")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="BEiT _base_/datasets/ade20k.py img_norm_cfg "
                                                                        "(ImageNet mean x 255)")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="BEiT _base_/datasets/ade20k.py img_norm_cfg "
                                                                      "(ImageNet std x 255)")
    init: Init = Init()
    data: Data = Data()
    model: Model = Model()
    optim: Optim = Optim()


# ----- joint image + mask transforms (torchvision.transforms.v2 on tv_tensors) -------------------
def _to_tv(image, mask):
    if not isinstance(image, torch.Tensor):
        image = (TF.pil_to_tensor(image) if hasattr(image, "mode")
                 else torch.as_tensor(np.asarray(image)).permute(2, 0, 1))
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(np.array(mask))
    if mask.ndim == 3:
        mask = mask[0]
    return tv_tensors.Image(image), tv_tensors.Mask(mask.long())


# ----- mmseg's PhotoMetricDistortion on uint8 RGB tensors ------------------------------------------------
# The official pipeline distorts the uint8 BGR crop (LoadImageFromFile -> Resize -> RandomCrop -> RandomFlip keep
# uint8), so every HSV round trip is OpenCV's 8-bit one: H in 0..179 (degrees / 2), S and V in 0..255.
_HSV_SHIFT = 12
_SDIV = torch.tensor([0] + [round((255 << _HSV_SHIFT) / i) for i in range(1, 256)], dtype=torch.int64)
_HDIV = torch.tensor([0] + [round((180 << _HSV_SHIFT) / (6 * i)) for i in range(1, 256)], dtype=torch.int64)
# which of (v, v(1-s), v(1-sf), v(1-s(1-f))) is r, g, b in each 60-degree sector
_SECTOR_RGB = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def rgb_to_hsv_u8(img: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) RGB -> uint8 HSV as OpenCV's cvtColor(COLOR_RGB2HSV) on 8-bit images: fixed point with
    12 fractional bits and rounded reciprocal tables, hue on 0..179."""
    r, g, b = img.to(torch.int64).unbind(0)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT  # arithmetic shift: floor, as OpenCV's on negative values
    h = h + 180 * (h < 0)
    return torch.stack([h, s, v]).to(torch.uint8)


def hsv_to_rgb_u8(hsv: torch.Tensor) -> torch.Tensor:
    """uint8 HSV (hue 0..179) -> uint8 (3, H, W) RGB as OpenCV's cvtColor(COLOR_HSV2RGB) computes it on rows of
    whole SIMD blocks (a 512 or 64 px crop row is one; only a row's last width % (4 x lanes) pixels take the scalar
    path, which rounds): float32 arithmetic, 1 - s*f with a single rounding (the fused multiply-add of the AVX2
    build), the result times 255 truncated."""
    f32 = torch.float32
    h = hsv[0].to(f32) * (torch.tensor(6.0, dtype=f32) / 180)
    s = hsv[1].to(f32) * (torch.tensor(1.0, dtype=f32) / 255)
    v = hsv[2].to(f32) * (torch.tensor(1.0, dtype=f32) / 255)
    sector = h.floor()
    f = h - sector
    s64 = s.double()  # a float32 x float32 product is exact in float64: 1 - s*f rounds once, to float32
    tab = torch.stack([v, v * (1 - s), v * (1 - s64 * f.double()).to(f32),
                       v * (1 - s64 * (1 - f).double()).to(f32)])
    idx = _SECTOR_RGB[sector.long()].permute(2, 0, 1)  # (3, H, W): the tab entry of r, g, b
    rgb = torch.gather(tab, 0, idx) * 255
    return rgb.trunc().clamp(0, 255).to(torch.uint8)


def _convert(img: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion.convert: float32 img * alpha + beta, clipped to 0..255, cast to uint8
    (truncation)."""
    f32 = torch.float32
    out = img.to(f32) * torch.tensor(alpha, dtype=f32) + torch.tensor(beta, dtype=f32)
    return out.clamp(0, 255).to(torch.uint8)


class _TorchDraws:
    """numpy.random's randint / uniform interface on torch's global generator (seeded by the job and, in
    DataLoader workers, by torch per worker)."""

    @staticmethod
    def randint(low: int, high: int | None = None) -> int:
        low, high = (0, low) if high is None else (low, high)
        return int(torch.randint(low, high, ()).item())

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), dtype=torch.float64).item())


class PhotoMetricDistortion:
    """mmseg 0.x PhotoMetricDistortion (mmseg/datasets/pipelines/transforms.py) on a uint8 (3, H, W) RGB tensor.

    Each step with probability 0.5, drawn in mmseg's order: brightness (+ U(-32, 32)), contrast (x U(0.5, 1.5))
    first or last (mode = randint(2)), saturation (S x U(0.5, 1.5)), hue (H + randint(-18, 18) mod 180: an integer
    in -18..17 on OpenCV's 0..179 scale, i.e. -36..34 degrees). Every step that runs returns uint8 (clip, then
    truncation), and saturation and hue each make their own 8-bit HSV round trip. `rng` (numpy.random's
    randint / uniform) supplies the draws; default: torch's global generator."""

    def __init__(self, brightness_delta: int = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast, self.saturation = tuple(contrast_range), tuple(saturation_range)

    def _contrast(self, img, rng):
        return _convert(img, alpha=rng.uniform(*self.contrast)) if rng.randint(2) else img

    def __call__(self, img: torch.Tensor, rng=None) -> torch.Tensor:
        rng = rng if rng is not None else _TorchDraws
        if rng.randint(2):
            img = _convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_last = rng.randint(2) == 0
        if not contrast_last:
            img = self._contrast(img, rng)
        if rng.randint(2):
            hsv = rgb_to_hsv_u8(img)
            hsv[1] = _convert(hsv[1], alpha=rng.uniform(*self.saturation))
            img = hsv_to_rgb_u8(hsv)
        if rng.randint(2):
            hsv = rgb_to_hsv_u8(img)
            hsv[0] = ((hsv[0].to(torch.int64) + rng.randint(-self.hue_delta, self.hue_delta)) % 180).to(torch.uint8)
            img = hsv_to_rgb_u8(hsv)
        if contrast_last:
            img = self._contrast(img, rng)
        return img


class SegTrain:
    """Rescale (img_scale x U(ratio)), pad, crop with cat_max_ratio, flip, photometric, normalise."""

    def __init__(self, crop: int, img_scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio: float = 0.75,
                 photometric: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.crop, self.img_scale, self.ratio = crop, tuple(img_scale), tuple(ratio_range)
        self.cat_max_ratio, self.mean, self.std = cat_max_ratio, list(mean), list(std)
        self.photo = PhotoMetricDistortion() if photometric else None

    def __call__(self, image, mask):
        img, m = _to_tv(image, mask)
        h, w = img.shape[-2:]
        r = random.uniform(*self.ratio)
        long_side, short_side = max(self.img_scale) * r, min(self.img_scale) * r
        scale = min(long_side / max(h, w), short_side / min(h, w))
        size = [max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))]
        img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        m = TF.resize(m, size)  # masks resize with nearest
        ph, pw = max(self.crop - size[0], 0), max(self.crop - size[1], 0)
        if ph or pw:
            img, m = TF.pad(img, [0, 0, pw, ph], fill=0), TF.pad(m, [0, 0, pw, ph], fill=IGNORE_INDEX)
        H, W = img.shape[-2:]
        for _ in range(10):  # mmseg RandomCrop(cat_max_ratio): retry crops dominated by one class
            top, left = random.randint(0, H - self.crop), random.randint(0, W - self.crop)
            window = m[top:top + self.crop, left:left + self.crop]
            labels, counts = torch.unique(window[window != IGNORE_INDEX], return_counts=True)
            if self.cat_max_ratio >= 1 or (len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio):
                break
        img = TF.crop(img, top, left, self.crop, self.crop)
        m = TF.crop(m, top, left, self.crop, self.crop)
        if random.random() < 0.5:
            img, m = TF.horizontal_flip(img), TF.horizontal_flip(m)
        if self.photo is not None:
            img = self.photo(img.as_subclass(torch.Tensor))
        x = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), self.mean, self.std)
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()


class SegVal:
    """Rescale the image to fit img_scale (keep ratio); the label keeps its original size."""

    def __init__(self, img_scale=(2048, 512), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.img_scale, self.mean, self.std = tuple(img_scale), list(mean), list(std)

    def __call__(self, image, mask):
        img, m = _to_tv(image, mask)
        h, w = img.shape[-2:]
        scale = min(max(self.img_scale) / max(h, w), min(self.img_scale) / min(h, w))
        img = TF.resize(img, [int(h * scale + 0.5), int(w * scale + 0.5)],
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), self.mean, self.std)
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()


def build_data(cfg: Config):
    d = cfg.data
    train_tf = SegTrain(d.crop, d.img_scale, d.ratio_range, d.cat_max_ratio, d.photometric, cfg.mean, cfg.std)
    val_tf = SegVal(d.img_scale, cfg.mean, cfg.std)
    if d.kind == "synthetic":
        k, size = d.num_classes or 4, d.size or d.crop
        return (SyntheticScenes(d.n, size, k, train_tf, cfg.seed),
                SyntheticScenes(d.n_val, size, k, val_tf, cfg.seed + 1), k)
    if d.root is None:
        raise ValueError("segment: data.root is not set (the folder holding ADEChallengeData2016/)")
    train = ADE20K(d.root, "training", train_tf, reduce_zero_label=True)
    val = ADE20K(d.root, "validation", val_tf, reduce_zero_label=True)
    k = d.num_classes or train.num_classes
    return limit(train, d.max_train, cfg.seed), limit(val, d.max_val, cfg.seed), k


def build_model(cfg: Config, num_classes: int) -> tuple[BeitUperNet, dict]:
    init, m = cfg.init, cfg.model
    kwargs = dict(init.kwargs, img_size=cfg.data.crop)
    backbone, report = create_backbone(init.model_name, kwargs, init.checkpoint, num_classes=0,
                                       drop_path_rate=cfg.optim.drop_path)
    if init.checkpoint:
        extra = [k for k in report["missing"] if not k.startswith("head.")]
        if extra or report["unexpected"]:
            raise RuntimeError(f"segmentation init from {init.checkpoint}: unexpected load report {report}")
    model = BeitUperNet(backbone, num_classes, decoder_channels=m.decoder_channels, aux_channels=m.aux_channels,
                        out_indices=m.out_indices)
    backbone.prune_intermediate_layers(model.out_indices, prune_norm=True, prune_head=True)
    return model, report


def evaluate(model: BeitUperNet, dataset, num_classes: int, cfg: Config, device: torch.device,
             keep_examples: int = 0) -> tuple[dict, list[dict]]:
    """Sliding-window mIoU over `dataset` (every sample once under DDP); the model is left as it was."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_segmentation(lambda x: slide_inference(model, x, num_classes, cfg.data.crop, cfg.data.stride),
                                     dataset, num_classes, device=device, precision=cfg.precision,
                                     num_workers=cfg.data.num_workers, keep_examples=keep_examples, desc="val")
    finally:
        model.train(was_training)


# ----- the job ------------------------------------------------------------------------------------
def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    limit_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    o = cfg.optim
    train, val, k = build_data(cfg)
    model, report = build_model(cfg, k)
    synced = distributed.is_dist() and device.type == "cuda"  # SyncBatchNorm is CUDA-only; CPU DDP keeps per-rank BN
    if synced:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The decoder's pooled (1x1) BatchNorm needs 2 crops per statistic: per process, or across processes with SyncBN.
    crops = loop.per_rank_batch(o.batch_size) * (distributed.world_size() if synced else 1)
    if crops < 2:
        raise ValueError(f"segment: optim.batch_size {o.batch_size} over {distributed.world_size()} process(es) puts "
                         f"{crops} crop per BatchNorm statistic; the UperNet decoder needs >= 2 (BEiT: 2 per GPU). "
                         "Raise optim.batch_size (or use CUDA, where SyncBatchNorm pools the processes).")
    model.to(device)
    loader = loop.make_loader(train, batch_size=o.batch_size, seed=cfg.seed, drop_last=True,
                              num_workers=cfg.data.num_workers, device=device)
    if len(loader) == 0:
        raise ValueError(f"segment: {len(train)} training images are fewer than one batch of {o.batch_size}")
    lr = optim.scaled_lr(o.lr, o.batch_size, o.lr_ref_batch)
    opt = optim.create_optimizer(layer_decay_param_groups(model, o.weight_decay, o.layer_decay), opt="adamw", lr=lr,
                                 weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, device=device)
    sched = optim.create_scheduler(opt, o.schedule, steps_per_epoch=len(loader), total_steps=o.iters,
                                   warmup_steps=o.warmup_iters, warmup_ratio=o.warmup_ratio, min_lr=o.min_lr,
                                   power=o.power, lr=lr)
    epochs = math.ceil(o.iters / len(loader))
    final: dict = {}

    def step_fn(m, batch):
        x, y = batch
        out = m(x)
        return seg_loss({key: v.float() for key, v in out.items()}, y, cfg.model.aux_weight)

    def eval_fn(m) -> dict:
        scores, examples = evaluate(m, val, k, cfg, device, keep_examples=cfg.examples)
        final.update(scores=scores, examples=examples)  # the last call is the final evaluation
        return {"miou": scores["miou"], "macc": scores["macc"], "aacc": scores["aacc"]}

    history = loop.train(model, train, step_fn, opt, sched, run_dir, device=device, epochs=epochs,
                         batch_size=o.batch_size, seed=cfg.seed, max_steps=min(o.iters, cfg.max_steps or o.iters),
                         clip_grad=o.clip_grad, precision=cfg.precision, num_workers=cfg.data.num_workers,
                         loader=loader, evaluate=eval_fn,
                         eval_every=cfg.eval_every or epochs + 1, desc=f"segment[{cfg.method}]")
    if not final:  # resumed after the last epoch had finished: evaluate the restored model
        eval_fn(model)
    scores, examples = final["scores"], final["examples"]
    get_logger().info("segment[%s]: mIoU %.2f", cfg.method, scores["miou"])
    ex_path = run_dir / "examples.pt"
    if distributed.is_main() and examples:
        buf = io.BytesIO()
        torch.save({"examples": examples, "mean": tuple(cfg.mean), "std": tuple(cfg.std)}, buf)
        atomic_write(ex_path, buf.getvalue())
    row = {"table": "ade20k_segmentation", "method": cfg.method, "dataset": "ADE20K", "split": "val",
           "seed": cfg.seed, "metric": "miou", "value": scores["miou"], "run_id": run_dir.name}
    evals = [{"step": h["step"], "miou": h["miou"]} for h in history if "miou" in h]
    return {"miou": scores["miou"], "macc": scores["macc"], "aacc": scores["aacc"],
            "per_class_iou": scores["per_class_iou"], "history": history, "evals": evals, "rows": [row],
            "examples": str(ex_path) if examples else None, "num_classes": k, "load_report": report, "lr": lr,
            "train_images": len(train), "val_images": len(val), "world_size": distributed.world_size()}


# ----- what a run reads: its cache key and input fingerprint (vlpt_lib.jobs.launch) ------------------------
def data_paths(cfg: dict) -> list[str]:
    """ADE20K's image and annotation folders (kind ade20k; both layouts ADE20K accepts, the absent one reads
    "missing"), objectInfo150.txt, and the exported student it starts from."""
    data, checkpoint = cfg["data"], cfg["init"]["checkpoint"]
    out = []
    if data["kind"] == "ade20k" and data["root"]:
        for base in (Path(data["root"]) / "ADEChallengeData2016", Path(data["root"])):
            out += [str(base / "objectInfo150.txt")]
            out += [str(base / part / split) for part in ("images", "annotations")
                    for split in ("training", "validation")]
    return out + ([checkpoint] if checkpoint else [])


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
