"""MVP: a BEiT student that regresses a frozen CLIP image tower's patch features at masked positions.

- `MVPStudent`: timm's `Beit` (layer scale, shared relative position bias, no absolute position
  embedding: the BEiT pre-training layout) + a learnable mask token that replaces the embeddings of
  masked patches + a linear head onto the target width (CLIP embedding width, or p*p*3 pixels),
  initialised as BEiT's pre-training model (`beit_pretrain_init_`); weight decay skips what BEiT's
  pre-training skips (`no_weight_decay`: pos_embed, cls_token; plus 1-D and biases).
- `export_timm_state_dict`: the backbone as a plain timm `Beit` state dict in the fine-tuning layout
  (per-layer relative position bias tables, copied from the shared one as BEiT's fine-tuning code
  does; the final norm as `norm.*`). `create_backbone` loads it as BEiT's loaders do: relative position
  tables resized to another window by BEiT's bicubic rule, and with mean pooling a fresh `fc_norm`
  (the pre-training norm unused, as in beit2's fine-tuning).
- `ClipTeacher`: open_clip's VisionTransformer, frozen, eval, no grad; target = patch tokens after
  ln_post projected by `visual.proj` (open_clip's `forward_intermediates(..., normalize_intermediates=True)`
  applies ln_post to the tokens; the projection is applied here).
- `PixelTarget`: per-patch normalised pixels (MAE's norm_pix target), the unimodal baseline.
- `masked_loss`: 1 - cosine (CLIP target, as EVA / beit2 VQ-KD) or MSE (pixel target, as MAE) on
  masked positions only.
  Which target a run uses (and its loss) is a plug-in of `vlpt_lib.methods.targets`; the modules above
  are what its built-in "clip" and "pixel" targets build.
- `beit_finetune_param_groups`: BEiT's fine-tuning parameter groups (layer-wise lr decay and weight
  decay as unilm beit/optim_factory.py applies them), for timm's `Beit`.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from ..utils.device import autocast
from ..utils.io import atomic_write
from .relpos import resize_rel_pos_tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Student architectures by name: timm model name + overrides. "beit_base" is the paper's ViT-B/16.
STUDENT_ARCHS = {
    "beit_base": dict(model_name="beit_base_patch16_224", kwargs=dict(img_size=224)),
    "beit_large": dict(model_name="beit_large_patch16_224", kwargs=dict(img_size=224)),
    # Mini / smoke: the same timm class and builder with smaller numbers (loads the same way).
    "mini": dict(model_name="beit_base_patch16_224",
                 kwargs=dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4)),
    "smoke": dict(model_name="beit_base_patch16_224",
                  kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)),
}


def arch_spec(arch: str | dict) -> tuple[str, dict]:
    """(timm model name, architecture kwargs) for a registered name or an explicit dict."""
    if isinstance(arch, dict):
        spec = dict(arch)
        return spec.pop("model_name", "beit_base_patch16_224"), spec.get("kwargs", spec)
    if arch not in STUDENT_ARCHS:
        raise ValueError(f"unknown student arch {arch!r}; known: {sorted(STUDENT_ARCHS)} or a dict")
    spec = STUDENT_ARCHS[arch]
    return spec["model_name"], dict(spec["kwargs"])


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


class MVPStudent(nn.Module):
    """timm Beit + mask token + linear head. Inputs are images in [0, 1]; normalised here."""

    def __init__(self, arch: str | dict = "mini", target_dim: int = 512, layer_scale_init: float = 0.1,
                 shared_rel_pos_bias: bool = True, drop_path: float = 0.0, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, init_std: float = 0.02):
        super().__init__()
        self.model_name, self.arch_kwargs = arch_spec(arch)
        self.mean, self.std = tuple(mean), tuple(std)
        self.shared_rel_pos_bias = shared_rel_pos_bias
        self.encoder = timm.create_model(
            self.model_name, pretrained=False, num_classes=0, global_pool="", init_values=layer_scale_init,
            use_abs_pos_emb=False, use_rel_pos_bias=not shared_rel_pos_bias,
            use_shared_rel_pos_bias=shared_rel_pos_bias, drop_path_rate=drop_path, **self.arch_kwargs)
        dim = self.encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.head = nn.Linear(dim, target_dim)
        beit_pretrain_init_(self, init_std)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.encoder.patch_embed.grid_size)

    @property
    def patch_size(self) -> int:
        return int(self.encoder.patch_embed.patch_size[0])

    @property
    def img_size(self) -> int:
        return int(self.encoder.patch_embed.img_size[0])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """BEiT's pre-training skip list (modeling_pretrain.py no_weight_decay: pos_embed, cls_token); with the
        1-D / ".bias" rule of the optimizer factory the mask token and the shared relative position table
        ARE decayed, as in BEiT's and beit2's pre-training."""
        return {"encoder.pos_embed", "encoder.cls_token"}

    def forward_tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Output patch tokens (B, N, dim) after the final norm; masked patches see the mask token."""
        enc = self.encoder
        x = enc.patch_embed(normalize(images, self.mean, self.std))
        if mask is not None:
            w = mask.flatten(1).unsqueeze(-1).to(x.dtype)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        x = torch.cat((enc.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        x = enc.pos_drop(x)
        rel_pos_bias = enc.rel_pos_bias() if enc.rel_pos_bias is not None else None
        for blk in enc.blocks:
            x = blk(x, shared_rel_pos_bias=rel_pos_bias)
        return enc.norm(x)[:, 1:]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predictions at the masked positions only: (num_masked_total, target_dim)."""
        tokens = self.forward_tokens(images, mask)
        return self.head(tokens[mask.flatten(1)])

    # ----- export ---------------------------------------------------------------------------
    def timm_kwargs(self) -> dict:
        """What `timm.create_model(model_name, **kwargs)` needs to rebuild the backbone for fine-tuning."""
        return dict(self.arch_kwargs, init_values=self.encoder.blocks[0].init_values,
                    use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False)


def export_kwargs(arch: str | dict, layer_scale_init: float) -> dict:
    """`MVPStudent(arch, layer_scale_init=...).timm_kwargs()` without building the student."""
    return dict(arch_spec(arch)[1], init_values=layer_scale_init, use_abs_pos_emb=False, use_rel_pos_bias=True,
                use_shared_rel_pos_bias=False)


def beit_trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """BEiT's trunc_normal_ (unilm beit/ and beit2/ modeling_pretrain.py): N(0, std) cut at +-std, not at +-2."""
    return trunc_normal_(tensor, mean=0.0, std=std, a=-std, b=std)


@torch.no_grad()
def beit_pretrain_init_(student: "MVPStudent", std: float = 0.02) -> None:
    """BEiT's pre-training init (VisionTransformerForMaskedImageModeling.__init__, _init_weights and
    fix_init_weight in unilm beit/ and beit2/ modeling_pretrain.py), on the student.

    What it changes from timm's Beit init: every Linear and Conv2d weight (the patch embedding included),
    the cls and mask tokens and the head are drawn from N(0, std) truncated at +-std (timm truncates at
    +-2, i.e. barely); conv biases 0. Kept as timm already does it: LayerNorm 1 / 0, Linear biases 0,
    q/v biases 0, the relative position tables 0, layer scale = init value, and fix_init_weight (the
    attention projection and fc2 of block i divided by sqrt(2 (i + 1))), re-applied after the redraw."""
    enc = student.encoder
    for m in student.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            beit_trunc_normal_(m.weight, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for token in (enc.pos_embed, enc.cls_token, student.mask_token):
        if token is not None:
            beit_trunc_normal_(token, std)
    for i, blk in enumerate(enc.blocks):
        blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
        blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))


def group_parameters(model: nn.Module, weight_decay: float, *, no_decay: Callable[[str, torch.Tensor], bool],
                     layer_id: Callable[[str], int], scale: Callable[[int], float]) -> list[dict]:
    """Optimizer groups keyed by (layer id, decay or not), each with its `weight_decay` and `lr_scale`
    (the schedule sets lr * lr_scale): the shape of BEiT's get_parameter_groups."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip, lid = bool(no_decay(name, p)), int(layer_id(name))
        group = groups.setdefault((lid, skip), {"params": [], "weight_decay": 0.0 if skip else weight_decay,
                                                "lr_scale": float(scale(lid))})
        group["params"].append(p)
    return list(groups.values())


def beit_finetune_layer_id(name: str, num_layers: int) -> int:
    """BEiT's get_num_layer_for_vit (beit/optim_factory.py) with num_max_layer = num_layers + 2: 0 for the
    embeddings, i + 1 for block i (its own relative position table included), num_layers + 1 for the rest."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("rel_pos_bias"):
        return num_layers + 1
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def beit_finetune_param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """BEiT's fine-tuning groups for a timm Beit (run_class_finetuning.py + optim_factory.py):
    lr scale layer_decay ** (num_layers + 1 - layer id); no weight decay on 1-D parameters, ".bias" and
    the model's skip list {pos_embed, cls_token} (modeling_finetune.py no_weight_decay). Unlike timm's
    Beit.no_weight_decay(), the per-layer relative position tables ARE decayed (BEiT's default, without
    --disable_weight_decay_on_rel_pos_bias)."""
    n = len(model.blocks)
    skip = {"pos_embed", "cls_token"}
    decay = layer_decay if layer_decay is not None and layer_decay < 1.0 else 1.0
    return group_parameters(model, weight_decay,
                            no_decay=lambda name, p: p.ndim == 1 or name.endswith(".bias") or name in skip,
                            layer_id=lambda name: beit_finetune_layer_id(name, n),
                            scale=lambda lid: decay ** (n + 1 - lid))


def export_timm_state_dict(student: MVPStudent) -> dict[str, torch.Tensor]:
    """The backbone as a plain timm Beit state dict in the fine-tuning layout.

    - The shared relative position bias table is copied into every block (BEiT's run_class_finetuning
      does the same when `--rel_pos_bias` is on), matching `beit_base_patch16_224`'s per-layer tables.
    - The final per-token norm stays `norm.*`, as in BEiT's pre-training checkpoints: the key layout of timm's
      Beit with a final norm (global_pool='token'). A fine-tuning model with mean pooling (global_pool='avg':
      norm is Identity) does not use it and starts its `fc_norm` fresh, as beit2 does (`create_backbone`).
    - Buffers such as relative_position_index are left out (timm rebuilds them).
    """
    sd = {k: v.detach().cpu().clone() for k, v in student.encoder.state_dict().items()
          if "relative_position_index" not in k}
    shared = sd.pop("rel_pos_bias.relative_position_bias_table", None)
    if shared is not None:
        for i in range(len(student.encoder.blocks)):
            sd[f"blocks.{i}.attn.relative_position_bias_table"] = shared.clone()
    return sd


def save_exported(student: MVPStudent, path: str | Path, extra: dict | None = None) -> Path:
    """Write <path> (plain timm state dict) and <path>.json (model name + kwargs to rebuild it)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(export_timm_state_dict(student), buf)
    atomic_write(path, buf.getvalue())
    meta = {"model_name": student.model_name, "kwargs": student.timm_kwargs(),
            "mean": list(student.mean), "std": list(student.std), **(extra or {})}
    atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps(meta, indent=2))
    return path


def load_exported_meta(path: str | Path) -> dict:
    return json.loads(Path(str(path) + ".json").read_text())


def create_backbone(model_name: str, kwargs: dict, checkpoint: str | Path | None = None,
                    **overrides) -> tuple[nn.Module, dict]:
    """A timm Beit for downstream use, optionally loaded from an exported pre-training student.

    Loading follows BEiT's fine-tuning and segmentation loaders:
    - relative position tables of another window (segmentation at 512 px: 14x14 -> 32x32) are resized by
      BEiT's rule, bicubic on a geometric grid (`relpos.resize_rel_pos_tables`), before timm's own filter
      (which would resize them linearly);
    - a model with mean pooling (global_pool='avg': norm is Identity, fc_norm a LayerNorm) starts fc_norm at
      LayerNorm's init (weight 1, bias 0) and leaves the pre-training final norm unused, as beit2's fine-tuning
      with --use_mean_pooling does. A checkpoint's `fc_norm.*` is that same pre-training norm (an export may store
      it under this name) and is not used either.

    Returns (model, load_report): "missing" / "unexpected" keys of the load, beyond "fresh" (fc_norm, started
    at its init by the rule above) and "unused" (the pre-training final norm); all empty for scratch.
    """
    model = timm.create_model(model_name, pretrained=False, **{**kwargs, **overrides})
    report = {"missing": [], "unexpected": [], "fresh": [], "unused": [],
              "checkpoint": str(checkpoint) if checkpoint else None}
    if checkpoint:
        sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(model, timm.models.beit.Beit):  # resizes patch embed / pos embed for another size
            sd = timm.models.beit.checkpoint_filter_fn(resize_rel_pos_tables(sd, model), model)
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if not (k.startswith("head.") and k in own and own[k].shape != v.shape)}
        fc_norm = [k for k in own if k.startswith("fc_norm.")]
        if fc_norm:  # mean pooling: beit2's fine-tuning model has norm = Identity and a fresh fc_norm
            report["unused"] = sorted(k for k in sd if k.startswith(("norm.", "fc_norm.")))
            sd = {k: v for k, v in sd.items() if k not in report["unused"]}
            report["fresh"] = fc_norm
        res = model.load_state_dict(sd, strict=False)
        report["missing"] = [k for k in res.missing_keys if k not in report["fresh"]]
        report["unexpected"] = list(res.unexpected_keys)
    return model, report


# ----- targets --------------------------------------------------------------------------------
class ClipTeacher(nn.Module):
    """Frozen open_clip image tower -> projected patch tokens (B, N, embed_dim) on the student's grid."""

    def __init__(self, clip_model: nn.Module, mean=CLIP_MEAN, std=CLIP_STD, precision: str = "auto"):
        super().__init__()
        self.visual = clip_model.visual if hasattr(clip_model, "visual") else clip_model
        self.visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.mean, self.std, self.precision = tuple(mean), tuple(std), precision
        size = self.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.out_dim = int(self.visual.output_dim)

    def train(self, mode: bool = True):  # the teacher stays in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        x = images
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        x = normalize(x, self.mean, self.std)
        with autocast(x.device, self.precision):
            out = self.visual.forward_intermediates(
                x, indices=1, normalize_intermediates=True, intermediates_only=True, output_fmt="NCHW")
            tokens = out["image_intermediates"][-1]                     # (B, width, h, w) after ln_post
            tokens = tokens.flatten(2).transpose(1, 2)                   # (B, N, width)
            if self.visual.proj is not None:
                tokens = tokens @ self.visual.proj.to(tokens.dtype)      # (B, N, embed_dim)
        tokens = tokens.float()
        h, w = self.image_size[0] // _patch(self.visual), self.image_size[1] // _patch(self.visual)
        if grid is not None and tuple(grid) != (h, w):
            fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
            fmap = F.interpolate(fmap, size=tuple(grid), mode="bilinear", align_corners=False)
            tokens = fmap.flatten(2).transpose(1, 2)
        return tokens


