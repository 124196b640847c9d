"""Drawing and photographing demo products: materials and patterns as texture, the product sprite
(`render_product`), studio shots, other views (angle, crop, background, lighting) and tagged posts (the product
small in a cluttered scene with fragments of other products), encoded as PNG bytes.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .drawings import _SHAPES, _Geom
from .vocabulary import _BACKGROUNDS, _DARK, _LIGHT, _METAL, BRANDS, COLOURS, DemoProductSpec


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int | tuple[int, int]) -> np.ndarray:
    """Values in about [0, 1] varying smoothly over `cells` cells (bicubic upsampling of uniform noise)."""
    rows, cols = (cells, cells) if isinstance(cells, int) else cells
    small = PILImage.fromarray(rng.random((rows, cols), dtype=np.float32))
    return np.asarray(small.resize((size, size), PILImage.BICUBIC), dtype=np.float32)


def _pattern(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Accent share per pixel (0 = main colour, 1 = accent colour)."""
    x, y = _grid(size)
    if name == "solid":
        return np.zeros((size, size), np.float32)
    if name == "camouflage":
        noise = _smooth_noise(rng, size, int(rng.integers(5, 8)))
        return (noise > 0.58).astype(np.float32) + 0.5 * (noise < 0.38)
    period = float(rng.uniform(0.07, 0.12))
    ox, oy = rng.random(2)
    if name == "striped":
        direction = int(rng.integers(3))
        t = (y, x, (x + y) * 0.7071)[direction]
        return (((t / period + ox) % 1.0) < rng.uniform(0.35, 0.55)).astype(np.float32)
    if name == "dotted":
        row = np.floor(y / period + oy)
        u = ((x / period + ox + 0.5 * (row % 2)) % 1.0) - 0.5
        v = ((y / period + oy) % 1.0) - 0.5
        return (u * u + v * v < rng.uniform(0.22, 0.32) ** 2).astype(np.float32)
    if name == "checked":
        return ((np.floor(x / period + ox) + np.floor(y / period + oy)) % 2).astype(np.float32)
    if name == "zigzag":
        tri = np.abs(((x / (period * 1.4) + ox) % 1.0) - 0.5) * 2.0
        return ((((y + 0.6 * period * tri) / period + oy) % 1.0) < 0.5).astype(np.float32)
    raise ValueError(f"Unknown pattern {name!r}.")


