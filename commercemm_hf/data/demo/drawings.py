"""Silhouettes of the 24 demo product types: each draws its shape into a mask and lists details (screens,
lenses, laces...) that `photography.render_product` draws on top. Coordinates are in a unit square; `_Geom` maps
them to pixels with the family's aspect jitter.

Example:
    >>> from PIL import Image, ImageDraw
    >>> mask, details = Image.new("L", (32, 32), 0), []
    >>> anchor = _SHAPES["mug"](_Geom(32, (1.0, 1.0)), ImageDraw.Draw(mask), details)
    >>> mask.getbbox() is not None, len(anchor)
    (True, 2)
"""

from __future__ import annotations

import math

import numpy as np


class _Geom:
    def __init__(self, size: int, aspect: tuple[float, float]):
        self.size, self.ax, self.ay = size, aspect[0], aspect[1]

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return (self.size * (0.5 + (x - 0.5) * self.ax), self.size * (0.5 + (y - 0.5) * self.ay))

    def pts(self, points) -> list[tuple[float, float]]:
        return [self.pt(x, y) for x, y in points]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.pt(x0, y0), *self.pt(x1, y1)]

    def w(self, fraction: float) -> int:
        return max(1, round(self.size * fraction))


def _mug(g, m, details):
    m.rounded_rectangle(g.box(0.2, 0.28, 0.66, 0.84), radius=g.w(0.05), fill=255)
    m.ellipse(g.box(0.2, 0.24, 0.66, 0.32), fill=255)
    m.ellipse(g.box(0.56, 0.38, 0.86, 0.72), outline=255, width=g.w(0.07))
    details.append(("ellipse", g.box(0.23, 0.255, 0.63, 0.305), "shade"))
    return (0.43, 0.58)


def _lamp(g, m, details):
    m.polygon(g.pts([(0.32, 0.14), (0.68, 0.14), (0.82, 0.46), (0.18, 0.46)]), fill=255)
    m.rectangle(g.box(0.47, 0.46, 0.53, 0.8), fill=255)
    m.ellipse(g.box(0.3, 0.76, 0.7, 0.88), fill=255)
    details.append(("rectangle", g.box(0.47, 0.46, 0.53, 0.79), "metal"))
    details.append(("ellipse", g.box(0.42, 0.43, 0.58, 0.5), "light"))
    return (0.5, 0.32)


def _vase(g, m, details):
    ys = np.linspace(0.12, 0.88, 20)
    half = np.where(ys < 0.32, 0.085 + 0.05 * np.clip((0.2 - ys) / 0.08, 0, 1),
                    0.085 + 0.2 * np.sin(np.pi * np.clip((ys - 0.32) / 0.62, 0, 1)) ** 0.8)
    half[-1] = 0.12
    left = [(0.5 - h, y) for h, y in zip(half, ys)]
    right = [(0.5 + h, y) for h, y in zip(half[::-1], ys[::-1])]
    m.polygon(g.pts(left + right), fill=255)
    details.append(("ellipse", g.box(0.4, 0.11, 0.6, 0.15), "dark"))
    return (0.5, 0.64)


def _teapot(g, m, details):
    m.ellipse(g.box(0.24, 0.34, 0.76, 0.84), fill=255)
    m.polygon(g.pts([(0.3, 0.54), (0.12, 0.36), (0.07, 0.38), (0.25, 0.7)]), fill=255)
    m.ellipse(g.box(0.64, 0.42, 0.9, 0.74), outline=255, width=g.w(0.06))
    m.ellipse(g.box(0.35, 0.28, 0.65, 0.41), fill=255)
    m.ellipse(g.box(0.45, 0.21, 0.55, 0.31), fill=255)
    details.append(("line", g.pts([(0.36, 0.36), (0.64, 0.36)]), "shade"))
    return (0.5, 0.62)


def _cushion(g, m, details):
    corners = [(0.17, 0.2), (0.83, 0.2), (0.83, 0.8), (0.17, 0.8)]
    points = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        for t in np.linspace(0, 1, 9)[:-1]:  # each side bows inwards
            bow = 0.05 * math.sin(math.pi * t)
            x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            points.append((x + bow * np.sign(0.5 - x), y) if x0 == x1 else (x, y + bow * np.sign(0.5 - y)))
    m.polygon(g.pts(points), fill=255)
    details.append(("ellipse", g.box(0.47, 0.47, 0.53, 0.53), "shade"))
    return (0.7, 0.68)