def _patch(visual) -> int:
    p = visual.patch_size
    return int(p[0] if isinstance(p, (tuple, list)) else p)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch*patch*C), row-major over the patch grid."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class PixelTarget(nn.Module):
    """Per-patch normalised pixels of the student's (normalised) input: MAE's norm_pix_loss target."""

    def __init__(self, patch: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, eps: float = 1e-6):
        super().__init__()
        self.patch, self.mean, self.std, self.eps = patch, tuple(mean), tuple(std), eps
        self.out_dim = patch * patch * 3

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid=None) -> torch.Tensor:
        p = patchify(normalize(images.float(), self.mean, self.std), self.patch)
        mu, var = p.mean(-1, keepdim=True), p.var(-1, keepdim=True)
        return (p - mu) / (var + self.eps).sqrt()


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """pred and target at masked positions (M, D). cosine: mean(1 - cos); mse: mean squared error."""
    pred, target = pred.float(), target.float()
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"loss must be 'cosine' or 'mse', got {kind!r}")


def patch_similarity(tokens: torch.Tensor, index: int) -> torch.Tensor:
    """Cosine similarity of every patch token to token `index`: (B, N) (for teacher similarity maps)."""
    t = F.normalize(tokens.float(), dim=-1)
    return (t * t[:, index:index + 1]).sum(-1)
