"""MaPLe equals its official rule: logits, loss and the gradient of every learned tensor (fp32), the context
init, the deep-prompt couplings, and its recipe for both protocols.

Official code: muzairkhattak/multimodal-prompt-learning (commit 69bce21):
- trainers/maple.py MultiModalPromptLearner: ctx = embedding of the first N_CTX tokens of CTX_INIT (n_ctx <= 4),
  prompt_prefix = the whole CTX_INIT; proj = Linear(512, 768) (the first block's vision prompts = proj(ctx));
  compound_prompts_text: PROMPT_DEPTH - 1 sets of (n_ctx, 512) N(0, 0.02); compound_prompt_projections =
  _get_clones(Linear(512, 768)); forward returns (prompts, proj(ctx), compound_prompts_text,
  [projection_i(compound_prompts_text[i])]).
- CustomCLIP.forward: text and image features through the deep-prompted towers (clip/model.py
  ResidualAttentionBlock_MaPLe, VisionTransformer_MaPLe), both normalised, logits = logit_scale.exp() * f @ t^T;
  training: F.cross_entropy(logits, label).

The expected values are that rule written out (tests/references.py official_deep_text / official_deep_image,
over the whole context, on open_clip's modules), never through vlpt_lib's deep-prompt code. A side-by-side run
of the official CustomCLIP (its clip/model.py and maple.py, .half() casts removed for fp32 on CPU) against
vlpt_lib's MaPLe is reported in the closing note of issue #19.
"""
from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from numerics import assert_close_fp32
from references import official_deep_image, official_deep_text, official_learned_prompts, tiny_openai_clip
from vlpt_lib.methods import prompt as methods

CONTEXT, EMBED = 32, 32
TEXT_WIDTH, TEXT_LAYERS, VISION_WIDTH, VISION_LAYERS, HEAD_WIDTH, TOKENS = 48, 3, 64, 3, 16, 4 + 1 + 2
# Float32 tolerance (tests/numerics.py), as in tests/test_kgcoop_exact.py: ours cuts the text pass after the
# longest EOT and chunks it, so sums run in another order. Longest chain of dot products per block of either
# tower: qkv (width) + scores (head width) + attention over the sequence + out-projection (width) + MLP in
# (width) and out (4 x width); then the projection and normalisation (width each), the logit (embed dim).
K_TEXT = TEXT_LAYERS * (3 * TEXT_WIDTH + HEAD_WIDTH + CONTEXT + 4 * TEXT_WIDTH) + 2 * TEXT_WIDTH
K_IMAGE = VISION_LAYERS * (3 * VISION_WIDTH + HEAD_WIDTH + TOKENS + 4 * VISION_WIDTH) + 2 * VISION_WIDTH
K_FORWARD = K_TEXT + K_IMAGE + EMBED
K_BACKWARD = 2 * K_FORWARD  # the gradient runs back along the same chains

NAMES = ["cat", "golden_retriever", "an unusually long class name", "sea lion", "eft"]
PREFIX = "a photo of a"  # configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml CTX_INIT


def tokenizer(texts):
    return open_clip.tokenize(texts, context_length=CONTEXT)


def tiny_clip(seed: int = 0):
    return tiny_openai_clip(seed, embed=EMBED, context=CONTEXT, text_width=TEXT_WIDTH, text_layers=TEXT_LAYERS,
                            vision_width=VISION_WIDTH, vision_layers=VISION_LAYERS, head_width=HEAD_WIDTH)


def official_forward(clip, pl, images):
    """maple.py MultiModalPromptLearner.forward + CustomCLIP.forward -> logits, with pl our learner's tensors."""
    prompts, tokens = official_learned_prompts(clip, tokenizer, pl.ctx, NAMES, PREFIX)
    deep_text = list(pl.compound_prompts_text)
    deep_vision = [layer(p) for layer, p in zip(pl.compound_prompt_projections, deep_text)]
    text = official_deep_text(clip, prompts, tokens, deep_text)
    image = official_deep_image(clip.visual, images, pl.proj(pl.ctx), deep_vision)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return clip.logit_scale.exp() * image @ text.t()


def _setup(depth, text_chunk=2048, seed=0):
    clip = tiny_clip(seed)
    cfg = methods.validate({"method": "MaPLe", "data_root": "/nowhere", "prompt_depth": depth})
    model = methods.build(cfg, clip, tokenizer, text_chunk=text_chunk)
    model.set_classnames(NAMES)
    torch.manual_seed(seed + 7)
    with torch.no_grad():  # every learned tensor away from its init (the couplings start as copies of one)
        for p in model.prompt_learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 2, 4, 1])
    return clip, model, images, labels


CASES = [(3, 2048), (2, 2048), (9, 2), (1, 3)]  # depth 9 on 3 blocks: the blocks take the first 2 deeper sets


