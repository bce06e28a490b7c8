"""The ADE20K heads and loss are BEiT's mmseg 0.11 ones (issue #20 items 3 and 5): UPerHead + auxiliary FCNHead
under mmseg's parameter names and shapes, their forward against a functional reference (tests/references.py), mmcv
1.3.0's init, and mmseg's cross-entropy averaged over all pixels of the batch, ignored ones included."""
import math

import timm
import torch
import torch.nn.functional as F

from numerics import assert_close_fp32
from references import mmseg_decode_loss, mmseg_fcn_head, mmseg_uper_head
from vlpt_lib.models.segmentation import BeitUperNet, FCNHead, UPerHead, seg_loss


def _conv_module(prefix, cin, cout, k):
    """mmcv ConvModule(cin, cout, k, norm_cfg=SyncBN): .conv (bias False, a norm follows) and .bn."""
    return [(prefix + "conv.weight", (cout, cin, k, k)), (prefix + "bn.weight", (cout,)), (prefix + "bn.bias", (cout,))]


def mmseg_head_parameters(c, ch, aux, k):
    """(name, shape) of every parameter of BEiT's decode_head (UPerHead, in_channels [c] * 4, channels ch) and
    auxiliary_head (FCNHead, in_channels c, channels aux, num_convs 1, concat_input False), in mmseg's
    registration order: BaseDecodeHead.__init__ builds conv_seg before the subclass builds its layers
    (decode_head.py l. 81), then uper_head.py l. 27-74: psp_modules (PPM, a ModuleList of
    Sequential(AdaptiveAvgPool2d, ConvModule)), bottleneck, lateral_convs, fpn_convs, fpn_bottleneck;
    fcn_head.py l. 35-58: convs = Sequential(ConvModule)."""
    decode = [("decode_head.conv_seg.weight", (k, ch, 1, 1)), ("decode_head.conv_seg.bias", (k,))]
    for j in range(4):
        decode += _conv_module(f"decode_head.psp_modules.{j}.1.", c, ch, 1)
    decode += _conv_module("decode_head.bottleneck.", c + 4 * ch, ch, 3)
    for i in range(3):
        decode += _conv_module(f"decode_head.lateral_convs.{i}.", c, ch, 1)
    for i in range(3):
        decode += _conv_module(f"decode_head.fpn_convs.{i}.", ch, ch, 3)
    decode += _conv_module("decode_head.fpn_bottleneck.", 4 * ch, ch, 3)
    auxiliary = [("auxiliary_head.conv_seg.weight", (k, aux, 1, 1)), ("auxiliary_head.conv_seg.bias", (k,))]
    auxiliary += _conv_module("auxiliary_head.convs.0.", c, aux, 3)
    return decode + auxiliary


def _named(prefix, module):
    return [(prefix + n, tuple(p.shape)) for n, p in module.named_parameters()]


def test_heads_are_mmseg_uperhead_and_fcnhead_for_beits_config():
    """BEiT upernet_beit_base_12_512 config: in_channels [768] * 4, channels 768, 150 classes, auxiliary 256."""
    with torch.device("meta"):  # shapes only: no memory, no init work
        decode, aux = UPerHead([768] * 4, 768, 150), FCNHead(768, 256, 150)
    got = _named("decode_head.", decode) + _named("auxiliary_head.", aux)
    assert got == mmseg_head_parameters(768, 768, 256, 150)
    bn = 2 * 768  # BatchNorm weight + bias
    uper = (4 * (768 * 768 + bn)            # PPM: 4 x 1x1 conv 768 -> 768 + BN
            + (768 + 4 * 768) * 768 * 9 + bn  # bottleneck 3x3, 3840 -> 768
            + 3 * (768 * 768 + bn)          # lateral 1x1 convs, levels 0..2
            + 3 * (768 * 768 * 9 + bn)      # fpn 3x3 convs, levels 0..2
            + 4 * 768 * 768 * 9 + bn        # fpn_bottleneck 3x3, 3072 -> 768
            + 768 * 150 + 150)              # conv_seg
    fcn = 768 * 256 * 9 + 2 * 256 + 256 * 150 + 150
    assert (uper, fcn) == (67_963_542, 1_808_534)
    assert sum(p.numel() for p in decode.parameters()) == uper
    assert sum(p.numel() for p in aux.parameters()) == fcn
    # (segmentation_models_pytorch's UPerNetDecoder adds 4 LayerNorm2d(768) on the pyramid: 6,144 more)
    assert uper + fcn == 69_772_076
    # the BN buffers too, so that an mmseg checkpoint's head state_dict loads key for key
    params = [n for n, _ in mmseg_head_parameters(768, 768, 256, 150)]
    expected = params + [n.replace(".bn.weight", ".bn." + b) for n in params if n.endswith(".bn.weight")
                         for b in ("running_mean", "running_var", "num_batches_tracked")]
    state = [f"decode_head.{n}" for n in decode.state_dict()] + [f"auxiliary_head.{n}" for n in aux.state_dict()]
    assert sorted(state) == sorted(expected)


