"""Procedural painting for the mini world: objects named in words, textures, top-down scenes.

Everything here is a pure function of its arguments and a numpy Generator, so the same seed paints
the same pixels. Images are float32 HxWx3 arrays in [0, 1]; masks are float32 HxW alphas in [0, 1].
The vocabulary (colours, shapes, textures, ...) is the one the captions use, so a CLIP trained on
the captions knows every word a class name is made of.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (215, 35, 35), "orange": (245, 135, 25), "yellow": (240, 215, 30), "green": (40, 160, 55),
    "blue": (35, 80, 215), "purple": (135, 55, 185), "pink": (245, 125, 185), "brown": (125, 75, 35),
    "white": (242, 242, 242), "black": (22, 22, 22), "gray": (130, 130, 130),
}
# colours objects are painted in (white/black/gray are kept for pets, aircraft and texture pairs)
OBJECT_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring", "hexagon", "arrow")
OBJECT_FILLS = ("plain", "striped", "dotted", "chequered")
TEXTURES = ("banded", "blotchy", "chequered", "crosshatched", "dotted", "grid", "polka-dotted",
            "spiralled", "sprinkled", "striped", "zigzagged")
ANIMALS = ("cat", "dog", "rabbit")
COAT_COLOURS = ("black", "white", "orange", "brown", "gray")
AIRCRAFT = ("jet", "glider", "biplane")
AIRCRAFT_COLOURS = ("red", "yellow", "black")
# EuroSAT folder name -> CoOp's class name
LAND_USE = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}
STYLES = ("photo", "sketch", "rendition", "hard")

SS = 2  # supersampling of shape masks (anti-aliased edges)


# ----------------------------------------------------------------------------- basics
def rgb(name: str, rng: np.random.Generator | None = None, jitter: float = 18.0) -> np.ndarray:
    c = np.array(COLOURS[name], dtype=np.float32)
    if rng is not None:
        c = c + rng.uniform(-jitter, jitter, 3) + rng.uniform(-jitter, jitter)
    return np.clip(c / 255.0, 0, 1)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return yy, xx


def smooth_noise(S: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in [0, 1] (a bilinearly upsampled random grid)."""
    small = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def photo_background(S: int, rng: np.random.Generator, clutter: float = 0.3) -> np.ndarray:
    """A muted gradient with soft noise and a few faint gray blobs (the 'other' of every photo)."""
    base = rng.uniform(0.35, 0.8, 3).astype(np.float32)
    base = base.mean() + (base - base.mean()) * 0.35  # desaturate so it never names a colour
    other = np.clip(base + rng.uniform(-0.15, 0.15, 3), 0, 1)
    yy, xx = grid(S)
    t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / S + 1) / 2
    img = base[None, None] * (1 - t[..., None]) + other[None, None] * t[..., None]
    img += (smooth_noise(S, rng, 6)[..., None] - 0.5) * 0.12
    img += rng.normal(0, 0.015, (S, S, 3)).astype(np.float32)
    for _ in range(rng.poisson(clutter * 4)):
        shade = rng.uniform(0.3, 0.8)
        a = blob_mask(S, rng, rng.uniform(0.05, 0.12) * S)
        img = composite(img, np.full(3, shade, np.float32), a * 0.5)
    return np.clip(img, 0, 1)


def composite(img: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    fill = fill if fill.ndim == 3 else fill[None, None]
    return img * (1 - a) + fill * a


def blob_mask(S: int, rng: np.random.Generator, r: float) -> np.ndarray:
    cx, cy = rng.uniform(0, S, 2)
    return _draw(S, lambda d, k: d.ellipse([(cx - r) * k, (cy - r * 0.8) * k, (cx + r) * k, (cy + r * 0.8) * k], fill=255))


def _draw(S: int, paint) -> np.ndarray:
    im = Image.new("L", (S * SS, S * SS), 0)
    paint(ImageDraw.Draw(im), SS)
    return np.asarray(im.resize((S, S), Image.BILINEAR), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------- shapes
def _poly(points, cx, cy, r, angle):
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in points]


def _star(n=5, inner=0.45):
    pts = []
    for i in range(2 * n):
        rad = 1.0 if i % 2 == 0 else inner
        t = math.pi * i / n - math.pi / 2
        pts.append((rad * math.cos(t), rad * math.sin(t)))
    return pts


def _regular(n, phase=-math.pi / 2):
    return [(math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _heart():
    pts = []
    for i in range(40):
        t = 2 * math.pi * i / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17, -y / 17 + 0.1))
    return pts


POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "heart": _heart(),
    "diamond": [(0, -1), (0.65, 0), (0, 1), (-0.65, 0)],
    "hexagon": _regular(6, 0.0),
    "arrow": [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)],
}


