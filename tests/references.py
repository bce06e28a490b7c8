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
import torch.nn.functional as F


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


# ------------------------------------------------------------------ BEiT's ADE20K heads (mmsegmentation 0.11.0)
def mmseg_resize(x, size):
    """mmseg/ops/wrappers.py resize as the heads call it: F.interpolate, bilinear, align_corners=False."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def mmseg_conv_module(sd, prefix, x, training):
    """mmcv 1.3.0 mmcv/cnn/bricks/conv_module.py ConvModule.forward with order (conv, norm, act), norm_cfg SyncBN,
    act ReLU: conv without bias ('auto': a norm follows), padding kernel_size // 2 as every head passes it, BN
    (eps 1e-5; batch statistics in training, the running ones in eval), ReLU. sd: a head's state_dict."""
    w = sd[prefix + "conv.weight"]
    x = F.conv2d(x, w, None, stride=1, padding=w.shape[-1] // 2)
    x = F.batch_norm(x, None if training else sd[prefix + "bn.running_mean"],
                     None if training else sd[prefix + "bn.running_var"], sd[prefix + "bn.weight"],
                     sd[prefix + "bn.bias"], training=training, momentum=0.1, eps=1e-5)
    return F.relu(x)


def mmseg_cls_seg(sd, feat, dropout_ratio, training):
    """mmseg/models/decode_heads/decode_head.py BaseDecodeHead.cls_seg: Dropout2d (if dropout_ratio > 0), conv_seg."""
    if dropout_ratio > 0:
        feat = F.dropout2d(feat, dropout_ratio, training=training)
    return F.conv2d(feat, sd["conv_seg.weight"], sd["conv_seg.bias"])


def mmseg_uper_head(sd, inputs, pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, training=False, in_index=(0, 1, 2, 3)):
    """mmseg 0.11.0 mmseg/models/decode_heads/uper_head.py UPerHead.forward (with psp_forward and psp_head.py
    PPM.forward), step by step on a state_dict under mmseg's names."""
    inputs = [inputs[i] for i in in_index]                           # _transform_inputs, 'multiple_select'
    laterals = [mmseg_conv_module(sd, f"lateral_convs.{i}.", inputs[i], training) for i in range(len(inputs) - 1)]
    x = inputs[-1]                                                   # psp_forward
    psp_outs = [x]
    for j, scale in enumerate(pool_scales):                          # PPM: Sequential(AdaptiveAvgPool2d, ConvModule)
        ppm_out = mmseg_conv_module(sd, f"psp_modules.{j}.1.", F.adaptive_avg_pool2d(x, scale), training)
        psp_outs.append(mmseg_resize(ppm_out, x.size()[2:]))
    psp_outs = torch.cat(psp_outs, dim=1)
    laterals.append(mmseg_conv_module(sd, "bottleneck.", psp_outs, training))
    used_backbone_levels = len(laterals)
    for i in range(used_backbone_levels - 1, 0, -1):
        prev_shape = laterals[i - 1].shape[2:]
        laterals[i - 1] = laterals[i - 1] + mmseg_resize(laterals[i], prev_shape)  # += there: the same sum
    fpn_outs = [mmseg_conv_module(sd, f"fpn_convs.{i}.", laterals[i], training)
                for i in range(used_backbone_levels - 1)]
    fpn_outs.append(laterals[-1])
    for i in range(used_backbone_levels - 1, 0, -1):
        fpn_outs[i] = mmseg_resize(fpn_outs[i], fpn_outs[0].shape[2:])
    fpn_outs = torch.cat(fpn_outs, dim=1)
    output = mmseg_conv_module(sd, "fpn_bottleneck.", fpn_outs, training)
    return mmseg_cls_seg(sd, output, dropout_ratio, training)


def mmseg_fcn_head(sd, x, num_convs=1, dropout_ratio=0.1, training=False):
    """mmseg 0.11.0 mmseg/models/decode_heads/fcn_head.py FCNHead.forward with concat_input=False: the ConvModules
    of self.convs (kernel 3), then cls_seg. x: the selected level (in_index)."""
    for i in range(num_convs):
        x = mmseg_conv_module(sd, f"convs.{i}.", x, training)
    return mmseg_cls_seg(sd, x, dropout_ratio, training)


def mmseg_decode_loss(seg_logit, seg_label, loss_weight=1.0, ignore_index=255):
    """mmseg 0.11.0 BaseDecodeHead.losses -> losses/cross_entropy_loss.py CrossEntropyLoss (reduction 'mean',
    class_weight None) -> cross_entropy -> utils.py weight_reduce_loss(weight None, avg_factor None) ->
    reduce_loss: loss.mean() over every pixel of the batch. seg_label (N, H, W) (squeezed from N, 1, H, W)."""
    seg_logit = mmseg_resize(seg_logit, seg_label.shape[1:])
    loss = F.cross_entropy(seg_logit, seg_label, weight=None, reduction="none", ignore_index=ignore_index)
    return loss_weight * loss.mean()


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


# ------------------------------------------------------------------ BEiT's relative position table resize
def _fitpack_bspline_basis(knots, t, k=3):
    """The values at t of the len(knots) - k - 1 B-splines of degree k on knots (Cox-de Boor recursion); t at the
    right end belongs to the last non-empty interval, as FITPACK's fpbspl places it."""
    m = len(knots) - 1
    span = max(i for i in range(m) if knots[i] < knots[i + 1] and knots[i] <= t)
    basis = np.zeros(m)
    basis[span] = 1.0
    for p in range(1, k + 1):
        nxt = np.zeros(m - p)
        for j in range(m - p):
            left = (t - knots[j]) / (knots[j + p] - knots[j]) * basis[j] if knots[j + p] > knots[j] else 0.0
            right = ((knots[j + p + 1] - t) / (knots[j + p + 1] - knots[j + 1]) * basis[j + 1]
                     if knots[j + p + 1] > knots[j + 1] else 0.0)
            nxt[j] = left + right
        basis = nxt
    return basis


def _fitpack_cubic_interp2d(x, y, z, xs, ys):
    """scipy interp2d(x, y, z, kind='cubic')(xs, ys) on a rectangular grid (scipy <= 1.13 interpolate/_interpolate.py:
    regrid_smth(x, y, z, kx=3, ky=3, s=0), then bisplev), built the way FITPACK builds it: fpregr.f with s = 0 puts
    the interior knots at the data points x[2] .. x[-3] (odd degree: the not-a-knot spline), each end knot 4 times;
    the coefficients interpolate the grid; fpbisp.f clamps evaluation points into [x[0], x[-1]]. Returns
    (len(ys), len(xs)) like interp2d. float64 throughout."""
    def collocation(nodes, points):
        nodes = np.asarray(nodes, dtype=np.float64)
        knots = np.concatenate([[nodes[0]] * 4, nodes[2:-2], [nodes[-1]] * 4])
        at = np.clip(np.asarray(points, dtype=np.float64), nodes[0], nodes[-1])
        return (np.stack([_fitpack_bspline_basis(knots, t) for t in nodes]),
                np.stack([_fitpack_bspline_basis(knots, t) for t in at]))
    bx, ex = collocation(x, xs)
    by, ey = collocation(y, ys)
    coef = np.linalg.solve(by, np.linalg.solve(bx, np.asarray(z, dtype=np.float64).T).T)  # by @ coef @ bx.T = z
    return ey @ coef @ ex.T


def beit_seg_resize_rel_pos_table(table, dst_patch_shape, num_extra_tokens=3):
    """unilm beit/semantic_segmentation/mmcv_custom/checkpoint.py load_checkpoint, lines 378-437: one
    relative_position_bias_table key (num_pos, heads) resized for a model of patch grid dst_patch_shape (square),
    its last num_extra_tokens rows (the model's table rows less (2 P - 1)^2; 3 in BEiT) kept; interp2d(kind='cubic')
    as `_fitpack_cubic_interp2d`. beit/ and beit2/ run_class_finetuning.py resize the same way."""
    src_num_pos, num_heads = table.shape
    dst_side = 2 * dst_patch_shape[0] - 1
    src_side = int((src_num_pos - num_extra_tokens) ** 0.5)
    extra, grid = table[-num_extra_tokens:], table[:-num_extra_tokens]

    # bisection for q: sum of q^i, i < src_side // 2, against dst_side // 2; q = the last midpoint tried
    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if 1 * (1.0 - q ** (src_side // 2)) / (1.0 - q) > dst_side // 2:
            hi = q
        else:
            lo = q
    dis, cur = [], 1
    for i in range(src_side // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    nodes = [-d for d in reversed(dis)] + [0] + dis
    t = dst_side // 2.0
    targets = np.arange(-t, t + 0.1, 1.0)
    heads = []
    for i in range(num_heads):
        z = grid[:, i].view(src_side, src_side).float().numpy()
        heads.append(torch.Tensor(_fitpack_cubic_interp2d(nodes, nodes, z, targets, targets)).contiguous().view(-1, 1))
    return torch.cat([torch.cat(heads, dim=-1), extra], dim=0)


# ------------------------------------------------------------------ ADE20K segmentation (BEiT's mmseg pipeline)
def mmcv_poly_warmup_lrs(initial_lrs, cur_iter, max_iters, *, power, min_lr, warmup_iters, warmup_ratio):
    """mmcv 1.3.0 mmcv/runner/hooks/lr_updater.py, written out for PolyLrUpdaterHook(power, min_lr,
    by_epoch=False, warmup='linear', warmup_iters, warmup_ratio): the lr of every param group during iteration
    `cur_iter`. before_run (l. 94-111) keeps each group's initial lr; before_train_iter (l. 124-132) runs
    before each iteration with runner.iter = the iterations done so far (mmcv/runner/iter_based_runner.py
    l. 58-68 adds 1 after the iteration; BEiT's IterBasedRunnerAmp keeps that train()), sets the regular lr
    get_lr (l. 203-211) of every group and, while cur_iter < warmup_iters, get_warmup_lr (l. 83-92) 'linear'
    instead: regular x (1 - k)."""
    regular = [(base_lr - min_lr) * (1 - cur_iter / max_iters) ** power + min_lr for base_lr in initial_lrs]
    if cur_iter >= warmup_iters:
        return regular
    k = (1 - cur_iter / warmup_iters) * (1 - warmup_ratio)
    return [lr * (1 - k) for lr in regular]


# OpenCV's 8-bit HSV conversion (modules/imgproc/src/color_hsv.simd.hpp, 4.x), the one mmcv.bgr2hsv / hsv2bgr
# (mmcv 1.3.0 mmcv/image/colorspace.py l. 275-302: cv2.cvtColor with COLOR_BGR2HSV / COLOR_HSV2BGR) run on
# mmseg's uint8 crops. Checked outside the tests (cv2 is not a dependency) against opencv-python-headless
# 4.5.5.64 and 5.1.0.95 on x86-64: bgr2hsv on all 256^3 colours and hsv2bgr on all 180 x 256 x 256 triples
# (rows of 256 px) equal these two functions everywhere.
_CV_HSV_SHIFT = 12
# RGB2HSV_b::TablesSingleton: saturate_cast<int> rounds to nearest, ties to even
_CV_SDIV = np.array([0] + [int(np.rint((255 << _CV_HSV_SHIFT) / (1.0 * i))) for i in range(1, 256)], np.int64)
_CV_HDIV180 = np.array([0] + [int(np.rint((180 << _CV_HSV_SHIFT) / (6.0 * i))) for i in range(1, 256)], np.int64)
# HSV2RGB_native's sector_data: which of tab[0..3] is b, g, r in each sector
_CV_SECTOR_BGR = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def opencv_bgr2hsv_u8(img):
    """RGB2HSV_b (hrange 180) on a uint8 (H, W, 3) BGR array: the scalar loop's fixed-point rule (the SIMD loop
    computes the same integers): s = (diff * sdiv[v] + 2^11) >> 12; h from the channel that is the max (r tested
    first, then g), (h * hdiv[diff] + 2^11) >> 12, + 180 when negative."""
    b, g, r = (img[..., c].astype(np.int64) for c in range(3))
    v = np.maximum(np.maximum(b, g), r)
    diff = v - np.minimum(np.minimum(b, g), r)
    s = (diff * _CV_SDIV[v] + (1 << (_CV_HSV_SHIFT - 1))) >> _CV_HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _CV_HDIV180[diff] + (1 << (_CV_HSV_SHIFT - 1))) >> _CV_HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def opencv_hsv2bgr_u8(img):
    """HSV2RGB_b (hrange 180) on a uint8 (H, W, 3) HSV array, as its SIMD loop computes every block of 4 x lanes
    pixels of a row (all of a row whose width is a multiple of 32 on AVX2): h = H * (6.f/180), s = S * (1.f/255),
    v = V * (1.f/255) in float32; HSV2RGB_simd: sector = trunc(h), f = h - sector, tab = [v, v(1 - s),
    v(1 - s f), v(1 - s(1 - f))]; then x 255.f and v_trunc (truncation; only the scalar tail rounds, by
    saturate_cast). The AVX2 build fuses 1 - s*f and 1 - s*(1 - f) into one multiply-add (one rounding): without
    that 1758 of the 180 x 256 x 256 triples come out 1 higher than cv2's, with it none."""
    f32 = np.float32
    h = img[..., 0].astype(f32) * (f32(6) / f32(180))
    s = img[..., 1].astype(f32) * (f32(1) / f32(255))
    v = img[..., 2].astype(f32) * (f32(1) / f32(255))
    sector = np.trunc(h)
    f = h - sector

    def one_minus_product(a, b):  # fma(-a, b, 1): the float32 product is exact in float64
        return (1.0 - a.astype(np.float64) * b.astype(np.float64)).astype(f32)

    tab = np.stack([v, v * (f32(1) - s), v * one_minus_product(s, f), v * one_minus_product(s, f32(1) - f)], -1)
    bgr = np.take_along_axis(tab, _CV_SECTOR_BGR[sector.astype(np.int64)], axis=-1) * f32(255)
    return np.clip(np.trunc(bgr), 0, 255).astype(np.uint8)


def mmseg_photo_metric_distortion(img, random, brightness_delta=32, contrast_range=(0.5, 1.5),
                                  saturation_range=(0.5, 1.5), hue_delta=18):
    """mmsegmentation 0.11.0 (BEiT's) mmseg/datasets/pipelines/transforms.py PhotoMetricDistortion, written out:
    convert (l. 805-809), brightness (l. 811-818), contrast (l. 820-826), saturation (l. 828-837), hue
    (l. 839-847), __call__ (l. 849-880). `img`: the uint8 (H, W, 3) BGR crop (LoadImageFromFile's default
    to_float32=False, and Resize / RandomCrop / RandomFlip keep uint8); `random`: what the module's
    `from numpy import random` (l. 4) provides, randint(2) in {0, 1}, randint(-18, 18) in -18..17 and
    uniform(a, b), drawn in this order. mmcv.bgr2hsv / hsv2bgr: cv2.cvtColor (opencv_bgr2hsv_u8 above)."""
    def convert(x, alpha=1, beta=0):
        y = x.astype(np.float32) * alpha + beta  # float32 (a Python scalar does not widen the array)
        return np.clip(y, 0, 255).astype(np.uint8)

    def contrast(x):
        if random.randint(2):
            return convert(x, alpha=random.uniform(*contrast_range))
        return x

    if random.randint(2):
        img = convert(img, beta=random.uniform(-brightness_delta, brightness_delta))
    mode = random.randint(2)
    if mode == 1:  # (the source's comments have the two modes the other way round; the code runs this)
        img = contrast(img)
    if random.randint(2):
        hsv = opencv_bgr2hsv_u8(img)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=random.uniform(*saturation_range))
        img = opencv_hsv2bgr_u8(hsv)
    if random.randint(2):
        hsv = opencv_bgr2hsv_u8(img)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + random.randint(-hue_delta, hue_delta)) % 180
        img = opencv_hsv2bgr_u8(hsv)
    if mode == 0:
        img = contrast(img)
    return img