def _clock(g, m, details):
    m.ellipse(g.box(0.14, 0.14, 0.86, 0.86), fill=255)
    details.append(("ring", g.box(0.14, 0.14, 0.86, 0.86), "shade", g.w(0.04)))
    for hour in range(12):
        angle = hour * math.pi / 6
        c, s = math.cos(angle), math.sin(angle)
        details.append(("line", g.pts([(0.5 + 0.28 * c, 0.5 + 0.28 * s), (0.5 + 0.31 * c, 0.5 + 0.31 * s)]), "dark"))
    details.append(("line", g.pts([(0.5, 0.5), (0.5, 0.26)]), "dark", g.w(0.025)))
    details.append(("line", g.pts([(0.5, 0.5), (0.67, 0.46)]), "dark", g.w(0.03)))
    return (0.5, 0.7)


def _tshirt(g, m, details):
    m.polygon(g.pts([(0.36, 0.16), (0.44, 0.2), (0.56, 0.2), (0.64, 0.16), (0.88, 0.3), (0.8, 0.45), (0.71, 0.4),
                     (0.71, 0.86), (0.29, 0.86), (0.29, 0.4), (0.2, 0.45), (0.12, 0.3)]), fill=255)
    details.append(("arc", g.box(0.41, 0.1, 0.59, 0.26), "shade", g.w(0.025)))
    return (0.38, 0.37)


def _backpack(g, m, details):
    m.rounded_rectangle(g.box(0.24, 0.22, 0.76, 0.88), radius=g.w(0.1), fill=255)
    m.ellipse(g.box(0.4, 0.12, 0.6, 0.3), outline=255, width=g.w(0.04))
    details.append(("rounded", g.box(0.31, 0.55, 0.69, 0.83), "shade", g.w(0.02)))
    details.append(("line", g.pts([(0.3, 0.37), (0.7, 0.37)]), "shade", g.w(0.02)))
    return (0.5, 0.69)


def _shoe(g, m, details):
    m.polygon(g.pts([(0.1, 0.6), (0.13, 0.44), (0.3, 0.42), (0.44, 0.28), (0.58, 0.28), (0.62, 0.4), (0.8, 0.48),
                     (0.9, 0.58), (0.9, 0.7), (0.1, 0.7)]), fill=255)
    m.rectangle(g.box(0.09, 0.66, 0.91, 0.76), fill=255)
    details.append(("rectangle", g.box(0.09, 0.67, 0.91, 0.76), "light"))
    for offset in (0.0, 0.05, 0.1):
        details.append(("line", g.pts([(0.46 + offset, 0.34 + offset * 0.6), (0.54 + offset, 0.4 + offset * 0.6)]),
                        "dark", g.w(0.015)))
    return (0.72, 0.58)


def _handbag(g, m, details):
    m.ellipse(g.box(0.33, 0.16, 0.67, 0.6), outline=255, width=g.w(0.05))
    m.polygon(g.pts([(0.26, 0.4), (0.74, 0.4), (0.85, 0.84), (0.15, 0.84)]), fill=255)
    details.append(("outline", g.pts([(0.26, 0.4), (0.74, 0.4), (0.7, 0.56), (0.3, 0.56)]), "shade", g.w(0.015)))
    details.append(("rectangle", g.box(0.47, 0.53, 0.53, 0.59), "metal"))
    return (0.5, 0.71)


def _hat(g, m, details):
    m.ellipse(g.box(0.08, 0.56, 0.92, 0.76), fill=255)
    m.polygon(g.pts([(0.27, 0.64), (0.31, 0.3), (0.44, 0.25), (0.5, 0.3), (0.56, 0.25), (0.69, 0.3), (0.73, 0.64)]),
              fill=255)
    details.append(("polygon", g.pts([(0.29, 0.52), (0.71, 0.52), (0.72, 0.6), (0.28, 0.6)]), "dark"))
    return (0.6, 0.41)


