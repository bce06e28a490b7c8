"""UperNet on a plain ViT (BEiT's ADE20K setup), from a timm Beit backbone.

Feature pyramid from four blocks (ViT-B: blocks 4, 6, 8, 12, i.e. indices 3, 5, 7, 11), made
multi-scale as in BEiT's semantic_segmentation backbone: 4x up (two stride-2 transposed convs with
BatchNorm + GELU between), 2x up (one transposed conv), identity, 2x max-pool. The heads are those of
BEiT's mmseg 0.11 config (upernet_beit_base_12_512_slide_160k_ade20k_pt.py, _base_/models/upernet_beit.py),
layer for layer and under mmseg's parameter names, so an mmseg checkpoint's head weights load as they are:
`decode_head` = mmseg's UPerHead (PPM with pool scales 1, 2, 3, 6 on the coarsest level, FPN, fusion),
`auxiliary_head` = FCNHead on pyramid level 2 (in_index=2, num_convs=1, concat_input=False), both ending in
mmseg's BaseDecodeHead.cls_seg (Dropout2d 0.1, 1x1 conv_seg). Widths: decoder 768, auxiliary 256.
Shallower mini models take the blocks at the same relative depths (`pyramid_block_indices`).
`layer_decay_param_groups` = BEiT's mmseg LayerDecayOptimizerConstructor over the FULL backbone depth.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mvp import group_parameters

PAPER_BLOCKS = (4, 6, 8, 12)  # 1-based, of 12
AUX_IN_INDEX = 2  # BEiT _base_/models/upernet_beit.py auxiliary_head in_index


def pyramid_block_indices(depth: int, blocks=PAPER_BLOCKS, of: int = 12) -> list[int]:
    """0-based block indices at the same relative depth as blocks 4, 6, 8, 12 of 12."""
    idx = [max(0, min(depth - 1, int(round(depth * b / of)) - 1)) for b in blocks]
    return idx


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """mmseg.ops.resize as the heads and the loss call it (align_corners=False in BEiT's config)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """mmcv ConvModule with norm_cfg SyncBN and ReLU: a conv without bias (a norm follows), BatchNorm, ReLU,
    padding k // 2. Init as its init_weights: kaiming normal, fan_out, gain for ReLU; BatchNorm weight 1, bias 0."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class DecodeHead(nn.Module):
    """mmseg BaseDecodeHead's classifier: Dropout2d, then a 1x1 conv_seg initialised N(0, 0.01), bias 0."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, x):
        return self.conv_seg(self.dropout(x))


class UPerHead(DecodeHead):
    """mmseg UPerHead: PPM + bottleneck on the last level, 1x1 laterals on the others, top-down sum, 3x3 FPN
    convs, all levels resized to the first and fused by a 3x3 conv; at the first level's resolution."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, pool_scales=(1, 2, 3, 6),
                 dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        top = in_channels[-1]
        self.psp_modules = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(top, channels, 1))
                                         for s in pool_scales)
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        top = inputs[-1]
        psp = [top] + [resize(m(top), top.shape[-2:]) for m in self.psp_modules]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)] + [self.bottleneck(torch.cat(psp, 1))]
        for i in range(len(laterals) - 1, 0, -1):  # coarse to fine, each sum feeding the next
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [resize(x, outs[0].shape[-2:]) for x in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, 1)))