@pytest.mark.parametrize("depth,text_chunk", CASES)
def test_logits_equal_official_rule(depth, text_chunk):
    clip, model, images, _ = _setup(depth, text_chunk)
    model.eval()
    with torch.no_grad():
        ours = model(images)
        expected = official_forward(clip, model.prompt_learner, images)
    assert_close_fp32(ours, expected, k=K_FORWARD, msg="logits")


@pytest.mark.parametrize("depth,text_chunk", CASES)
def test_loss_equals_official_rule(depth, text_chunk):
    clip, model, images, labels = _setup(depth, text_chunk)
    model.train()
    with torch.no_grad():
        ours = model(images, labels)["loss"]
        logits = official_forward(clip, model.prompt_learner, images)
        expected = F.cross_entropy(logits, labels)
    assert_close_fp32(ours, expected, k=2 * K_FORWARD, scale=float(logits.abs().max()), msg="loss")


@pytest.mark.parametrize("depth,text_chunk", CASES)
def test_gradient_of_every_learned_tensor_equals_official_rule(depth, text_chunk):
    clip, model, images, labels = _setup(depth, text_chunk)
    model.train()
    model(images, labels)["loss"].backward()
    ours = {n: p.grad.clone() for n, p in model.prompt_learner.named_parameters()}
    model.zero_grad()
    F.cross_entropy(official_forward(clip, model.prompt_learner, images), labels).backward()
    expected = {n: p.grad for n, p in model.prompt_learner.named_parameters()}
    assert set(ours) == set(expected)
    for name in expected:
        assert_close_fp32(ours[name], expected[name], k=K_BACKWARD, msg=name)


def test_learned_tensors_and_their_init():
    """maple.py: ctx = the first N_CTX=2 token embeddings of 'a photo of a' (the prompt keeps 'of a' as words);
    PROMPT_DEPTH - 1 deeper text sets (n_ctx, text width) ~ N(0, 0.02); the couplings start as copies of one
    Linear (_get_clones); proj maps text width -> vision width."""
    clip = tiny_clip()
    model = methods.build(methods.validate({"method": "MaPLe", "data_root": "/nowhere", "prompt_depth": 3}),
                          clip, tokenizer)
    pl = model.prompt_learner
    words = clip.token_embedding(tokenizer([PREFIX]))[0, 1:3]
    assert torch.equal(pl.ctx.detach(), words.detach())
    assert pl.prompt_prefix == PREFIX
    assert [tuple(p.shape) for p in pl.compound_prompts_text] == [(2, TEXT_WIDTH)] * 2
    assert 0.01 < float(torch.cat(list(pl.compound_prompts_text)).detach().std()) < 0.03
    w0, w1 = (layer.weight for layer in pl.compound_prompt_projections)
    assert torch.equal(w0, w1) and w0.shape == (VISION_WIDTH, TEXT_WIDTH)
    assert pl.proj.weight.shape == (VISION_WIDTH, TEXT_WIDTH)
    model.set_classnames(["sea lion"])
    expected = tokenizer(["a photo of a sea lion."])  # the words after the 2 learned tokens: "of a sea lion ."
    assert torch.equal(pl.token_suffix[0], clip.token_embedding(expected)[0, 3:].float())


# --------------------------------------------------------------------------------------- the recipe, per protocol
def _recipe(**kw):
    return methods.validate({"method": "MaPLe", "data_root": "/nowhere", **kw})


def test_recipe_base_to_new():
    r = _recipe()  # configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml (scripts/maple/base2new_train_maple.sh)
    assert (r.n_ctx, r.ctx_init, r.prompt_depth) == (2, "a photo of a", 9)  # TRAINER.MAPLE N_CTX, CTX_INIT, DEPTH
    assert (r.lr, r.epochs, r.batch_size) == (0.0035, 5, 4)  # OPTIM.LR, MAX_EPOCH, DATALOADER.TRAIN_X.BATCH_SIZE
    assert (r.warmup_epochs, r.warmup_lr) == (1, 1e-5)  # OPTIM.WARMUP_EPOCH 1 constant, WARMUP_CONS_LR 1e-5
    assert (r.momentum, r.weight_decay) == (0.9, 5e-4)  # Dassl dassl/config/defaults.py (not overridden)
    assert r.test_batch_size == 100 and r.shots == 16 and r.subsample == "base"  # DATALOADER.TEST; the script


def test_recipe_cross_dataset_and_domain_generalisation():
    # scripts/maple/xd_train_maple.sh: CFG=vit_b16_c2_ep5_batch4_2ctx_cross_datasets, no SUBSAMPLE_CLASSES (all);
    # that config: OPTIM.LR 0.0026, MAX_EPOCH 2, PROMPT_DEPTH 3 (xd_test_maple.sh --load-epoch 2)
    r = _recipe(subsample="all", dataset="ImageNet")
    assert (r.lr, r.epochs, r.prompt_depth, r.n_ctx, r.batch_size) == (0.0026, 2, 3, 2, 4)
    assert _recipe(subsample="all", epochs=7).epochs == 7  # a run's own value wins
