"""KgCoOp equals its official rule: logits, loss and the context gradient (fp32), and its recipe defaults.

Official code: htyao89/KgCoOp (commit c43ccc3), KgCoOp/trainers/kgcoop.py:
- PromptLearner.__init__: the hand-crafted text features come from a fresh frozen CLIP,
  `temp = CUSTOM_TEMPLATES[cfg.DATASET.NAME]`, `prompts_ = [temp.format(c.replace("_", " ")) ...]`,
  `text_features = clip_model_.encode_text(prompts_)`, `text_features / text_features.norm(dim=-1, keepdim=True)`.
- CustomCLIP.forward: learned prompts `[SOS] ctx_1..ctx_4 <name> . [EOT]` through the text tower (TextEncoder:
  + positional embedding, causal transformer, ln_final, feature at argmax(token id) @ text_projection);
  image and text features normalised; `logits = logit_scale.exp() * image_features @ text_features.t()`;
  `cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)`,
  `score = 1.0 - torch.mean(cos(text_features, text_features_old))`.
- KgCoOp.forward_backward: `loss = F.cross_entropy(output, label) + self.w * score`, w = TRAINER.COOP.W.
- KgCoOp.model_inference: `self.model(input)[0]` (the logits only: no knowledge-guided term at test time).

The expected values below are that rule written out on open_clip's own modules (encode_image, encode_text, the
text transformer with CLIP's causal mask over the whole context), never through vlpt_lib's text encoder or the
method under test. A side-by-side run of the official CustomCLIP / KgCoOp.forward_backward (fp32, tiny random
OpenAI-layout CLIP from the official clip/model.py, loaded into open_clip) against vlpt_lib's KgCoOp gave
max|difference| of 1.7e-6 on logits up to 3.8, 4.8e-7 on the loss (7.58) and 3.6e-6 on a ctx gradient up to 8.4.
"""
from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from numerics import assert_close_fp32
from references import tiny_openai_clip
from vlpt_lib.data import coop
from vlpt_lib.methods import prompt as methods

CONTEXT = 32
EMBED, TEXT_WIDTH, TEXT_LAYERS, HEAD_WIDTH = 32, 64, 2, 16
# Float32 tolerance (tests/numerics.py), derived as in tests/test_cocoop_exact.py: ours and the reference sum in
# other orders (truncated and shared-prefix text passes, chunking), so they differ by rounding along the longest
# chain of dot products: per text block qkv (width) + scores (head width) + attention over the context +
# out-projection (width) + MLP in (width) and out (4 x width); then text projection and normalisation (width each).
K_FORWARD = TEXT_LAYERS * (3 * TEXT_WIDTH + HEAD_WIDTH + CONTEXT + 4 * TEXT_WIDTH) + 2 * TEXT_WIDTH
# The loss: cross-entropy moves a logit error at most 2x (the label's logit and the log-sum-exp); the KG term is
# w x (a dot product of two unit vectors, embed_dim long). Its scale: max|logit| + w (the sizes it is built from).
K_LOSS = 2 * K_FORWARD + EMBED
K_BACKWARD = 2 * K_FORWARD  # the gradient runs back along the same chain

NAMES = ["cat", "golden_retriever", "an unusually long class name", "sea lion", "eft", "x ray machine"]
PREFIX = "a photo of a"  # htyao89/KgCoOp trainers/kgcoop.py PromptLearner: temp = 'a photo of a' (CTX_INIT: True)

# htyao89/KgCoOp trainers/kgcoop.py CUSTOM_TEMPLATES (the hand-crafted prompts of the knowledge-guided term).
KGCOOP_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",  # CoOp trainers/zsclip.py: "{} texture."
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def tokenizer(texts):
    return open_clip.tokenize(texts, context_length=CONTEXT)


def tiny_clip(seed: int = 0):
    return tiny_openai_clip(seed, embed=EMBED, context=CONTEXT, text_width=TEXT_WIDTH, text_layers=TEXT_LAYERS,
                            head_width=HEAD_WIDTH)


# ------------------------------------------------------------------------------- the official rule, written out
def official_handcrafted(clip, classnames, template):
    """kgcoop.py PromptLearner: encode_text of the template prompts, normalised over the feature dim."""
    tokens = tokenizer([template.format(c.replace("_", " ")) for c in classnames])
    with torch.no_grad():
        feats = clip.encode_text(tokens)
    return feats / feats.norm(dim=-1, keepdim=True)


def official_learned_text(clip, ctx, classnames):
    """kgcoop.py PromptLearner.forward + TextEncoder.forward, full context length, CLIP's causal mask."""
    tokens = tokenizer([f"{PREFIX} {c.replace('_', ' ')}." for c in classnames])
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
    n_ctx = ctx.shape[0]
    prompts = torch.cat([emb[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), emb[:, 1 + n_ctx:]], dim=1)
    x = prompts + clip.positional_embedding
    x = clip.transformer(x, attn_mask=clip.attn_mask)  # open_clip 3.x: batch first
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection


