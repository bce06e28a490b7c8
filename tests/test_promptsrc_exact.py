"""PromptSRC equals its official rule: logits, every loss term and the gradient of every learned tensor (fp32),
the frozen text features over its 60 templates, Gaussian prompt aggregation (GPA), and its recipe for both
protocols.

Official code: muzairkhattak/PromptSRC (commit bb95c77):
- trainers/promptsrc.py VLPromptLearner: ctx = embedding of the first N_CTX_TEXT tokens of CTX_INIT; the deeper
  text prompts (N(0, 0.02)) live in clip/model.py ResidualAttentionBlock_IVLP (VPT_shallow, blocks 1 ..
  PROMPT_DEPTH_TEXT - 1), the vision prompts in VisionTransformer.VPT and the IVLP blocks' VPT_shallow;
  fixed_embeddings = mean over IMAGENET_TEMPLATES of the frozen CLIP's encode_text (raw), normalised in forward.
- CustomCLIP.forward (training): logits of the prompted towers; zero_shot_features = the frozen image encoder's,
  normalised; zero_shot_logits = logit_scale * zero_shot_features @ fixed_embeddings^T.
- PromptSRC.forward_backward: loss = CE + L1(text, fixed) * TEXT_LOSS_WEIGHT + L1(image, zero_shot) *
  IMAGE_LOSS_WEIGHT + kl_div(log_softmax(logits), log_softmax(zero_shot_logits), 'sum', log_target=True) /
  logits.numel(); after each epoch's last batch the state dict is added with weight gauss[epoch - 1]
  (get_gauss(GPA_MEAN, GPA_STD) at 1..MAX_EPOCH, divided by its sum); after MAX_EPOCH epochs it replaces the model.

The expected values are that rule written out (tests/references.py for the deep-prompted towers, over the whole
context), never through vlpt_lib's deep-prompt code. The side-by-side run of the official trainer is reported in
the closing note of issue #19.
"""
from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from numerics import assert_close_fp32
from references import official_deep_image, official_deep_text, official_learned_prompts, tiny_openai_clip
from vlpt_lib.methods import prompt as methods
from vlpt_lib.methods.prompt import promptsrc

CONTEXT, EMBED = 32, 32
TEXT_WIDTH, TEXT_LAYERS, VISION_WIDTH, VISION_LAYERS, HEAD_WIDTH, TOKENS = 48, 3, 64, 3, 16, 4 + 1 + 4
# Float32 tolerance derived as in tests/test_maple_exact.py (the same towers); the frozen text features add a
# mean over the templates (60 terms) and the loss terms a mean over K x D values.
K_TEXT = TEXT_LAYERS * (3 * TEXT_WIDTH + HEAD_WIDTH + CONTEXT + 4 * TEXT_WIDTH) + 2 * TEXT_WIDTH
K_IMAGE = VISION_LAYERS * (3 * VISION_WIDTH + HEAD_WIDTH + TOKENS + 4 * VISION_WIDTH) + 2 * VISION_WIDTH
K_FORWARD = K_TEXT + K_IMAGE + EMBED + len(promptsrc.TEMPLATES)
K_BACKWARD = 2 * K_FORWARD

NAMES = ["cat", "golden_retriever", "an unusually long class name", "sea lion", "eft"]
PREFIX = "a photo of a"

# PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES, first and last five and the count: the list the
# frozen text features average over.
TEMPLATES_HEAD = ["a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
                  "a photo of the hard to see {}."]
TEMPLATES_TAIL = ["art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
                  "itap of the {}."]


def tokenizer(texts):
    return open_clip.tokenize(texts, context_length=CONTEXT)


def tiny_clip(seed: int = 0):
    return tiny_openai_clip(seed, embed=EMBED, context=CONTEXT, text_width=TEXT_WIDTH, text_layers=TEXT_LAYERS,
                            vision_width=VISION_WIDTH, vision_layers=VISION_LAYERS, head_width=HEAD_WIDTH)


def official_fixed_embeddings(clip):
    """promptsrc.py VLPromptLearner.__init__: encode_text of every template (raw), mean over templates; forward
    normalises it."""
    with torch.no_grad():
        feats = torch.stack([clip.encode_text(tokenizer([t.replace("{}", c.replace("_", " ")) for c in NAMES]))
                             for t in promptsrc.TEMPLATES], dim=1).mean(dim=1)
    return feats / feats.norm(dim=-1, keepdim=True)


