"""UperNet on a plain ViT (BEiT's ADE20K setup), from a timm Beit backbone.

Feature pyramid from four blocks (ViT-B: blocks 4, 6, 8, 12, i.e. indices 3, 5, 7, 11), made
multi-scale as in BEiT's semantic_segmentation backbone: 4x up (two stride-2 transposed convs with
BatchNorm + GELU between), 2x up (one transposed conv), identity, 2x max-pool. The decoder is
segmentation_models_pytorch's UPerNetDecoder (PSP on the coarsest map + FPN + fusion); the main head
is a 1x1 conv on its 1/4-resolution output; the auxiliary FCN head (weight 0.4 in the loss) reads the
third pyramid level (1/16 for patch 16), as mmseg's `auxiliary_head in_index=2`. Widths as BEiT's
upernet_beit_base_12_512_slide_160k_ade20k config: decoder channels 768, auxiliary FCN 256.
Shallower mini models take the blocks at the same relative depths (`pyramid_block_indices`).
`layer_decay_param_groups` = BEiT's mmseg LayerDecayOptimizerConstructor over the FULL backbone depth.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

from .mvp import group_parameters

PAPER_BLOCKS = (4, 6, 8, 12)  # 1-based, of 12


def pyramid_block_indices(depth: int, blocks=PAPER_BLOCKS, of: int = 12) -> list[int]:
    """0-based block indices at the same relative depth as blocks 4, 6, 8, 12 of 12."""
    idx = [max(0, min(depth - 1, int(round(depth * b / of)) - 1)) for b in blocks]
    return idx


class FCNHead(nn.Module):
    """mmseg's FCNHead with num_convs=1: conv3x3-BN-ReLU, dropout 0.1, conv1x1 to classes."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.cls(self.drop(self.conv(x)))


class BeitUperNet(nn.Module):
    """timm Beit backbone -> 4-level pyramid -> UperNet (+ auxiliary FCN). Input normalised images."""

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
        # smp's decoder expects [1, 1/2, 1/4, 1/8, 1/16, 1/32] and skips the first two.
        self.decoder = UPerNetDecoder(encoder_channels=[0, 0, dim, dim, dim, dim], encoder_depth=5,
                                      decoder_channels=decoder_channels)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(decoder_channels, num_classes, 1)
        self.aux = FCNHead(dim, aux_channels, num_classes) if aux_channels else None

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        unique = sorted(set(self.out_indices))  # very shallow models repeat a block
        got = self.backbone.forward_intermediates(x, indices=unique, intermediates_only=True, output_fmt="NCHW")
        feats = [got[unique.index(i)] for i in self.out_indices]
        return [self.fpn1(feats[0]), self.fpn2(feats[1]), self.fpn3(feats[2]), self.fpn4(feats[3])]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.pyramid(x)
        dec = self.decoder([None, None, *feats])
        out = {"out": F.interpolate(self.cls(self.drop(dec)), size=size, mode="bilinear", align_corners=False)}
        if self.aux is not None and self.training:
            out["aux"] = F.interpolate(self.aux(feats[2]), size=size, mode="bilinear", align_corners=False)
        return out

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


def seg_loss(out: dict, target: torch.Tensor, aux_weight: float = 0.4, ignore_index: int = 255) -> torch.Tensor:
    loss = F.cross_entropy(out["out"], target, ignore_index=ignore_index)
    if "aux" in out and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(out["aux"], target, ignore_index=ignore_index)
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