def official_forward(clip, ctx, classnames, template, images):
    """kgcoop.py CustomCLIP.forward -> (logits, score)."""
    with torch.no_grad():
        image_features = clip.encode_image(images)
    text_features = official_learned_text(clip, ctx, classnames)
    text_features_old = official_handcrafted(clip, classnames, template)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = clip.logit_scale.exp() * image_features @ text_features.t()
    # torch.nn.CosineSimilarity(dim=1, eps=1e-07): x.y / max(|x| |y|, eps), one value per class
    cos = (text_features * text_features_old).sum(dim=1) / (
        text_features.norm(dim=1) * text_features_old.norm(dim=1)).clamp_min(1e-7)
    score = 1.0 - cos.mean()
    return logits, score


def _setup(template, w, share_prefix, text_chunk, seed=0):
    clip = tiny_clip(seed)
    model = methods.get("KgCoOp")(clip, tokenizer, kg_weight=w, share_prefix=share_prefix, text_chunk=text_chunk)
    model.set_classnames(NAMES, template)
    torch.manual_seed(seed + 7)
    with torch.no_grad():  # move ctx away from the word embeddings so the KG term and its gradient are not special
        model.prompt_learner.ctx.add_(0.05 * torch.randn_like(model.prompt_learner.ctx))
    images = torch.randn(5, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 5])
    return clip, model, images, labels


CASES = [("OxfordPets", 8.0, True, 2048), ("DescribableTextures", 8.0, False, 2048), ("ImageNet", 1.0, True, 2),
         ("UCF101", 8.0, False, 3)]


@pytest.mark.parametrize("dataset,w,share_prefix,text_chunk", CASES)
def test_logits_equal_official_rule(dataset, w, share_prefix, text_chunk):
    clip, model, images, labels = _setup(KGCOOP_TEMPLATES[dataset], w, share_prefix, text_chunk)
    ctx = model.prompt_learner.ctx.detach().clone()
    with torch.no_grad():
        expected, _ = official_forward(clip, ctx, NAMES, KGCOOP_TEMPLATES[dataset], images)
    model.train()
    assert_close_fp32(model(images), expected, k=K_FORWARD, msg="train logits")
    model.eval()  # KgCoOp.model_inference: the logits alone, CoOp's rule
    with torch.no_grad():
        assert_close_fp32(model(images), expected, k=K_FORWARD, msg="test logits")
        assert_close_fp32(model.zeroshot_weights(), official_handcrafted(clip, NAMES, KGCOOP_TEMPLATES[dataset]),
                          k=K_FORWARD, msg="hand-crafted text features")


@pytest.mark.parametrize("dataset,w,share_prefix,text_chunk", CASES)
def test_loss_equals_official_rule(dataset, w, share_prefix, text_chunk):
    clip, model, images, labels = _setup(KGCOOP_TEMPLATES[dataset], w, share_prefix, text_chunk)
    ctx = model.prompt_learner.ctx.detach().clone()
    with torch.no_grad():
        logits, score = official_forward(clip, ctx, NAMES, KGCOOP_TEMPLATES[dataset], images)
        expected = F.cross_entropy(logits, labels) + w * score  # kgcoop.py KgCoOp.forward_backward
    model.train()
    out = model(images, labels)
    scale = float(logits.abs().max()) + w
    assert float(score) > 1e-3  # the KG term is really there
    assert_close_fp32(out["kg"], score, k=K_LOSS, scale=1.0, msg="knowledge-guided term 1 - mean cos")
    assert_close_fp32(out["loss"], expected, k=K_LOSS, scale=scale, msg="loss CE + w (1 - mean cos)")


@pytest.mark.parametrize("dataset,w,share_prefix,text_chunk", CASES)
def test_ctx_gradient_equals_official_rule(dataset, w, share_prefix, text_chunk):
    clip, model, images, labels = _setup(KGCOOP_TEMPLATES[dataset], w, share_prefix, text_chunk)
    ctx = model.prompt_learner.ctx.detach().clone().requires_grad_(True)
    logits, score = official_forward(clip, ctx, NAMES, KGCOOP_TEMPLATES[dataset], images)
    (F.cross_entropy(logits, labels) + w * score).backward()
    expected = ctx.grad

    model.train()
    model.prompt_learner.zero_grad(set_to_none=True)
    model(images, labels)["loss"].backward()
    grads = {n: p.grad for n, p in model.prompt_learner.named_parameters() if p.requires_grad}
    assert set(grads) == {"ctx"}  # kgcoop.py build_model: only names containing "ctx" train
    assert expected.abs().max() > 0
    assert_close_fp32(grads["ctx"], expected, k=K_BACKWARD, msg="grad ctx")
    # the knowledge-guided term's own share of the gradient is pinned too (not hidden under the CE part)
    ctx2 = ctx.detach().clone().requires_grad_(True)
    logits2, _ = official_forward(clip, ctx2, NAMES, KGCOOP_TEMPLATES[dataset], images)
    F.cross_entropy(logits2, labels).backward()
    assert (expected - ctx2.grad).abs().max() > 1e-3 * expected.abs().max()


