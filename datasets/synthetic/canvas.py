"""Drawing surface of the synthetic scenes: an RGB image and its label map painted together,
and the street's perspective (horizon, vanishing point, ground-plane bands)."""
import cv2
import numpy as np


def jitter(rng, color, amount=20):
    shifts = rng.integers(-amount, amount + 1, size=3).tolist()
    return tuple(min(max(int(c) + d, 0), 255) for c, d in zip(color, shifts))


class Canvas:
    """An RGB image and its label-ID map, drawn together."""

    def __init__(self, height, width):
        self.h, self.w = height, width
        self.img = np.zeros((height, width, 3), np.uint8)
        self.lab = np.zeros((height, width), np.uint8)

    def rect(self, x0, y0, x1, y1, color, label):
        x0, x1 = sorted((int(round(x0)), int(round(x1))))
        y0, y1 = sorted((int(round(y0)), int(round(y1))))
        x0, y0 = max(x0, 0), max(y0, 0)
        if x1 <= x0 or y1 <= y0:
            return
        self.img[y0:y1, x0:x1] = color
        self.lab[y0:y1, x0:x1] = label

    def poly(self, points, color, label):
        pts = [np.round(np.asarray(points, np.float64)).astype(np.int32)]
        cv2.fillPoly(self.img, pts, color)
        cv2.fillPoly(self.lab, pts, int(label))

    def circle(self, cx, cy, radius, color, label, thickness=-1):
        center, radius = (int(round(cx)), int(round(cy))), max(int(round(radius)), 1)
        cv2.circle(self.img, center, radius, color, thickness)
        cv2.circle(self.lab, center, radius, int(label), thickness)

    def ellipse(self, cx, cy, ax, ay, color, label):
        center = (int(round(cx)), int(round(cy)))
        axes = (max(int(round(ax)), 1), max(int(round(ay)), 1))
        cv2.ellipse(self.img, center, axes, 0, 0, 360, color, -1)
        cv2.ellipse(self.lab, center, axes, 0, 0, 360, int(label), -1)

    def line(self, p0, p1, color, label, thickness):
        a = (int(round(p0[0])), int(round(p0[1])))
        b = (int(round(p1[0])), int(round(p1[1])))
        thickness = max(int(round(thickness)), 1)
        cv2.line(self.img, a, b, color, thickness)
        cv2.line(self.lab, a, b, int(label), thickness)


class StreetGeometry:
    """Street geometry: horizon, vanishing point and the ground-plane bands."""

    def __init__(self, rng, height, width):
        self.rng = rng
        self.h, self.w = height, width
        self.horizon = height * rng.uniform(0.36, 0.5)
        self.vx = width * rng.uniform(0.35, 0.65)
        # Ground bands by |x - vx| / (y - horizon): road < a <= sidewalk < b <= verge < c.
        self.a = rng.uniform(0.6, 1.1) * width / height
        self.b = self.a * rng.uniform(1.4, 2.0)
        self.c = self.b * rng.uniform(1.05, 1.4)

    def depth(self, y):
        """Distance below the horizon (the perspective scale of an object standing at y)."""
        return max(y - self.horizon, 1.0)

    def ground_x(self, t, y, side):
        return self.vx + side * t * self.depth(y)