def _dress(g, m, details):
    m.polygon(g.pts([(0.37, 0.1), (0.42, 0.1), (0.45, 0.2), (0.55, 0.2), (0.58, 0.1), (0.63, 0.1), (0.65, 0.3),
                     (0.61, 0.44), (0.82, 0.9), (0.18, 0.9), (0.39, 0.44), (0.35, 0.3)]), fill=255)
    details.append(("line", g.pts([(0.39, 0.44), (0.61, 0.44)]), "shade", g.w(0.02)))
    return (0.5, 0.72)


def _smartphone(g, m, details):
    m.rounded_rectangle(g.box(0.3, 0.08, 0.7, 0.92), radius=g.w(0.06), fill=255)
    details.append(("rounded_fill", g.box(0.34, 0.13, 0.5, 0.31), "dark", g.w(0.03)))
    details.append(("ellipse", g.box(0.36, 0.15, 0.43, 0.22), "metal"))
    details.append(("ellipse", g.box(0.41, 0.22, 0.48, 0.29), "metal"))
    return (0.5, 0.63)


def _laptop(g, m, details):
    m.rounded_rectangle(g.box(0.15, 0.14, 0.85, 0.64), radius=g.w(0.02), fill=255)
    m.polygon(g.pts([(0.11, 0.64), (0.89, 0.64), (0.95, 0.73), (0.05, 0.73)]), fill=255)
    details.append(("polygon", g.pts([(0.11, 0.645), (0.89, 0.645), (0.95, 0.73), (0.05, 0.73)]), "metal"))
    details.append(("line", g.pts([(0.15, 0.64), (0.85, 0.64)]), "dark", g.w(0.015)))
    return (0.5, 0.39)


def _headphones(g, m, details):
    m.arc(g.box(0.2, 0.12, 0.8, 0.8), 180, 360, fill=255, width=g.w(0.07))
    m.rounded_rectangle(g.box(0.13, 0.44, 0.32, 0.8), radius=g.w(0.06), fill=255)
    m.rounded_rectangle(g.box(0.68, 0.44, 0.87, 0.8), radius=g.w(0.06), fill=255)
    m.rectangle(g.box(0.17, 0.38, 0.23, 0.46), fill=255)
    m.rectangle(g.box(0.77, 0.38, 0.83, 0.46), fill=255)
    details.append(("rounded_fill", g.box(0.28, 0.48, 0.33, 0.76), "dark", g.w(0.02)))
    details.append(("rounded_fill", g.box(0.67, 0.48, 0.72, 0.76), "dark", g.w(0.02)))
    return (0.225, 0.62)


def _speaker(g, m, details):
    m.rounded_rectangle(g.box(0.28, 0.1, 0.72, 0.9), radius=g.w(0.05), fill=255)
    details.append(("ellipse", g.box(0.34, 0.52, 0.66, 0.84), "dark"))
    details.append(("ellipse", g.box(0.44, 0.62, 0.56, 0.74), "metal"))
    details.append(("ellipse", g.box(0.43, 0.17, 0.57, 0.31), "dark"))
    return (0.5, 0.415)


def _smartwatch(g, m, details):
    m.rectangle(g.box(0.39, 0.06, 0.61, 0.94), fill=255)
    m.rounded_rectangle(g.box(0.29, 0.3, 0.71, 0.66), radius=g.w(0.06), fill=255)
    m.rectangle(g.box(0.7, 0.43, 0.75, 0.53), fill=255)
    details.append(("rounded_fill", g.box(0.33, 0.34, 0.67, 0.62), "dark", g.w(0.04)))
    details.append(("line", g.pts([(0.42, 0.48), (0.58, 0.48)]), "light", g.w(0.02)))
    return (0.5, 0.81)


def _camera(g, m, details):
    m.rounded_rectangle(g.box(0.12, 0.32, 0.88, 0.8), radius=g.w(0.04), fill=255)
    m.polygon(g.pts([(0.37, 0.33), (0.42, 0.21), (0.58, 0.21), (0.63, 0.33)]), fill=255)
    m.rectangle(g.box(0.7, 0.26, 0.8, 0.33), fill=255)
    details.append(("ellipse", g.box(0.34, 0.37, 0.66, 0.75), "dark"))
    details.append(("ellipse", g.box(0.41, 0.46, 0.59, 0.66), "metal"))
    details.append(("rectangle", g.box(0.7, 0.26, 0.8, 0.3), "dark"))
    return (0.77, 0.43)


