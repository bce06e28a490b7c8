"""The fast CoCoOp path equals a plain per-image, full-length loop: logits and gradients (fp32).

The reference below is deliberately naive and independent of vlpt_lib.models.text_encoder: for
each image it rebuilds all class prompts with that image's context, runs CLIP's text tower over
the whole context length with CLIP's own causal mask, and reads the EOT feature.
"""
from __future__ import annotations

import functools

import open_clip
import pytest
import torch
import torch.nn.functional as F

from numerics import assert_close_fp32
from vlpt_lib.methods import prompt as methods
from vlpt_lib.models.prompt import PromptCLIP

CONTEXT = 24
TEXT_WIDTH, TEXT_LAYERS, HEAD_WIDTH = 32, 2, 16
# Float32 tolerance (tests/numerics.py): the fast path and the reference sum in other orders (batched vs one
# image, shared prefix, truncated context), so they differ by rounding along the longest chain of dot
# products, whose lengths add up: per text block qkv (width) + scores (head width) + attention over the
# context + out-projection (width) + MLP in (width) and out (4 x width), then the text projection and the
# normalisation (width each).
K_FORWARD = TEXT_LAYERS * (3 * TEXT_WIDTH + HEAD_WIDTH + CONTEXT + 4 * TEXT_WIDTH) + 2 * TEXT_WIDTH
K_BACKWARD = 2 * K_FORWARD  # the gradient runs back along the same chain
NAMES = ["cat", "golden retriever", "an unusually long class name with many words", "eft", "sea_lion",
         "x ray machine", "dog", "the quick brown fox jumps", "ox", "red panda"]


def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=16, layers=1, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=CONTEXT, vocab_size=49408, width=TEXT_WIDTH, heads=TEXT_WIDTH // HEAD_WIDTH,
                      layers=TEXT_LAYERS),
    )
    return model.eval()


def tokenizer(texts):
    return open_clip.tokenize(texts, context_length=CONTEXT)


def reference_logits(model: PromptCLIP, images: torch.Tensor) -> torch.Tensor:
    clip = model.clip
    pl = model.prompt_learner
    img = F.normalize(clip.encode_image(images).float(), dim=-1)
    rows = []
    for i in range(img.shape[0]):
        if pl.meta_net is not None:
            ctx = pl.ctx + pl.meta_net(img[i:i + 1])  # (M, C): ctx_m + pi(x_i)
        else:
            ctx = pl.ctx
        k = pl.token_prefix.shape[0]
        prompts = torch.cat([pl.token_prefix, ctx.unsqueeze(0).expand(k, -1, -1), pl.token_suffix], dim=1)
        x = prompts + clip.positional_embedding
        x = clip.transformer(x, attn_mask=clip.attn_mask)  # open_clip 3.x: batch_first
        x = clip.ln_final(x)
        x = x[torch.arange(k), pl.eot_idx] @ clip.text_projection
        text = F.normalize(x, dim=-1)
        rows.append(clip.logit_scale.exp() * img[i] @ text.t())
    return torch.stack(rows)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.prompt_learner.named_parameters()}


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("method", ["CoCoOp", "CoOp"])
@pytest.mark.parametrize("batch,n_cls,chunk", [(1, 3, 2048), (3, 7, 5), (4, 10, 16), (2, 10, 1)])
def test_fast_path_matches_per_image_reference(method, batch, n_cls, chunk, share_prefix):
    clip = tiny_clip()
    model = methods.get(method)(clip, tokenizer, ctx_init="a photo of a", text_chunk=chunk,
                       share_prefix=share_prefix)
    assert model.text_encoder.supports_shared_prefix
    model.set_classnames(NAMES[:n_cls])
    assert len(set(model.prompt_learner.eot_idx.tolist())) > 1 or n_cls < 3  # prompts of different lengths
    torch.manual_seed(batch * 100 + n_cls)
    with torch.no_grad():  # move ctx away from the word embeddings so the test is not special
        model.prompt_learner.ctx.add_(0.1 * torch.randn_like(model.prompt_learner.ctx))
    images = torch.randn(batch, 3, 16, 16)
    labels = torch.randint(0, n_cls, (batch,))

    model.train()
    fast = model(images)
    F.cross_entropy(fast, labels).backward()
    g_fast = _grads(model)
    model.prompt_learner.zero_grad(set_to_none=True)

    ref = reference_logits(model, images)
    F.cross_entropy(ref, labels).backward()
    g_ref = _grads(model)

    assert fast.shape == (batch, n_cls)
    assert_close_fp32(fast, ref, k=K_FORWARD, msg="logits")
    assert g_fast.keys() == g_ref.keys() and len(g_fast) == (5 if method == "CoCoOp" else 1)
    for name in g_ref:
        assert g_ref[name].abs().max() > 0, name
        assert_close_fp32(g_fast[name], g_ref[name], k=K_BACKWARD, msg=f"grad {name}")


def test_truncation_is_exact_and_shorter():
    clip = tiny_clip()
    model = methods.get("CoCoOp")(clip, tokenizer, text_chunk=4, share_prefix=False)
    model.set_classnames(NAMES)
    eot = model.prompt_learner.eot_idx
    assert int(eot.max()) + 1 < CONTEXT  # the cut really removes positions
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fast = model(images)
        model.truncate = False
        full = model(images)
    assert_close_fp32(fast, full, k=K_FORWARD, msg="logits")


def test_random_init_context_and_eight_tokens():
    clip = tiny_clip()
    model = methods.get("CoCoOp")(clip, tokenizer, ctx_init=None, n_ctx=8, seed_ctx=1, text_chunk=7)
    model.set_classnames(NAMES[:6])
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert_close_fp32(model(images), reference_logits(model, images), k=K_FORWARD, msg="logits")


def test_new_classes_keep_learned_context():
    clip = tiny_clip()
    model = methods.get("CoCoOp")(clip, tokenizer)
    state = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    assert set(state) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                          "meta_net.linear2.weight", "meta_net.linear2.bias"}
    model.set_classnames(NAMES[:4])
    model.set_classnames(NAMES[4:])
    assert model.prompt_learner.n_cls == 6
    for k, v in model.prompt_learner.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_meta_net_shape_and_ctx_init():
    clip = tiny_clip()
    model = methods.get("CoCoOp")(clip, tokenizer, ctx_init="a photo of a")
    pl = model.prompt_learner
    assert pl.ctx.shape == (4, 32)
    assert pl.meta_net.linear1.in_features == 32 and pl.meta_net.linear1.out_features == 2
    assert pl.meta_net.linear2.out_features == 32
    words = clip.token_embedding(tokenizer(["a photo of a"]))[0, 1:5]
    assert torch.equal(pl.ctx.detach(), words.detach())  # a copy of the embeddings, no arithmetic
    rand = methods.get("CoOp")(clip, tokenizer, ctx_init=None, n_ctx=8, seed_ctx=0)
    assert rand.prompt_learner.ctx.shape == (8, 32) and rand.prompt_learner.meta_net is None
    assert 0.01 < rand.prompt_learner.ctx.std().item() < 0.03