def _material(name: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(multiplicative shading, additive sheen towards white, desaturation) of a material."""
    x, y = _grid(size)
    shade = np.ones((size, size), np.float32)
    sheen = np.zeros((size, size), np.float32)
    desaturate = 0.0
    hx, hy = rng.uniform(0.28, 0.42), rng.uniform(0.22, 0.36)
    spot = np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.004)
    if name == "leather":  # pebbled grain, a soft sheen
        shade = 0.72 + 0.32 * _smooth_noise(rng, size, size // 4)
        sheen = 0.14 * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.03)
    elif name == "metal":  # brushed streaks, bright vertical reflections
        streaks = _smooth_noise(rng, size, (size // 2, 2))
        shade = 0.9 + 0.16 * streaks
        sheen = 0.45 * np.exp(-(((x - hx) / 0.06) ** 2)) + 0.25 * np.exp(-(((x - 0.72) / 0.04) ** 2))
        desaturate = 0.3
    elif name == "wood":  # wavy grain lines
        warp = _smooth_noise(rng, size, 4)
        shade = 0.7 + 0.32 * np.sin(np.pi * (y * rng.uniform(9, 13) + 1.5 * warp)) ** 2
    elif name == "plastic":
        sheen = 0.55 * spot
    elif name == "cotton":  # a fine weave
        step = max(2, size // 48)
        weave = (np.floor(x * size / step) + np.floor(y * size / step)) % 2
        shade = 0.86 + 0.1 * weave + 0.06 * _smooth_noise(rng, size, size // 2)
    elif name == "wool":  # knitted ribs
        ribs = np.abs(np.sin(np.pi * x * size / max(4, size // 20)))
        shade = 0.7 + 0.3 * ribs + 0.08 * _smooth_noise(rng, size, size // 4)
    elif name == "ceramic":
        sheen = 0.18 * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.04) + 0.35 * spot
    elif name == "glass":
        sheen = 0.35 + 0.5 * np.exp(-(((x - hx) / 0.025) ** 2))
    else:
        raise ValueError(f"Unknown material {name!r}.")
    return shade.astype(np.float32), sheen.astype(np.float32), desaturate


def _accent_rgb(spec: DemoProductSpec) -> np.ndarray:
    main = np.array(COLOURS[spec.colour][0], np.float32)
    if spec.accent == "white":
        return np.array((245, 245, 240), np.float32)
    if spec.accent == "black":
        return np.array((22, 22, 24), np.float32)
    if spec.accent == "shade":
        return main * 0.5
    return main + (255 - main) * 0.6


def _detail_rgb(key: str, main: np.ndarray) -> tuple[int, int, int]:
    if key == "dark":
        return _DARK
    if key == "light":
        return _LIGHT
    if key == "metal":
        return _METAL
    shaded = main * 0.55 if main.mean() > 60 else main + (255 - main) * 0.35
    return tuple(int(v) for v in shaded)


def _draw_details(draw: ImageDraw.ImageDraw, details: list, main: np.ndarray, size: int) -> None:
    for kind, coords, colour, *extra in details:
        fill = _detail_rgb(colour, main)
        if kind == "ellipse":
            draw.ellipse(coords, fill=fill)
        elif kind == "rectangle":
            draw.rectangle(coords, fill=fill)
        elif kind == "polygon":
            draw.polygon(coords, fill=fill)
        elif kind == "outline":
            draw.polygon(coords, outline=fill, width=extra[0])
        elif kind == "line":
            draw.line(coords, fill=fill, width=extra[0] if extra else max(1, size // 90))
        elif kind == "ring":
            draw.ellipse(coords, outline=fill, width=extra[0])
        elif kind == "rounded":
            draw.rounded_rectangle(coords, radius=extra[0], outline=fill, width=extra[0])
        elif kind == "rounded_fill":
            draw.rounded_rectangle(coords, radius=extra[0], fill=fill)
        elif kind == "arc":
            start, end = extra[1:3] if len(extra) > 1 else (180, 360)
            draw.arc(coords, start, end, fill=fill, width=extra[0])


def _draw_badge(draw: ImageDraw.ImageDraw, brand: str, centre: tuple[float, float], radius: float) -> None:
    letter, shape, black = BRANDS[brand]
    badge, ink = ((20, 20, 22), (250, 250, 250)) if black else ((250, 250, 250), (20, 20, 22))
    cx, cy = centre
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=badge, outline=ink)
    else:
        sides, rotation = {"square": (4, 45), "diamond": (4, 0), "hexagon": (6, 0), "triangle": (3, 0)}[shape]
        scale = 1.35 if shape == "triangle" else 1.15
        draw.regular_polygon((cx, cy + (radius * 0.3 if shape == "triangle" else 0), radius * scale), sides,
                             rotation=rotation, fill=badge, outline=ink)
    font_size = max(6, round(radius * (1.2 if shape != "triangle" else 1.0)))
    draw.text((cx, cy + (radius * 0.25 if shape == "triangle" else 0)), letter, font=_font(font_size), fill=ink,
              anchor="mm")


def render_product(spec: DemoProductSpec, size: int, seed: int) -> PILImage.Image:
    """The product alone as an RGBA sprite of `size` x `size` pixels (transparent around the silhouette).

    Its look (pattern phase, texture noise) comes from `(seed, spec.index)` only, so a product drawn as a fragment
    in another product's post looks like itself.

    Example:
        >>> spec = DemoProductSpec(0, "mug", "red", "striped", "ceramic", "acme", "white", (1.0, 1.0), 0)
        >>> render_product(spec, 64, seed=0).mode
        'RGBA'
    """
    rng = np.random.default_rng([seed, 1, spec.index])
    geom = _Geom(size, spec.aspect)
    mask = PILImage.new("L", (size, size), 0)
    details: list = []
    anchor = _SHAPES[spec.kind](geom, ImageDraw.Draw(mask), details)

    main = np.array(COLOURS[spec.colour][0], np.float32)
    share = _pattern(spec.pattern, rng, size)[..., None]
    rgb = main * (1.0 - share) + _accent_rgb(spec) * share
    shade, sheen, desaturate = _material(spec.material, rng, size)
    x, y = _grid(size)
    shade = shade * (1.0 + 0.12 * (0.5 - x) + 0.1 * (0.5 - y))
    if desaturate:
        rgb = rgb * (1 - desaturate) + rgb.mean(axis=-1, keepdims=True) * desaturate
    rgb = rgb * shade[..., None]
    rgb = rgb + (255.0 - rgb) * np.clip(sheen, 0, 1)[..., None]
    inside = np.asarray(mask) > 0
    core = inside.copy()  # pixels at least 2 px inside the silhouette; the rest of it is the darker outline
    core[2:] &= inside[:-2]
    core[:-2] &= inside[2:]
    core[:, 2:] &= inside[:, :-2]
    core[:, :-2] &= inside[:, 2:]
    rgb[inside & ~core] *= 0.55
    image = PILImage.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    _draw_details(draw, details, main, size)
    _draw_badge(draw, spec.brand, geom.pt(*anchor), size * 0.065)
    if spec.material == "glass":
        mask = mask.point(lambda value: value * 82 // 100)
    image.putalpha(mask)
    return image


def _transform(sprite: PILImage.Image, scale: float, squash: float = 1.0, angle: float = 0.0) -> PILImage.Image:
    width, height = sprite.size
    resized = sprite.resize((max(1, round(width * scale * squash)), max(1, round(height * scale))),
                            PILImage.BILINEAR)
    return resized.rotate(angle, resample=PILImage.BILINEAR, expand=True) if angle else resized


def _paste_centred(canvas: PILImage.Image, sprite: PILImage.Image, cx: float, cy: float) -> None:
    canvas.paste(sprite, (round(cx - sprite.width / 2), round(cy - sprite.height / 2)), sprite)


def _light(image: PILImage.Image, rng: np.random.Generator, strength: float) -> PILImage.Image:
    """Global lighting change: brightness, a colour cast and a soft gradient across the picture."""
    size = image.width
    x, y = _grid(size)
    direction = rng.uniform(-1, 1, 2)
    gain = rng.uniform(1 - 0.3 * strength, 1 + 0.25 * strength) * (1 + 0.2 * strength * (direction[0] * (x - 0.5)
                                                                                        + direction[1] * (y - 0.5)))
    tint = 1 + rng.uniform(-0.08, 0.08, 3) * strength
    out = np.asarray(image, np.float32) * gain[..., None] * tint
    return PILImage.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def _encode(image: PILImage.Image, size: int, rng: np.random.Generator | None = None,
            lighting: float = 0.0) -> bytes:
    """Reduce a working-resolution picture to `size` px, optionally relight it, and encode it as PNG."""
    if image.width != size:
        factor = image.width // size
        image = image.reduce(factor) if factor * size == image.width else image.resize((size, size), PILImage.BOX)
    if lighting:
        image = _light(image, rng, lighting)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _studio_shot(sprite: PILImage.Image) -> PILImage.Image:
    canvas = PILImage.new("RGB", sprite.size, (246, 246, 246))
    _paste_centred(canvas, sprite, sprite.width / 2, sprite.height / 2)
    return canvas


def _other_view(sprite: PILImage.Image, rng: np.random.Generator) -> PILImage.Image:
    size = sprite.width
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    canvas = PILImage.new("RGB", (size, size), background)
    zoom = rng.uniform(1.15, 1.6) if rng.random() < 0.3 else rng.uniform(0.55, 1.0)  # a crop or a smaller shot
    squash = rng.uniform(0.6, 0.92) if rng.random() < 0.5 else 1.0  # seen from another angle
    angle = rng.uniform(-35, 35) if rng.random() < 0.7 else 0.0
    moved = _transform(sprite, zoom, squash, angle)
    shift = rng.uniform(-0.15, 0.15, 2) * size
    _paste_centred(canvas, moved, size / 2 + shift[0], size / 2 + shift[1])
    return canvas


def _random_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, scale: float) -> None:
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    cx, cy = rng.uniform(0, size, 2)
    radius = size * rng.uniform(0.04, scale)
    kind = int(rng.integers(3))
    if kind == 0:
        draw.ellipse([cx - radius, cy - radius * rng.uniform(0.4, 1), cx + radius, cy + radius], fill=colour)
    elif kind == 1:
        draw.rectangle([cx - radius, cy - radius * rng.uniform(0.3, 1), cx + radius * rng.uniform(0.3, 1),
                        cy + radius], fill=colour)
    else:
        draw.regular_polygon((cx, cy, radius), int(rng.integers(3, 7)), rotation=float(rng.uniform(0, 90)),
                             fill=colour)


def _tagged_post(sprite: PILImage.Image, rng: np.random.Generator, others: list[PILImage.Image]) -> PILImage.Image:
    size = sprite.width
    x, y = _grid(size)
    wall, floor = rng.integers(60, 240, (2, 3)).astype(np.float32)
    horizon = rng.uniform(0.45, 0.75)
    texture = 0.9 + 0.2 * _smooth_noise(rng, size, 6)
    scene = np.where((y < horizon)[..., None], wall, floor) * texture[..., None]
    canvas = PILImage.fromarray(np.clip(scene, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(5, 11))):
        _random_shape(draw, rng, size, 0.22)
    for other in others:  # fragments of other products, partly outside the picture
        fragment = _transform(other, size / other.width * rng.uniform(0.6, 1.0), angle=float(rng.uniform(-40, 40)))
        side = rng.integers(4)
        edge_position = rng.uniform(0.1, 0.9) * size
        offset = rng.uniform(-0.05, 0.15) * size
        cx, cy = [(offset, edge_position), (size - offset, edge_position), (edge_position, offset),
                  (edge_position, size - offset)][side]
        _paste_centred(canvas, fragment, cx, cy)
    product = _transform(sprite, rng.uniform(0.38, 0.58), angle=float(rng.uniform(-20, 20)))
    cx, cy = rng.uniform(0.32, 0.68, 2) * size
    _paste_centred(canvas, product, cx, cy)
    if rng.random() < 0.4:  # something small in front of the product
        _random_shape(draw, rng, size, 0.08)
    return canvas