def test_context_init_is_a_photo_of_a():
    """kgcoop.py PromptLearner: ctx_init -> 'a photo of a', n_ctx = 4 words, ctx = embedding[0, 1:1+n_ctx]."""
    clip = tiny_clip()
    cfg = methods.validate({"method": "KgCoOp", "data_root": "/nowhere"})
    model = methods.build(cfg, clip, tokenizer)
    words = clip.token_embedding(tokenizer([PREFIX]))[0, 1:5]
    assert model.prompt_learner.ctx.shape == (4, TEXT_WIDTH)
    assert torch.equal(model.prompt_learner.ctx.detach(), words.detach())
    assert model.kg_weight == 8.0  # the recipe's W reaches the model
    assert model.prompt_learner.meta_net is None  # KgCoOp's meta_net / bias_vectors / adapter are built but frozen


# --------------------------------------------------------------------------------------- the recipe, per family
def _recipe():
    return methods.validate({"method": "KgCoOp", "data_root": "/nowhere"})


def test_recipe_optimizer():
    r = _recipe()
    assert r.lr == 0.002  # KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml OPTIM.NAME "sgd", LR 0.002
    assert r.momentum == 0.9  # Dassl.ProGrad.pytorch dassl/config/defaults.py OPTIM.MOMENTUM 0.9 (not overridden)
    assert r.weight_decay == 5e-4  # Dassl.ProGrad.pytorch dassl/config/defaults.py OPTIM.WEIGHT_DECAY 5e-4


def test_recipe_schedule():
    r = _recipe()
    assert r.epochs == 100  # vit_b16_ep100_ctxv1.yaml OPTIM.MAX_EPOCH 100 (base2new_test.sh LOADEP=100: last epoch)
    assert r.warmup_epochs == 1  # vit_b16_ep100_ctxv1.yaml OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE "constant"
    assert r.warmup_lr == 1e-5  # vit_b16_ep100_ctxv1.yaml OPTIM.WARMUP_CONS_LR 1e-5 (LR_SCHEDULER "cosine")


def test_recipe_batches():
    r = _recipe()
    assert r.batch_size == 128  # vit_b16_ep100_ctxv1.yaml DATALOADER.TRAIN_X.BATCH_SIZE 128
    assert r.test_batch_size == 100  # vit_b16_ep100_ctxv1.yaml DATALOADER.TEST.BATCH_SIZE 100


def test_recipe_prompt():
    r = _recipe()
    assert r.n_ctx == 4  # KgCoOp scripts/base2new_train.sh NCTX=4 (CSC=False, CTP=end)
    assert r.ctx_init == PREFIX  # vit_b16_ep100_ctxv1.yaml CTX_INIT True -> kgcoop.py temp = 'a photo of a'


def test_recipe_kg_weight():
    # scripts/run.sh: `bash base2new_train.sh <dataset> 8.0` -> TRAINER.COOP.W 8.0 (train.py default W 1.0);
    # scripts/xd_train.sh: WEIGHT=8.0 as well.
    assert _recipe().kg_weight == 8.0


def test_recipe_protocol():
    r = _recipe()
    assert r.shots == 16  # scripts/base2new_train.sh SHOTS=16
    assert r.subsample == "base"  # scripts/base2new_train.sh DATASET.SUBSAMPLE_CLASSES base
    assert r.seed == 1  # scripts/base2new_train.sh `for SEED in 1 2 3` (the workbook runs each seed)


def test_recipe_augmentation():
    r = _recipe()
    # vit_b16_ep100_ctxv1.yaml INPUT.TRANSFORMS ["random_resized_crop", "random_flip", "normalize"], SIZE 224,
    # bicubic; Dassl.ProGrad dassl/data/transforms/transforms.py RandomResizedCrop(size) -> torchvision's scale.
    assert r.augment is True
    assert tuple(r.crop_scale) == (0.08, 1.0)


@pytest.mark.parametrize("dataset", list(KGCOOP_TEMPLATES))
def test_handcrafted_template_of_each_dataset(dataset):
    """The template the prompt job hands KgCoOp (vlpt_lib/jobs/prompt.py: set_classnames(..., template=
    model.template_for(name, the dataset's CoOp template))) is the one KgCoOp's official code encodes for its
    knowledge-guided term."""
    kgcoop = methods.get("KgCoOp")
    assert kgcoop.template_for(dataset, coop.DATASETS[dataset].template) == KGCOOP_TEMPLATES[dataset]