def _tiny_model():
    torch.manual_seed(0)
    backbone = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                 depth=4, num_heads=2, num_classes=0)
    return BeitUperNet(backbone, num_classes=5, decoder_channels=16, aux_channels=8)


def test_model_holds_the_heads_under_mmsegs_names():
    """Besides the backbone and BEiT's pyramid, the model's parameters are exactly mmseg's decode_head and
    auxiliary_head (the names LayerDecayOptimizerConstructor puts in its last layer: not 'backbone.*')."""
    named = [(n, tuple(p.shape)) for n, p in _tiny_model().named_parameters()]
    heads = [x for x in named if not x[0].startswith(("backbone.", "fpn1.", "fpn2."))]
    assert heads == mmseg_head_parameters(32, 16, 8, 5)


def _randomise(module, g):
    """Every weight, BN affine and running statistic off its init, at sizes that keep activations O(1)."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_var", "bn.weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim == 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel()))


C, CH, AUX, K = 12, 8, 6, 5
SIZES = (24, 12, 6, 3)  # levels 1/4 .. 1/32; 3 is not a multiple of pool scales 2 and 6 (overlapping windows)


def k_uper(c, ch, top_pixels):
    """float32 rounding along UPerHead's longest chain, one term per operand of each sum: the PPM average over the
    top level, its 1x1 conv (c), BN, the bilinear upsample (4), bottleneck 3x3 (9 (c + 4 ch)), BN, three top-down
    resize + add (5 each), an fpn 3x3 conv (9 ch), BN, resize to level 0 (4), fpn_bottleneck 3x3 (9 x 4 ch), BN,
    conv_seg (ch + 1)."""
    return top_pixels + c + 2 + 4 + 9 * (c + 4 * ch) + 2 + 3 * 5 + 9 * ch + 2 + 4 + 9 * 4 * ch + 2 + ch + 1


K_UPER = k_uper(C, CH, SIZES[-1] ** 2)
K_FCN = 9 * C + 2 + AUX + 1  # 3x3 conv, BN, conv_seg


def test_heads_forward_equals_the_mmseg_reference():
    """Same weights, same input: UPerHead / FCNHead = mmseg's forward written out (tests/references.py). Eval (running
    BN statistics, no dropout) in float32; training (batch statistics, Dropout2d 0.1 on the same random draws) in
    float64, where rounding (eps64, about 5e8 times below eps32) is far inside the same float32 bound even after a
    batch normalisation amplifies it."""
    g = torch.Generator().manual_seed(0)
    decode, aux = UPerHead([C] * 4, CH, K), FCNHead(C, AUX, K)
    _randomise(decode, g)
    _randomise(aux, g)
    feats = [torch.randn(2, C, s, s, generator=g) for s in SIZES]
    decode.eval()
    aux.eval()
    with torch.no_grad():
        assert_close_fp32(decode(feats), mmseg_uper_head(decode.state_dict(), feats), k=K_UPER, msg="UPerHead eval")
        assert_close_fp32(aux(feats[2]), mmseg_fcn_head(aux.state_dict(), feats[2]), k=K_FCN, msg="FCNHead eval")
    decode.double().train()
    aux.double().train()
    feats = [f.double() for f in feats]
    for head, ref, x, k in ((decode, mmseg_uper_head, feats, K_UPER), (aux, mmseg_fcn_head, feats[2], K_FCN)):
        sd = {n: t.clone() for n, t in head.state_dict().items()}
        torch.manual_seed(2)
        got = head(x)
        torch.manual_seed(2)
        expected = ref(sd, x, training=True)
        torch.manual_seed(2)  # the same draw, of the classifier input's (N, C, 1, 1) mask: some channel is dropped
        mask = F.dropout2d(torch.ones(2, head.conv_seg.in_channels, 1, 1, dtype=torch.float64), 0.1, training=True)
        assert (mask == 0).any()
        assert_close_fp32(got, expected, k=k, msg=f"{type(head).__name__} train")



def test_model_feeds_the_heads_as_mmsegs_encoder_decoder():
    """decode_head on all four pyramid levels, auxiliary_head on level 2 (in_index=2) and only in training, both
    resized to the input (bilinear, align_corners=False). Eval in float32; training in float64 (as above)."""
    model = _tiny_model()
    g = torch.Generator().manual_seed(3)
    _randomise(model.decode_head, g)
    _randomise(model.auxiliary_head, g)
    x = torch.randn(2, 3, 32, 32, generator=g)
    model.eval()
    with torch.no_grad():
        out, feats = model(x), model.pyramid(x)
        assert out.keys() == {"out"}
        expected = F.interpolate(mmseg_uper_head(model.decode_head.state_dict(), feats), size=(32, 32),
                                 mode="bilinear", align_corners=False)
    k = k_uper(32, 16, 2 * 2) + 4  # a 32-wide pyramid with a 2 x 2 top level, 16 channels; the final resize
    assert_close_fp32(out["out"], expected, k=k, msg="model eval")
    model.double().train()
    x = x.double()
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)  # the backbone draws the same, then the decode head's dropout, then the auxiliary one
    feats = model.pyramid(x)
    expected = {"out": mmseg_uper_head(model.decode_head.state_dict(), feats, training=True),
                "aux": mmseg_fcn_head(model.auxiliary_head.state_dict(), feats[2], training=True)}
    for key in ("out", "aux"):
        ref = F.interpolate(expected[key], size=(32, 32), mode="bilinear", align_corners=False)
        assert_close_fp32(out[key], ref, k=k, msg=f"model train {key}")


def _assert_normal(w, std, what):
    """w looks like n draws of N(0, std): 5-sigma bounds from the sample size n (a sample mean has sd std / sqrt(n),
    a sample sd has relative sd 1 / sqrt(2 n)), and max|w| > 2 std, which a uniform of that std (max sqrt(3) std,
    PyTorch's default conv init) never reaches and n >= 1000 normal draws miss with probability 0.954^n < 1e-20."""
    w = w.detach().double().flatten()
    n = w.numel()
    assert n >= 1000, what
    assert abs(float(w.mean())) <= 5 * std / math.sqrt(n), what
    assert abs(float(w.std()) / std - 1) <= 5 / math.sqrt(2 * n), (what, float(w.std()), std)
    assert float(w.abs().max()) > 2 * std, what


def test_init_is_mmcvs():
    """mmcv 1.3.0: ConvModule.init_weights (conv_module.py l. 172-191) = kaiming_init(conv, a=0, nonlinearity='relu'),
    whose defaults are mode='fan_out', distribution='normal' (cnn/utils/weight_init.py l. 44-59): std
    sqrt(2 / (out_channels k k)); constant_init(bn, 1, bias=0). mmseg 0.11 BaseDecodeHead.init_weights
    (decode_head.py l. 133-135): normal_init(conv_seg, mean=0, std=0.01), bias 0. Input 64 wide and 16 channels,
    so that fan_out differs from fan_in (by 4 on the 1x1 convs, 8 on the bottleneck)."""
    torch.manual_seed(0)
    decode, aux = UPerHead([64] * 4, 16, 150), FCNHead(64, 16, 150)
    convs = 0
    for prefix, head in (("decode_head", decode), ("auxiliary_head", aux)):
        _assert_normal(head.conv_seg.weight, 0.01, f"{prefix}.conv_seg")
        assert torch.equal(head.conv_seg.bias, torch.zeros(150))
        for name, m in head.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert torch.equal(m.weight, torch.ones(m.num_features)), name
                assert torch.equal(m.bias, torch.zeros(m.num_features)), name
            elif isinstance(m, torch.nn.Conv2d) and m is not head.conv_seg:
                assert m.bias is None, name
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                _assert_normal(m.weight, math.sqrt(2 / fan_out), f"{prefix}.{name}")
                convs += 1
    assert convs == 4 + 1 + 3 + 3 + 1 + 1  # PPM, bottleneck, laterals, fpn convs, fpn_bottleneck; FCN conv


def test_seg_loss_is_mmsegs_mean_over_all_pixels():
    """mmseg 0.11 (avg_non_ignore did not exist yet; later versions default it to False): each head's loss is the
    per-pixel cross-entropy summed over the non-ignored pixels and divided by ALL N H W pixels; total = decode +
    0.4 aux. Here 30 % of the pixels are ignored, so the mean over the valid pixels alone would be 1 / 0.7 times
    larger. Logits coarser than the labels are first resized to them (BaseDecodeHead.losses)."""
    g = torch.Generator().manual_seed(0)
    n, h, w = 2, 8, 10
    target = torch.randint(0, K, (n, h, w), generator=g)
    ignored = torch.randperm(n * h * w, generator=g)[:48]  # 48 of 160 pixels: 30 %
    target.view(-1)[ignored] = 255
    out = {"out": torch.randn(n, K, h, w, generator=g), "aux": torch.randn(n, K, h, w, generator=g)}

    def by_hand(logits):
        return F.cross_entropy(logits, target, ignore_index=255, reduction="none").sum() / (n * h * w)

    # a mean of 160 non-negative terms, each a 5-term log-sum-exp; the decode + 0.4 aux sum
    k = 160 + 2 * K + 2
    assert_close_fp32(seg_loss(out, target), by_hand(out["out"]) + 0.4 * by_hand(out["aux"]), k=k, msg="loss")
    assert_close_fp32(seg_loss({"out": out["out"]}, target), mmseg_decode_loss(out["out"], target), k=k, msg="ref")
    valid_mean = F.cross_entropy(out["out"], target, ignore_index=255)  # the old rule
    assert_close_fp32(seg_loss({"out": out["out"]}, target), 0.7 * valid_mean, k=k, msg="old rule x 0.7")
    coarse = torch.randn(n, K, 4, 5, generator=g)
    assert_close_fp32(seg_loss({"out": coarse}, target), mmseg_decode_loss(coarse, target), k=k, msg="resized")
    assert_close_fp32(seg_loss({"out": coarse}, target), by_hand(F.interpolate(coarse, (h, w), mode="bilinear")),
                      k=k, msg="resized by hand")