class FCNHead(DecodeHead):
    """mmseg FCNHead with concat_input=False: num_convs 3x3 ConvModules, then the classifier."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, num_convs: int = 1, dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.convs = nn.Sequential(*(ConvModule(in_ch if i == 0 else channels, channels, 3) for i in range(num_convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_seg(self.convs(x))


class BeitUperNet(nn.Module):
    """timm Beit backbone -> 4-level pyramid -> UPerHead (+ auxiliary FCNHead). Input normalised images; logits
    at the input's size (mmseg's resize of the head output, bilinear, align_corners=False)."""

    def __init__(self, backbone: nn.Module, num_classes: int, decoder_channels: int = 768,
                 aux_channels: int = 256, out_indices: list[int] | None = None, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        dim = backbone.embed_dim
        depth = len(backbone.blocks)
        self.depth = depth  # the full backbone depth (mmseg paramwise_cfg num_layers), kept if blocks are pruned
        self.out_indices = list(out_indices) if out_indices is not None else pyramid_block_indices(depth)
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), nn.BatchNorm2d(dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)
        self.decode_head = UPerHead([dim] * 4, decoder_channels, num_classes, dropout=dropout)
        self.auxiliary_head = FCNHead(dim, aux_channels, num_classes, dropout=dropout) if aux_channels else None

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        unique = sorted(set(self.out_indices))  # very shallow models repeat a block
        got = self.backbone.forward_intermediates(x, indices=unique, intermediates_only=True, output_fmt="NCHW")
        feats = [got[unique.index(i)] for i in self.out_indices]
        return [self.fpn1(feats[0]), self.fpn2(feats[1]), self.fpn3(feats[2]), self.fpn4(feats[3])]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.pyramid(x)
        out = {"out": resize(self.decode_head(feats), size)}
        if self.auxiliary_head is not None and self.training:  # mmseg runs the auxiliary head in training only
            out["aux"] = resize(self.auxiliary_head(feats[AUX_IN_INDEX]), size)
        return out

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """mmseg 0.11 BaseDecodeHead.losses with CrossEntropyLoss(reduction='mean'): logits resized to the label's
    size, per-pixel cross-entropy (0 at ignored pixels), then the mean over ALL pixels of the batch, ignored
    ones included in the denominator (weight_reduce_loss without avg_factor is loss.mean())."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = resize(logits, target.shape[-2:])
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").mean()


def seg_loss(out: dict, target: torch.Tensor, aux_weight: float = 0.4, ignore_index: int = 255) -> torch.Tensor:
    """decode loss + aux_weight x auxiliary loss (mmseg sums the heads' loss_weight-scaled losses)."""
    loss = pixel_cross_entropy(out["out"], target, ignore_index)
    if "aux" in out and aux_weight:
        loss = loss + aux_weight * pixel_cross_entropy(out["aux"], target, ignore_index)
    return loss


@torch.no_grad()
def slide_inference(model: nn.Module, image: torch.Tensor, num_classes: int, crop: int, stride: int) -> torch.Tensor:
    """mmseg-style sliding window: logits averaged over overlapping crop x crop windows (B, C, H, W).

    Images smaller than the crop are padded (zeros after normalisation), and the padding cut off again.
    """
    b, _, h, w = image.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))
    H, W = image.shape[-2:]
    rows = max(H - crop + stride - 1, 0) // stride + 1
    cols = max(W - crop + stride - 1, 0) // stride + 1
    logits = image.new_zeros((b, num_classes, H, W), dtype=torch.float32)
    count = image.new_zeros((1, 1, H, W), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride, H - crop), min(c * stride, W - crop)
            window = image[:, :, y1:y1 + crop, x1:x1 + crop]
            logits[:, :, y1:y1 + crop, x1:x1 + crop] += model(window)["out"].float()
            count[:, :, y1:y1 + crop, x1:x1 + crop] += 1
    return (logits / count)[:, :, :h, :w]


def seg_layer_id(name: str, num_layers: int) -> int:
    """BEiT's mmseg get_num_layer_for_vit (beit/semantic_segmentation/mmcv_custom/
    layer_decay_optimizer_constructor.py), num_layers = depth + 2: 0 for the backbone's cls/mask tokens,
    position embedding and patch embedding, i + 1 for block i, num_layers - 1 for everything else
    (pyramid, decoder, heads)."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed") \
            or name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers - 1


def layer_decay_param_groups(model: BeitUperNet, weight_decay: float, layer_decay: float) -> list[dict]:
    """BEiT's LayerDecayOptimizerConstructor (paramwise_cfg num_layers = the backbone's full depth):
    lr scale layer_decay ** (num_layers - layer id - 1) with num_layers = depth + 2, so block 11 of 12
    gets 0.65 and only the decoder and heads train at the full lr. No weight decay on 1-D parameters and
    ".bias" only: BEiT also lists the bare names 'pos_embed' / 'cls_token', which never match the
    prefixed "backbone." names, so the cls token and the relative position tables are decayed.

    Explicit groups for `training.optim.create_optimizer`; the schedule sets lr * lr_scale."""
    num_layers = model.depth + 2
    return group_parameters(model, weight_decay,
                            no_decay=lambda name, p: p.ndim == 1 or name.endswith(".bias")
                            or name in ("pos_embed", "cls_token"),
                            layer_id=lambda name: seg_layer_id(name, num_layers),
                            scale=lambda lid: layer_decay ** (num_layers - lid - 1))