def official_terms(clip, pl, images, labels, w_text=25.0, w_image=10.0):
    """CustomCLIP.forward (training) + PromptSRC.forward_backward -> (logits, {term: value})."""
    prompts, tokens = official_learned_prompts(clip, tokenizer, pl.ctx, NAMES, PREFIX)
    text = official_deep_text(clip, prompts, tokens, list(pl.deep_text))
    image = official_deep_image(clip.visual, images, pl.visual, list(pl.deep_visual))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    scale = clip.logit_scale.exp()
    logits = scale * image @ text.t()
    fixed = official_fixed_embeddings(clip)
    with torch.no_grad():
        zs = clip.encode_image(images)
        zs = zs / zs.norm(dim=-1, keepdim=True)
        zs_logits = scale * zs @ fixed.t()
    terms = {"ce": F.cross_entropy(logits, labels),
             "scl_text": F.l1_loss(text, fixed, reduction="mean") * w_text,
             "scl_image": F.l1_loss(image, zs, reduction="mean") * w_image,
             "scl_logits": F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zs_logits / 1, dim=1),
                                    reduction="sum", log_target=True) * (1 * 1) / logits.numel()}
    terms["loss"] = terms["ce"] + (terms["scl_logits"] + terms["scl_text"] + terms["scl_image"])
    return logits, terms


def _setup(depth_text, depth_vision, text_chunk=2048, seed=0, **kw):
    clip = tiny_clip(seed)
    cfg = methods.validate({"method": "PromptSRC", "data_root": "/nowhere", "prompt_depth_text": depth_text,
                            "prompt_depth_vision": depth_vision, **kw})
    model = methods.build(cfg, clip, tokenizer, text_chunk=text_chunk)
    model.set_classnames(NAMES)
    torch.manual_seed(seed + 7)
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 2, 4, 1])
    return clip, model, images, labels


CASES = [(3, 3, 2048), (2, 3, 2048), (9, 9, 2), (1, 1, 3)]


@pytest.mark.parametrize("depth_text,depth_vision,text_chunk", CASES)
def test_logits_equal_official_rule(depth_text, depth_vision, text_chunk):
    clip, model, images, labels = _setup(depth_text, depth_vision, text_chunk)
    model.eval()
    with torch.no_grad():
        ours = model(images)
        expected, _ = official_terms(clip, model.prompt_learner, images, labels)
    assert_close_fp32(ours, expected, k=K_FORWARD, msg="logits")


@pytest.mark.parametrize("depth_text,depth_vision,text_chunk", CASES)
def test_every_loss_term_equals_official_rule(depth_text, depth_vision, text_chunk):
    clip, model, images, labels = _setup(depth_text, depth_vision, text_chunk)
    model.train()
    with torch.no_grad():
        ours = model(images, labels)
        logits, expected = official_terms(clip, model.prompt_learner, images, labels)
    scale = float(logits.abs().max()) + 25.0 + 10.0  # the sizes the terms are built from
    for term in ("ce", "scl_text", "scl_image", "scl_logits", "loss"):
        assert_close_fp32(ours[term], expected[term], k=2 * K_FORWARD, scale=scale, msg=term)


@pytest.mark.parametrize("depth_text,depth_vision,text_chunk", CASES)
def test_gradient_of_every_learned_tensor_equals_official_rule(depth_text, depth_vision, text_chunk):
    clip, model, images, labels = _setup(depth_text, depth_vision, text_chunk)
    model.train()
    model(images, labels)["loss"].backward()
    ours = {n: p.grad.clone() for n, p in model.prompt_learner.named_parameters()}
    model.zero_grad()
    official_terms(clip, model.prompt_learner, images, labels)[1]["loss"].backward()
    expected = {n: p.grad for n, p in model.prompt_learner.named_parameters()}
    assert set(ours) == set(expected) == {"ctx", "visual", *(f"deep_text.{i}" for i in range(min(depth_text, 3) - 1)),
                                          *(f"deep_visual.{i}" for i in range(min(depth_vision, 3) - 1))}
    for name in expected:
        assert_close_fp32(ours[name], expected[name], k=K_BACKWARD, msg=name)


def test_frozen_text_features_average_the_60_templates():
    assert len(promptsrc.TEMPLATES) == 60
    assert list(promptsrc.TEMPLATES[:5]) == TEMPLATES_HEAD and list(promptsrc.TEMPLATES[-5:]) == TEMPLATES_TAIL
    clip, model, _, _ = _setup(3, 3)
    assert_close_fp32(model.frozen_text_features(), official_fixed_embeddings(clip), k=K_FORWARD, msg="t0")