def shape_mask(S: int, shape: str, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    """Alpha mask of a named shape centred at (cx, cy) with radius r pixels."""
    def paint(d: ImageDraw.ImageDraw, k: int):
        if shape == "circle":
            d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
        elif shape == "ring":
            d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
            q = r * 0.55
            d.ellipse([(cx - q) * k, (cy - q) * k, (cx + q) * k, (cy + q) * k], fill=0)
        else:
            d.polygon([(x * k, y * k) for x, y in _poly(POLYGONS[shape], cx, cy, r, angle)], fill=255)
    return _draw(S, paint)


def outline(alpha: np.ndarray, width: int = 1) -> np.ndarray:
    im = Image.fromarray(to_uint8(alpha))
    grown = im.filter(ImageFilter.MaxFilter(2 * width + 1))
    shrunk = im.filter(ImageFilter.MinFilter(3))
    return np.clip((np.asarray(grown, np.float32) - np.asarray(shrunk, np.float32)) / 255.0, 0, 1)


# ----------------------------------------------------------------------------- textures
def pattern(texture: str, S: int, c1: np.ndarray, c2: np.ndarray, rng: np.random.Generator,
            scale: float | None = None) -> np.ndarray:
    """A full SxS image of `texture` in colours c1 (ground) and c2 (figure)."""
    k = (S / 64.0) if scale is None else scale
    yy, xx = grid(S)
    ox, oy = rng.uniform(0, 40, 2)
    x, y = xx + ox, yy + oy
    if texture == "plain":
        m = np.zeros((S, S), np.float32)
    elif texture == "striped":
        th = rng.choice([0.0, math.pi / 4, -math.pi / 4, math.pi / 2]) + rng.uniform(-0.1, 0.1)
        p = max(3.0, 6 * k)
        m = (((x * math.cos(th) + y * math.sin(th)) / p) % 1.0 < 0.5).astype(np.float32)
    elif texture == "banded":
        th = math.pi / 2 + rng.uniform(-0.15, 0.15)
        p = max(8.0, 20 * k)
        m = (((x * math.cos(th) + y * math.sin(th)) / p) % 1.0 < 0.5).astype(np.float32)
    elif texture == "chequered":
        p = max(3.0, 8 * k)
        m = ((np.floor(x / p) + np.floor(y / p)) % 2).astype(np.float32)
    elif texture == "dotted":
        p = max(3.0, 6 * k)
        d = np.hypot((x % p) - p / 2, (y % p) - p / 2)
        m = (d < max(0.8, 1.4 * k)).astype(np.float32)
    elif texture == "polka-dotted":
        p = max(8.0, 16 * k)
        shift = (np.floor(y / p) % 2) * p / 2
        d = np.hypot(((x + shift) % p) - p / 2, (y % p) - p / 2)
        m = (d < p * 0.3).astype(np.float32)
    elif texture == "grid":
        p = max(4.0, 9 * k)
        w = max(1.0, 1.6 * k)
        m = (((x % p) < w) | ((y % p) < w)).astype(np.float32)
    elif texture == "crosshatched":
        p = max(3.0, 6 * k)
        w = max(0.8, 1.3 * k)
        m = ((((x + y) % p) < w) | (((x - y) % p) < w)).astype(np.float32)
    elif texture == "zigzagged":
        p = max(6.0, 12 * k)
        amp = p * 0.5
        tri = np.abs(((x / p) % 1.0) - 0.5) * 2 * amp
        m = ((((y + tri) / (p * 0.6)) % 1.0) < 0.45).astype(np.float32)
    elif texture == "spiralled":
        cx, cy = rng.uniform(0.3, 0.7, 2) * S
        ang = np.arctan2(yy - cy, xx - cx) / (2 * math.pi)
        rad = np.hypot(yy - cy, xx - cx) / max(4.0, 8 * k)
        m = (((ang + rad) % 1.0) < 0.5).astype(np.float32)
    elif texture == "sprinkled":
        m = (rng.random((S, S)) < 0.12).astype(np.float32)
        specks = rng.random((S, S, 3)).astype(np.float32)
        img = c1[None, None] * (1 - m[..., None]) + specks * m[..., None]
        return img
    elif texture == "blotchy":
        m = (smooth_noise(S, rng, 5) > 0.5).astype(np.float32)
        m = np.asarray(Image.fromarray(to_uint8(m)).filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255.0
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return c1[None, None] * (1 - m[..., None]) + c2[None, None] * m[..., None]


def figure_colour(c: np.ndarray) -> np.ndarray:
    """The second colour of a patterned object: a much lighter (or, for light colours, darker) tone."""
    return np.clip(c * 0.35, 0, 1) if c.mean() > 0.6 else np.clip(c + (1 - c) * 0.75, 0, 1)


def texture_pair(rng: np.random.Generator) -> tuple[str, str]:
    a, b = rng.choice(len(COLOURS), 2, replace=False)
    names = list(COLOURS)
    return names[a], names[b]


# ----------------------------------------------------------------------------- scenes
def place(S: int, rng: np.random.Generator, size: str | None = None, margin: float = 1.0):
    """(cx, cy, r) of an object: size 'small' or 'large' or random in between."""
    lo, hi = {"small": (0.14, 0.2), "medium": (0.2, 0.3), "large": (0.3, 0.4), None: (0.2, 0.38),
              "any": (0.14, 0.4)}[size]
    r = rng.uniform(lo, hi) * S
    pad = r * margin
    cx = rng.uniform(pad, S - pad) if S - 2 * pad > 0 else S / 2
    cy = rng.uniform(pad, S - pad) if S - 2 * pad > 0 else S / 2
    return cx, cy, r


def paint_object(img: np.ndarray, shape: str, colour: str, fill: str, cx: float, cy: float, r: float,
                 rng: np.random.Generator, angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    S = img.shape[0]
    angle = rng.uniform(-0.2, 0.2) if angle is None else angle
    a = shape_mask(S, shape, cx, cy, r, angle)
    c = rgb(colour, rng)
    tex = pattern(fill, S, c, figure_colour(c), rng)
    shade = 1.0 + 0.15 * ((grid(S)[0] - cy) / max(r, 1))[..., None] * -0.5
    return composite(img, np.clip(tex * shade, 0, 1), a), a


def object_image(S: int, shape: str, colour: str, rng: np.random.Generator, style: str = "photo",
                 fill: str | None = None, size: str | None = None, plain_p: float = 0.55) -> tuple[np.ndarray, dict]:
    """One named object in a given style; returns the image and the attributes it was drawn with."""
    q = (1 - plain_p) / 3
    fill = fill or str(rng.choice(OBJECT_FILLS, p=[plain_p, q, q, q]))
    if style == "hard":
        size = size or "small"
    cx, cy, r = place(S, rng, size)
    info = {"shape": shape, "colour": colour, "fill": fill, "cx": cx / S, "cy": cy / S, "r": r / S}
    if style == "photo":
        img = photo_background(S, rng, clutter=rng.uniform(0.0, 0.6))
        img, _ = paint_object(img, shape, colour, fill, cx, cy, r, rng)
    elif style == "hard":
        # heavy clutter: busy background, desaturated distractors, an occluding bar, low contrast
        img = photo_background(S, rng, clutter=1.5)
        img = composite(img, pattern(str(rng.choice(TEXTURES[:6])), S, img.mean((0, 1)),
                                     img.mean((0, 1)) * 0.7, rng), np.full((S, S), 0.35, np.float32))
        for _ in range(int(rng.integers(1, 3))):
            dshape = str(rng.choice(SHAPES))
            dx, dy, dr = place(S, rng, "small")
            gray = np.full(3, rng.uniform(0.3, 0.7), np.float32)
            img = composite(img, gray, shape_mask(S, dshape, dx, dy, dr, rng.uniform(-0.5, 0.5)) * 0.8)
        img, _ = paint_object(img, shape, colour, fill, cx, cy, r, rng)
        bar = np.zeros((S, S), np.float32)
        x0 = int(rng.uniform(0, S))
        bar[:, max(0, x0 - S // 16): x0 + S // 16] = 0.7
        img = composite(img, np.full(3, rng.uniform(0.2, 0.8), np.float32), bar)
        img = img * 0.75 + img.mean() * 0.25 + rng.normal(0, 0.04, img.shape).astype(np.float32)
    elif style == "sketch":
        # pen outline in the object's colour on paper, a few stray strokes, no fill
        img = np.ones((S, S, 3), np.float32) * rng.uniform(0.88, 1.0)
        a = shape_mask(S, shape, cx, cy, r, rng.uniform(-0.25, 0.25))
        line = outline(a, 1 if S < 64 else int(rng.integers(1, 3)))
        img = composite(img, rgb(colour, rng) * 0.85, line)
        for _ in range(int(rng.integers(1, 4))):
            stroke = _draw(S, lambda d, k: d.line([tuple(rng.uniform(0, S, 2) * k), tuple(rng.uniform(0, S, 2) * k)],
                                                  fill=255, width=k))
            img = composite(img, np.full(3, 0.55, np.float32), stroke * 0.6)
        hatch = pattern("striped", S, np.zeros(3, np.float32), np.ones(3, np.float32), rng)[..., 0]
        img = composite(img, rgb(colour) * 0.9 + 0.1, a * hatch * 0.25)
    elif style == "rendition":
        # cartoon: flat pastel ground, flat bright fill, thick dark outline, posterised, sheared
        img = np.ones((S, S, 3), np.float32) * (0.55 + 0.4 * rng.random(3)).astype(np.float32)
        a = shape_mask(S, shape, cx, cy, r, rng.uniform(-0.35, 0.35))
        a = np.asarray(Image.fromarray(to_uint8(a)).transform(
            (S, S), Image.AFFINE, (1, rng.uniform(-0.25, 0.25), 0, rng.uniform(-0.2, 0.2), 1, 0), Image.BILINEAR),
            np.float32) / 255.0
        img = composite(img, np.clip(np.array(COLOURS[colour], np.float32) / 255 * 1.1, 0, 1), a)
        img = composite(img, np.full(3, 0.08, np.float32), outline(a, 1 if S < 64 else 2))
        img = np.round(img * 4) / 4
    else:
        raise ValueError(f"unknown style {style!r}")
    info["style"] = style
    return np.clip(img, 0, 1), info


def scene_image(S: int, rng: np.random.Generator, n_objects: tuple[int, int] = (2, 5)):
    """A multi-object scene and its per-pixel class mask (0 = other, 1..len(SHAPES) = shapes)."""
    img = photo_background(S, rng, clutter=0.5)
    mask = np.zeros((S, S), np.uint8)
    objects = []
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        shape = str(rng.choice(SHAPES))
        colour = str(rng.choice(OBJECT_COLOURS))
        fill = str(rng.choice(OBJECT_FILLS, p=[0.55, 0.15, 0.15, 0.15]))
        cx, cy, r = place(S, rng, None, margin=0.6)
        r *= 0.8
        img, a = paint_object(img, shape, colour, fill, cx, cy, r, rng)
        mask[a > 0.5] = SHAPES.index(shape) + 1
        objects.append({"shape": shape, "colour": colour, "fill": fill})
    return img, mask, objects


# ADE20K stand-in: "stuff" (textured regions, like wall / floor / grass / sky) + "things" (shapes on top).
# Classes 1..len(ADE_CLASSES) are the stuff; the things are label 0, "other" (ignored under reduce_zero_label,
# as ADE20K's unlabelled pixels): at 64 px no model here learns shape identity within the mini budget (measured
# for scratch, pixel-target and MVP inits, and a small CNN: shape IoU 0-3), so scoring them would only halve
# every mIoU without ordering anything. They still occlude the stuff.
ADE_STUFF = TEXTURES
ADE_THINGS = SHAPES
ADE_CLASSES = tuple(ADE_STUFF)


def stuff_regions(S: int, rng: np.random.Generator, k: int) -> np.ndarray:
    """An SxS map of region ids 0..k-1: Voronoi cells of k random seeds on smoothly warped coordinates
    (wavy borders). Every id owns some pixels."""
    yy, xx = grid(S)
    wy = (smooth_noise(S, rng, 3) - 0.5) * S * 0.35
    wx = (smooth_noise(S, rng, 3) - 0.5) * S * 0.35
    for _ in range(20):
        seeds = rng.uniform(0.1, 0.9, (k, 2)) * S
        d = np.stack([np.hypot(yy + wy - sy, xx + wx - sx) for sy, sx in seeds])
        ids = d.argmin(0)
        if np.bincount(ids.ravel(), minlength=k).min() >= S * S // (6 * k):
            break
    return ids


def stuff_background(S: int, rng: np.random.Generator, regions: tuple[int, int] = (2, 4)):
    """`regions` wavy cells, each a different ADE_STUFF texture in a random colour pair, softly lit.
    Returns the image, its class mask (ADE_CLASSES order, from 1) and the (texture, colours) per cell."""
    k = int(rng.integers(regions[0], regions[1] + 1))
    ids = stuff_regions(S, rng, k)
    textures = [str(t) for t in rng.choice(ADE_STUFF, k, replace=False)]
    img = np.zeros((S, S, 3), np.float32)
    mask = np.zeros((S, S), np.uint8)
    stuff = []
    for j, texture in enumerate(textures):
        c1, c2 = texture_pair(rng)
        tex = pattern(texture, S, rgb(c1, rng), rgb(c2, rng), rng)
        inside = ids == j
        img[inside] = tex[inside]
        mask[inside] = ADE_CLASSES.index(texture) + 1
        stuff.append({"texture": texture, "colours": (c1, c2)})
    img = img * (1 + (smooth_noise(S, rng, 4)[..., None] - 0.5) * 0.2)  # soft lighting
    return img, mask, stuff


def stuff_scene(S: int, rng: np.random.Generator, regions: tuple[int, int] = (2, 4),
                n_objects: tuple[int, int] = (0, 3), size: str = "medium", plain_p: float = 0.7):
    """An ADE20K-like scene: the image partitioned into `regions` wavy cells ("stuff"), each one of
    ADE_STUFF (a texture, all different) in a random pair of colours (so colour never names the class),
    plus `n_objects` shapes ("things", ADE_THINGS) painted on top as in the photos. Returns the image,
    its class mask (1..len(ADE_CLASSES) for the stuff, 0 "other" for the things) and what was painted."""
    img, mask, stuff = stuff_background(S, rng, regions)
    things = []
    q = (1 - plain_p) / 3
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        shape = str(rng.choice(ADE_THINGS))
        colour = str(rng.choice(OBJECT_COLOURS))
        fill = str(rng.choice(OBJECT_FILLS, p=[plain_p, q, q, q]))
        cx, cy, r = place(S, rng, size, margin=0.8)
        img, a = paint_object(img, shape, colour, fill, cx, cy, r, rng)
        mask[a > 0.5] = 0  # other (see ADE_CLASSES)
        things.append({"shape": shape, "colour": colour, "fill": fill})
    img = img + rng.normal(0, 0.015, img.shape).astype(np.float32)
    return np.clip(img, 0, 1), mask, {"stuff": stuff, "things": things}


def texture_image(S: int, texture: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, str]]:
    c1, c2 = texture_pair(rng)
    img = pattern(texture, S, rgb(c1, rng), rgb(c2, rng), rng)
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1), (c1, c2)


def _field(S, rng, base, var, cells=6):
    n = smooth_noise(S, rng, cells)[..., None]
    img = np.array(base, np.float32)[None, None] / 255 + (n - 0.5) * var
    return img + rng.normal(0, 0.02, (S, S, 3)).astype(np.float32)


def land_use_image(S: int, folder: str, rng: np.random.Generator) -> np.ndarray:
    """A top-down 'satellite' tile of one EuroSAT land-use class."""
    yy, xx = grid(S)
    k = S / 64.0
    if folder == "Forest":
        img = _field(S, rng, (30, 80, 35), 0.1)
        for _ in range(int(60 * k * k)):
            cx, cy = rng.uniform(0, S, 2)
            rr = rng.uniform(1.5, 3.5) * k
            a = np.clip(1 - np.hypot(xx - cx, yy - cy) / rr, 0, 1)
            img = composite(img, np.array([0.1, rng.uniform(0.28, 0.42), 0.1], np.float32), a)
    elif folder == "Pasture":
        img = _field(S, rng, (150, 190, 90), 0.06, 3)
    elif folder == "HerbaceousVegetation":
        img = _field(S, rng, (110, 140, 60), 0.35, 10)
        img = img + (smooth_noise(S, rng, 16)[..., None] - 0.5) * np.array([0.25, 0.15, 0.0], np.float32)
    elif folder == "SeaLake":
        img = _field(S, rng, (25, 60, 120), 0.08, 4)
        if rng.random() < 0.5:
            shore = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / S > rng.uniform(0.5, 0.9)
            img[shore] = np.array([0.45, 0.55, 0.3], np.float32)
    elif folder == "River":
        img = _field(S, rng, (95, 130, 65), 0.15)
        amp, ph, w = rng.uniform(0.08, 0.2) * S, rng.uniform(0, 6.28), rng.uniform(3, 5) * k
        centre = S / 2 + rng.uniform(-0.15, 0.15) * S + amp * np.sin(xx / S * 2 * math.pi * rng.uniform(0.7, 1.5) + ph)
        a = np.clip(w - np.abs(yy - centre), 0, 1)
        if rng.random() < 0.5:
            a = a.T
        img = composite(img, np.array([0.15, 0.3, 0.55], np.float32), a)
    elif folder == "Highway":
        img = _field(S, rng, (120, 125, 80), 0.2)
        th = rng.uniform(0, math.pi)
        off = rng.uniform(-0.2, 0.2) * S
        d = (xx - S / 2) * math.sin(th) - (yy - S / 2) * math.cos(th) - off
        img = composite(img, np.array([0.45, 0.45, 0.47], np.float32), np.clip(3.5 * k - np.abs(d), 0, 1))
        along = (xx - S / 2) * math.cos(th) + (yy - S / 2) * math.sin(th)
        dash = (np.abs(d) < 0.6 * k) & ((along / (4 * k)) % 1 < 0.5)
        img[dash] = 0.9
    elif folder == "AnnualCrop":
        img = np.zeros((S, S, 3), np.float32)
        p = rng.uniform(6, 11) * k
        vertical = rng.random() < 0.5
        coord = xx if vertical else yy
        band = np.floor((coord + rng.uniform(0, p)) / p).astype(int)
        palette = np.array([[0.55, 0.7, 0.25], [0.8, 0.7, 0.35], [0.5, 0.38, 0.22], [0.35, 0.55, 0.2]], np.float32)
        pick = rng.integers(0, len(palette), band.max() + 2)
        img = palette[pick[band]] + rng.normal(0, 0.03, (S, S, 3)).astype(np.float32)
        img[(((coord + 0.5) % p) < 0.8)] *= 0.8
    elif folder == "PermanentCrop":
        img = _field(S, rng, (140, 110, 70), 0.1)
        p = rng.uniform(4, 6) * k
        d = np.hypot((xx % p) - p / 2, (yy % (p * 1.4)) - p * 0.7)
        img = composite(img, np.array([0.2, 0.4, 0.15], np.float32), np.clip(1.6 * k - d, 0, 1))
    elif folder == "Residential":
        img = _field(S, rng, (120, 120, 110), 0.08)
        p = rng.uniform(7, 9) * k
        cell_x, cell_y = np.floor(xx / p), np.floor(yy / p)
        inside = ((xx % p) > 1.5 * k) & ((yy % p) > 1.5 * k) & ((xx % p) < p - 1.5 * k) & ((yy % p) < p - 1.5 * k)
        roof = np.array([[0.65, 0.25, 0.18], [0.75, 0.4, 0.2], [0.5, 0.3, 0.25], [0.8, 0.5, 0.35]], np.float32)
        idx = ((cell_x * 7 + cell_y * 13 + rng.integers(0, 4)) % 4).astype(int)
        img[inside] = roof[idx[inside]]
    elif folder == "Industrial":
        img = _field(S, rng, (105, 105, 100), 0.08)
        for _ in range(int(rng.integers(2, 5))):
            w, h = rng.uniform(0.2, 0.45, 2) * S
            x0, y0 = rng.uniform(0, S - w), rng.uniform(0, S - h)
            a = ((xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)).astype(np.float32)
            img = composite(img, np.full(3, rng.uniform(0.72, 0.92), np.float32), a)
    else:
        raise ValueError(f"unknown land use {folder!r}")
    return sentinel_look(np.clip(img, 0, 1), rng)


def sentinel_look(img: np.ndarray, rng: np.random.Generator, factor: int = 4) -> np.ndarray:
    """What a Sentinel-2 tile looks like next to the painted ground truth: 4x coarser pixels (EuroSAT's 10 m
    bands on a 64 px tile), haze and an atmospheric colour cast that change from tile to tile. The classes
    that differ in fine structure (crops, pasture, herbaceous land) become confusable, as in real EuroSAT."""
    S = img.shape[0]
    small = Image.fromarray(to_uint8(img)).resize((max(1, S // factor),) * 2, Image.BOX)
    img = np.asarray(small.resize((S, S), Image.BILINEAR), np.float32) / 255.0
    haze = rng.uniform(0.0, 0.35)
    img = img * (1 - haze) + haze * rng.uniform(0.6, 0.9)
    img = img * rng.uniform(0.75, 1.15) + rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    return np.clip(img + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)


def pet_image(S: int, animal: str, coat: str, rng: np.random.Generator) -> np.ndarray:
    """A pet's head: cats have pointed ears, dogs floppy ones, rabbits long upright ones."""
    img = photo_background(S, rng, clutter=0.2)
    r = rng.uniform(0.2, 0.27) * S
    cx = rng.uniform(0.35, 0.65) * S
    cy = rng.uniform(0.5, 0.62) * S
    c = rgb(coat, rng, 12)
    tilt = rng.uniform(-0.15, 0.15)

    def ears(d: ImageDraw.ImageDraw, k: int):
        for side in (-1, 1):
            if animal == "cat":
                pts = [(cx + side * r * 0.95, cy - r * 0.2), (cx + side * r * 0.75, cy - r * 1.45),
                       (cx + side * r * 0.2, cy - r * 0.8)]
                d.polygon([(x * k, y * k) for x, y in pts], fill=255)
            elif animal == "dog":
                ex, ey = cx + side * r * 1.0, cy + r * 0.05
                d.ellipse([(ex - r * 0.3) * k, (ey - r * 0.8) * k, (ex + r * 0.3) * k, (ey + r * 0.6) * k], fill=255)
            else:  # rabbit
                ex, ey = cx + side * r * 0.4 + side * tilt * r, cy - r * 1.5
                d.ellipse([(ex - r * 0.22) * k, (ey - r * 0.85) * k, (ex + r * 0.22) * k, (ey + r * 0.85) * k], fill=255)
        d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)

    a = _draw(S, ears)
    ear_colour = c * 0.8 if animal == "dog" else c
    img = composite(img, ear_colour, a)
    head = shape_mask(S, "circle", cx, cy, r)
    img = composite(img, c, head)
    eye = np.array([0.05, 0.05, 0.05], np.float32) if coat != "black" else np.array([0.9, 0.8, 0.2], np.float32)
    for side in (-1, 1):
        img = composite(img, eye, shape_mask(S, "circle", cx + side * r * 0.4, cy - r * 0.15, max(1.0, r * 0.14)))
    nose = np.array([0.85, 0.45, 0.5], np.float32) if animal != "dog" else np.array([0.1, 0.1, 0.1], np.float32)
    img = composite(img, nose, shape_mask(S, "triangle", cx, cy + r * 0.3, max(1.0, r * 0.15), math.pi))
    return np.clip(img, 0, 1)


def aircraft_image(S: int, kind: str, colour: str, rng: np.random.Generator) -> np.ndarray:
    """A plane seen from below against the sky: jets have swept wings, gliders long thin ones,
    biplanes two short stacked wings."""
    yy, xx = grid(S)
    sky = np.array([0.55, 0.72, 0.92], np.float32) + rng.uniform(-0.08, 0.08, 3).astype(np.float32)
    img = sky[None, None] * (1 - 0.25 * yy[..., None] / S)
    for _ in range(int(rng.integers(0, 3))):
        img = composite(img, np.full(3, 0.97, np.float32), blob_mask(S, rng, rng.uniform(0.08, 0.18) * S) * 0.8)
    L = rng.uniform(0.36, 0.44) * S  # half length
    cx, cy = rng.uniform(0.4, 0.6, 2) * S
    ang = rng.uniform(-0.5, 0.5)
    if kind == "jet":
        parts = [[(-1, -0.07), (1, -0.07), (1.1, 0), (1, 0.07), (-1, 0.07)],
                 [(0.25, 0), (-0.25, -0.9), (-0.45, -0.9), (-0.1, 0)], [(0.25, 0), (-0.25, 0.9), (-0.45, 0.9), (-0.1, 0)],
                 [(-0.75, 0), (-1.0, -0.35), (-1.05, -0.35), (-0.95, 0)], [(-0.75, 0), (-1.0, 0.35), (-1.05, 0.35), (-0.95, 0)]]
    elif kind == "glider":
        parts = [[(-1, -0.04), (0.9, -0.04), (1.0, 0), (0.9, 0.04), (-1, 0.04)],
                 [(0.25, -1.2), (0.35, -1.2), (0.35, 1.2), (0.25, 1.2)],
                 [(-0.95, -0.25), (-0.85, -0.25), (-0.85, 0.25), (-0.95, 0.25)]]
    else:  # biplane
        parts = [[(-0.9, -0.13), (0.8, -0.13), (0.9, 0), (0.8, 0.13), (-0.9, 0.13)],
                 [(0.3, -0.7), (0.55, -0.7), (0.55, 0.7), (0.3, 0.7)],
                 [(-0.05, -0.6), (0.15, -0.6), (0.15, 0.6), (-0.05, 0.6)],
                 [(-0.8, -0.3), (-0.65, -0.3), (-0.65, 0.3), (-0.8, 0.3)]]

    def paint(d, k):
        for part in parts:
            d.polygon([(x * k, y * k) for x, y in _poly(part, cx, cy, L, ang)], fill=255)

    a = _draw(S, paint)
    img = composite(img, rgb(colour, rng, 10), a)
    return np.clip(img + rng.normal(0, 0.015, img.shape).astype(np.float32), 0, 1)


def face_image(S: int, rng: np.random.Generator) -> np.ndarray:
    """Caltech's Faces_easy stand-in (the loaders must drop it)."""
    img = photo_background(S, rng)
    img = composite(img, np.array([0.95, 0.8, 0.6], np.float32), shape_mask(S, "circle", S / 2, S / 2, S * 0.35))
    for side in (-1, 1):
        img = composite(img, np.zeros(3, np.float32), shape_mask(S, "circle", S / 2 + side * S * 0.12, S * 0.42, S * 0.04))
    return img
