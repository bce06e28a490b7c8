"""Official reference rules that more than one test file compares the project with, written out once.

Plain functions, each written as in the official code named in its docstring; a test computes its expected
values with them, never by calling the project's function under test. A rule only one test file needs stays
in that file.
"""
from __future__ import annotations

import math

import numpy as np
import open_clip
import torch


def dassl_epoch_lrs(lr, max_epoch, warmup_epoch, cons_lr):
    """The lr of every epoch under Dassl.pytorch dassl/optim/lr_scheduler.py, written out: build_lr_scheduler
    makes CosineAnnealingLR(optimizer, T_max=MAX_EPOCH) (eta_min 0) and wraps it in
    ConstantWarmupScheduler(successor, WARMUP_EPOCH, WARMUP_CONS_LR); WARMUP_RECOUNT=True
    (dassl/config/defaults.py) leaves the successor's last_epoch at 0. The trainer calls sched.step() after the
    last batch of each epoch (TrainerX.run_epoch -> update_lr), and _BaseWarmupScheduler.step() steps the
    successor only once last_epoch >= warmup_epoch."""
    lrs, last_epoch, successor_epoch = [], 0, 0
    for _ in range(max_epoch):
        if last_epoch < warmup_epoch:
            lrs.append(cons_lr)                                   # ConstantWarmupScheduler.get_lr
        else:
            lrs.append(0.5 * lr * (1 + math.cos(math.pi * successor_epoch / max_epoch)))  # CosineAnnealingLR
        last_epoch += 1
        if last_epoch > warmup_epoch:  # step() at the end of an epoch already past the warm-up moves the cosine
            successor_epoch += 1
    return lrs


def beit_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0,
                          warmup_steps=-1):
    """unilm beit/utils.py cosine_scheduler (beit2/utils.py has the same function), written out. Pre-training
    and fine-tuning call it as cosine_scheduler(args.lr, args.min_lr, args.epochs, num_training_steps_per_epoch,
    warmup_epochs=args.warmup_epochs, warmup_steps=args.warmup_steps): start_warmup_value keeps its 0."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_steps > 0:
        warmup_iters = warmup_steps
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array([final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters))))
                         for i in iters])
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def mmseg_get_num_layer_for_vit(var_name, num_max_layer):
    """unilm beit/semantic_segmentation/mmcv_custom/layer_decay_optimizer_constructor.py get_num_layer_for_vit."""
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    elif var_name.startswith("backbone.patch_embed"):
        return 0
    elif var_name.startswith("backbone.blocks"):
        return int(var_name.split('.')[2]) + 1
    else:
        return num_max_layer - 1


def mmseg_layer_decay_groups(named_params, weight_decay, paramwise_num_layers, layer_decay_rate):
    """LayerDecayOptimizerConstructor.add_params (unilm beit/semantic_segmentation/mmcv_custom/
    layer_decay_optimizer_constructor.py), written out: {name: (weight decay, lr scale)}."""
    num_layers = paramwise_num_layers + 2
    out = {}
    for name, param in named_params:
        if len(param.shape) == 1 or name.endswith(".bias") or name in ('pos_embed', 'cls_token'):
            this_weight_decay = 0.
        else:
            this_weight_decay = weight_decay
        layer_id = mmseg_get_num_layer_for_vit(name, num_layers)
        out[name] = (this_weight_decay, layer_decay_rate ** (num_layers - layer_id - 1))
    return out


# ------------------------------------------------------------------ the models the prompt learners' rules run on
def tiny_openai_clip(seed=0, *, embed=32, context=32, text_width=64, text_layers=2, vision_width=64,
                     vision_layers=2, head_width=16):
    """A random OpenAI-layout CLIP (QuickGELU, as OpenAI's) for the prompt learners' equality tests, its
    LayerNorms and biases moved off their init so that nothing in the comparison is special."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=embed, quick_gelu=True,
        vision_cfg=dict(image_size=32, layers=vision_layers, width=vision_width, patch_size=16, head_width=head_width),
        text_cfg=dict(context_length=context, vocab_size=49408, width=text_width, heads=text_width // head_width,
                      layers=text_layers))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("ln_") or "ln_final" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


# ------------------------------------------------------------------ deep prompts (the multi-modal prompt learners)
def _official_block(blk, x, attn_mask=None):
    """clip/model.py ResidualAttentionBlock*.forward after the prompt swap: x + attn(ln_1(x)); x + mlp(ln_2(x))
    (written batch-first on open_clip's block modules; the official runs them sequence-first, the same sums)."""
    h = blk.ln_1(x)
    x = x + blk.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    return x + blk.mlp(blk.ln_2(x))


def official_deep_text(clip, prompts, tokens, deep):
    """multimodal-prompt-learning trainers/maple.py TextEncoder.forward with clip/model.py
    ResidualAttentionBlock_MaPLe (PromptSRC's IVLP blocks do the same with their own VPT_shallow): + positional
    embedding over the whole context; before block i >= 1 while prompts remain, x = cat(x[:1], deep[i-1],
    x[1 + n:]) (sequence-first there: the first token, the prompts, the rest); ln_final; the row at
    argmax(token id) @ text_projection. prompts (K, L, W), tokens (K, L), deep: list of (n, W)."""
    x = prompts + clip.positional_embedding
    for i, blk in enumerate(clip.transformer.resblocks):
        if i >= 1 and i - 1 < len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:, :1], deep[i - 1].expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        x = _official_block(blk, x, clip.attn_mask)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection


def official_deep_image(visual, images, first, deep):
    """clip/model.py VisionTransformer_MaPLe.forward (and VisionTransformer with VPT, IVLP): conv1, flatten, class
    token, + positional embedding, cat(x, first prompts) at the end, ln_pre; before block i >= 1 while prompts
    remain, x = cat(x[:L - n], deep[i-1]); ln_post(x[:, 0]) @ proj."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
    x = x + visual.positional_embedding
    x = torch.cat([x, first.expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for i, blk in enumerate(visual.transformer.resblocks):
        if i >= 1 and i - 1 < len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:, :x.shape[1] - n], deep[i - 1].expand(x.shape[0], -1, -1)], dim=1)
        x = _official_block(blk, x)
    return visual.ln_post(x[:, 0, :]) @ visual.proj


def official_learned_prompts(clip, tokenizer, ctx, classnames, prefix="a photo of a"):
    """maple.py MultiModalPromptLearner / promptsrc.py VLPromptLearner: tokens of f"{prefix} {name}." (names with
    "_" -> " "), prompts = cat(embedding[:, :1], ctx, embedding[:, 1 + n_ctx:]) -> (prompts, tokens)."""
    tokens = tokenizer([f"{prefix} {c.replace('_', ' ')}." for c in classnames])
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
    n = ctx.shape[0]
    return torch.cat([emb[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), emb[:, 1 + n:]], dim=1), tokens