def _water_bottle(g, m, details):
    m.rounded_rectangle(g.box(0.35, 0.27, 0.65, 0.9), radius=g.w(0.06), fill=255)
    m.polygon(g.pts([(0.35, 0.31), (0.43, 0.18), (0.57, 0.18), (0.65, 0.31)]), fill=255)
    m.rectangle(g.box(0.42, 0.08, 0.58, 0.19), fill=255)
    details.append(("rectangle", g.box(0.42, 0.08, 0.58, 0.19), "dark"))
    return (0.5, 0.6)


def _ball(g, m, details):
    m.ellipse(g.box(0.15, 0.15, 0.85, 0.85), fill=255)
    details.append(("arc", g.box(0.3, 0.15, 0.7, 0.85), "shade", g.w(0.015), 270, 90))
    details.append(("line", g.pts([(0.16, 0.5), (0.84, 0.5)]), "shade", g.w(0.015)))
    return (0.34, 0.66)


def _helmet(g, m, details):
    m.pieslice(g.box(0.14, 0.22, 0.86, 1.02), 180, 360, fill=255)
    m.polygon(g.pts([(0.09, 0.61), (0.91, 0.61), (0.85, 0.7), (0.15, 0.7)]), fill=255)
    details.append(("polygon", g.pts([(0.09, 0.62), (0.91, 0.62), (0.85, 0.7), (0.15, 0.7)]), "dark"))
    for x in (0.3, 0.62):
        details.append(("rounded_fill", g.box(x, 0.33, x + 0.08, 0.44), "dark", g.w(0.02)))
    return (0.5, 0.51)


def _tent(g, m, details):
    m.polygon(g.pts([(0.5, 0.14), (0.92, 0.8), (0.08, 0.8)]), fill=255)
    details.append(("polygon", g.pts([(0.5, 0.4), (0.63, 0.8), (0.37, 0.8)]), "dark"))
    details.append(("line", g.pts([(0.5, 0.14), (0.5, 0.4)]), "shade", g.w(0.015)))
    return (0.72, 0.69)


def _skateboard(g, m, details):
    for x in (0.2, 0.72):
        for y in (0.33, 0.59):
            m.rounded_rectangle(g.box(x, y, x + 0.08, y + 0.08), radius=g.w(0.02), fill=255)
            details.append(("rounded_fill", g.box(x, y, x + 0.08, y + 0.08), "light", g.w(0.02)))
    m.rounded_rectangle(g.box(0.07, 0.39, 0.93, 0.61), radius=g.w(0.11), fill=255)
    return (0.5, 0.5)


def _dumbbell(g, m, details):
    m.rectangle(g.box(0.2, 0.465, 0.8, 0.535), fill=255)
    details.append(("rectangle", g.box(0.2, 0.465, 0.8, 0.535), "metal"))
    for x0, x1 in ((0.1, 0.27), (0.73, 0.9)):
        m.rounded_rectangle(g.box(x0, 0.26, x1, 0.74), radius=g.w(0.03), fill=255)
    for x0, x1 in ((0.27, 0.33), (0.67, 0.73)):
        m.rounded_rectangle(g.box(x0, 0.33, x1, 0.67), radius=g.w(0.02), fill=255)
    return (0.185, 0.5)


_SHAPES = {
    "mug": _mug, "lamp": _lamp, "vase": _vase, "teapot": _teapot, "cushion": _cushion, "clock": _clock,
    "t-shirt": _tshirt, "backpack": _backpack, "shoe": _shoe, "handbag": _handbag, "hat": _hat, "dress": _dress,
    "smartphone": _smartphone, "laptop": _laptop, "headphones": _headphones, "speaker": _speaker,
    "smartwatch": _smartwatch, "camera": _camera, "water bottle": _water_bottle, "ball": _ball, "helmet": _helmet,
    "tent": _tent, "skateboard": _skateboard, "dumbbell": _dumbbell,
}