def official_gpa(snapshots, mean, std, epochs):
    """PromptSRC.build_model (get_gauss, numpy, / sum) and forward_backward (state_dict_weighting / _add)."""
    gauss = lambda x: (1 / (std * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mean) / std) ** 2)  # noqa: E731
    weights = np.array([gauss(a) for a in range(1, epochs + 1)])
    weights = weights / sum(weights)
    total = None
    for step_counter in range(2, epochs + 2):  # step_counter += 1 after each epoch; weight gauss[counter - 2]
        weighted = {k: v * weights[step_counter - 2] for k, v in snapshots[step_counter - 2].items()}
        total = weighted if total is None else {k: total[k] + weighted[k] for k in total}
    return weights, total


@pytest.mark.parametrize("epochs,mean,std", [(20, 15.0, 1.0), (20, 6.0, 10.0), (5, 4.0, 1.0)])
def test_gpa_equals_official_rule(epochs, mean, std):
    clip, model, _, _ = _setup(3, 3, epochs=epochs, gpa_mean=mean, gpa_std=std)
    pl = model.prompt_learner
    snapshots = []
    gen = torch.Generator().manual_seed(3)
    for epoch in range(epochs):
        with torch.no_grad():
            for p in pl.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        snapshots.append({n: p.detach().clone() for n, p in pl.named_parameters()})
        model.after_epoch(epoch)
    weights, expected = official_gpa(snapshots, mean, std, epochs)
    assert np.allclose(model.gpa, weights, rtol=1e-12, atol=0)
    assert math.isclose(sum(model.gpa), 1.0, rel_tol=1e-12)
    for name, p in pl.named_parameters():
        # a sum of `epochs` weighted values, each product and sum rounded in float32
        assert_close_fp32(p.detach(), expected[name], k=2 * epochs, scale=float(expected[name].abs().max()) + 1,
                          msg=name)


def test_gpa_is_not_applied_before_the_last_epoch():
    clip, model, _, _ = _setup(3, 3, epochs=4)
    before = {n: p.detach().clone() for n, p in model.prompt_learner.named_parameters()}
    for epoch in range(3):  # a run capped short of its epochs keeps its own prompts
        model.after_epoch(epoch)
    for n, p in model.prompt_learner.named_parameters():
        assert torch.equal(p.detach(), before[n])


# --------------------------------------------------------------------------------------- the recipe, per protocol
def _recipe(**kw):
    return methods.validate({"method": "PromptSRC", "data_root": "/nowhere", **kw})


def test_recipe_base_to_new():
    r = _recipe()  # configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml (scripts/promptsrc/base2new_train.sh)
    assert (r.n_ctx, r.n_ctx_vision, r.ctx_init) == (4, 4, "a photo of a")  # N_CTX_TEXT, N_CTX_VISION, CTX_INIT
    assert (r.prompt_depth_text, r.prompt_depth_vision) == (9, 9)  # PROMPT_DEPTH_TEXT, PROMPT_DEPTH_VISION
    assert (r.text_loss_weight, r.image_loss_weight) == (25, 10)  # TEXT_LOSS_WEIGHT, IMAGE_LOSS_WEIGHT
    assert (r.gpa_mean, r.gpa_std) == (15, 1)  # GPA_MEAN, GPA_STD
    assert (r.lr, r.epochs, r.batch_size, r.test_batch_size) == (0.0025, 20, 4, 100)  # OPTIM, DATALOADER
    assert (r.warmup_epochs, r.warmup_lr, r.momentum, r.weight_decay) == (1, 1e-5, 0.9, 5e-4)  # + Dassl defaults
    assert r.shots == 16 and r.subsample == "base"


def test_recipe_cross_dataset_and_domain_generalisation():
    # scripts/promptsrc/reproduce_xd.sh: CFG=vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets, LOADEP=20; that
    # config: PROMPT_DEPTH_VISION 3, PROMPT_DEPTH_TEXT 3, GPA_MEAN 6, GPA_STD 10, the rest as base-to-new
    r = _recipe(subsample="all", dataset="ImageNet")
    assert (r.prompt_depth_text, r.prompt_depth_vision, r.gpa_mean, r.gpa_std) == (3, 3, 6, 10)
    assert (r.lr, r.epochs, r.batch_size, r.text_loss_weight, r.image_loss_weight) == (0.0025, 20, 4, 25, 10)
