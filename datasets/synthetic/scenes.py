"""Synthetic street scenes drawn in Cityscapes *label IDs* and rendered to RGB.

Each scene is drawn in label IDs (void IDs such as 0 unlabeled, 1 ego vehicle, 3 out of roi,
4 static and 6 ground included, so the 19-class mapping is exercised) and rendered to RGB with
per-class colours, textures, lane markings, windows, shadows, lighting and noise. Scene ``i`` of
split ``s`` depends only on ``(seed, s, i)`` and the size. Writing the scenes in the dataset
layouts is ``datasets/synthetic/layouts.py``.
"""
import cv2
import numpy as np

from datasets.synthetic.canvas import Canvas, StreetGeometry, jitter
from utils.errors import DatasetError

# Cityscapes label IDs used by the generator.
UNLABELED, EGO, OUT_OF_ROI, STATIC, GROUND = 0, 1, 3, 4, 6
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 32, 33

# Random-stream code of each split: part of the seed of every scene.
SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "samples": 3}

# Texture amplitude per label ID (fine grain, coarse blotches), for one vectorised pass.
_FINE = np.full(256, 6.0, np.float32)
_COARSE = np.full(256, 8.0, np.float32)
for _ids, _fine, _coarse in (((SKY,), 2.0, 10.0), ((ROAD,), 9.0, 10.0), ((SIDEWALK,), 7.0, 8.0),
                             ((BUILDING, WALL), 6.0, 14.0), ((VEGETATION,), 26.0, 30.0),
                             ((TERRAIN,), 18.0, 20.0), ((CAR, TRUCK, BUS), 4.0, 6.0),
                             ((PERSON, RIDER), 6.0, 8.0), ((POLE, SIGN, LIGHT), 3.0, 4.0)):
    _FINE[list(_ids)] = _fine
    _COARSE[list(_ids)] = _coarse


def _sky_and_buildings(canvas, scene, rng):
    h, w = canvas.h, canvas.w
    ys = np.arange(h, dtype=np.float32)[:, None, None] / max(h - 1, 1)
    if rng.random() < 0.7:
        top, bottom = jitter(rng, (60, 120, 200), 25), jitter(rng, (185, 205, 230), 20)
    else:
        top, bottom = jitter(rng, (150, 155, 165), 20), jitter(rng, (205, 205, 210), 15)
    gradient = np.asarray(top, np.float32) + (np.asarray(bottom, np.float32) - top) * ys * 1.6
    canvas.img[:] = np.clip(np.broadcast_to(gradient, (h, w, 3)), 0, 255).astype(np.uint8)
    canvas.lab[:] = SKY
    for _ in range(rng.integers(0, 4)):
        cloud = jitter(rng, (235, 238, 242), 10)
        cx, cy = rng.uniform(0, w), rng.uniform(0, scene.horizon * 0.6)
        for _ in range(rng.integers(2, 5)):
            canvas.ellipse(cx + rng.normal(0, w * 0.03), cy + rng.normal(0, h * 0.01),
                           w * rng.uniform(0.03, 0.08), h * rng.uniform(0.02, 0.05), cloud, SKY)

    x = -rng.uniform(0, w * 0.1)
    while x < w:
        width = w * rng.uniform(0.07, 0.22)
        kind = rng.random()
        if kind < 0.12:  # a gap with a tree line behind
            top = scene.horizon - h * rng.uniform(0.05, 0.15)
            _tree_crown(canvas, rng, x + width / 2, top, width * 0.6, (scene.horizon - top) + h * 0.05)
        elif kind < 0.2:  # a wall in front of the sky
            top = scene.horizon - h * rng.uniform(0.02, 0.08)
            canvas.rect(x, top, x + width, h, jitter(rng, (150, 145, 140), 25), WALL)
        else:
            top = h * rng.uniform(0.02, 0.3)
            color = jitter(rng, [(120, 110, 100), (170, 160, 140), (95, 95, 105), (180, 120, 90),
                                  (200, 190, 170)][rng.integers(0, 5)], 20)
            canvas.rect(x, top, x + width, h, color, BUILDING)
            _windows(canvas, rng, x, top, x + width, scene.horizon)
        x += width


def _windows(canvas, rng, x0, y0, x1, y1):
    """Window grid: building label, glass colour."""
    x0, x1 = max(int(x0), 0), min(int(x1), canvas.w)
    y0, y1 = max(int(y0), 0), min(int(y1), canvas.h)
    if x1 - x0 < 6 or y1 - y0 < 6:
        return
    pitch_x = max(int(rng.uniform(0.025, 0.05) * canvas.w), 4)
    pitch_y = max(int(rng.uniform(0.04, 0.08) * canvas.h), 4)
    fill_x, fill_y = rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.7)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inset = max(pitch_x // 2, 1)
    inside = (xx >= x0 + inset) & (xx < x1 - inset)
    mask = inside & ((xx - x0) % pitch_x < pitch_x * fill_x) & ((yy - y0) % pitch_y < pitch_y * fill_y)
    dark = rng.random() < 0.7
    glass = jitter(rng, (40, 50, 65) if dark else (170, 190, 210), 15)
    region = canvas.img[y0:y1, x0:x1]
    region[mask] = glass


def _tree_crown(canvas, rng, cx, top, radius, trunk_height):
    green = jitter(rng, (60, 110, 40), 25)
    trunk_w = max(radius * 0.15, 1)
    canvas.rect(cx - trunk_w, top + radius, cx + trunk_w, top + radius + trunk_height,
                jitter(rng, (90, 70, 50), 10), VEGETATION)
    for _ in range(rng.integers(3, 7)):
        canvas.circle(cx + rng.normal(0, radius * 0.5), top + radius + rng.normal(0, radius * 0.4),
                      radius * rng.uniform(0.4, 0.8), jitter(rng, green, 15), VEGETATION)


def _ground(canvas, scene, rng):
    """Road, curb, sidewalk and verge as bands of |x - vx| / depth, in one table lookup."""
    h, w = canvas.h, canvas.w
    y_start = min(int(np.floor(scene.horizon)) + 1, h)
    if y_start >= h:
        return
    yy = np.arange(y_start, h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    depth = np.maximum(yy - np.float32(scene.horizon), 1e-3)
    signed = (xx - np.float32(scene.vx)) / depth
    t = np.abs(signed)
    # 0 outside, 1 verge, 2 sidewalk, 3 curb, 4 road; 5 paving joint, 6 road paint.
    code = ((t < scene.c).astype(np.uint8) + (t < scene.b) + (t < scene.a * 1.04) + (t < scene.a))
    scale = np.float32(h) / depth
    joints = (code == 2) & ((np.floor(t * 6) % 2 == 0) ^ (np.floor(scale * 4) % 2 == 0))
    code[joints] = 5
    paint = (code == 4) & (((t > scene.a * 0.9) & (t < scene.a * 0.94))
                           | ((t < scene.a * 0.025) & (np.floor(scale * 6) % 2 == 0)))
    if rng.random() < 0.3:  # zebra crossing
        y0 = (h - scene.horizon) * rng.uniform(0.3, 0.7)
        band = (yy - scene.horizon > y0) & (yy - scene.horizon < y0 * 1.12)
        paint |= (code == 4) & band & (np.floor(signed * 12 / scene.a) % 2 == 0)
    code[paint] = 6
    verge_label = [TERRAIN, TERRAIN, GROUND, SIDEWALK][rng.integers(0, 4)]
    verge_color = {TERRAIN: (110, 150, 70), GROUND: (120, 105, 85), SIDEWALK: (175, 170, 160)}
    paving = jitter(rng, (180, 170, 160), 20)
    paint_color = (240, 240, 235) if rng.random() < 0.8 else (230, 200, 60)
    colors = np.array([(0, 0, 0), jitter(rng, verge_color[verge_label], 15), paving,
                       jitter(rng, (205, 205, 200), 10), jitter(rng, (85, 85, 90), 15),
                       tuple(max(c - 18, 0) for c in paving), paint_color], np.uint8)
    labels = np.array([0, verge_label, SIDEWALK, SIDEWALK, ROAD, SIDEWALK, ROAD], np.uint8)
    ground = code > 0
    lab = canvas.lab[y_start:]
    img = canvas.img[y_start:]
    lab[...] = np.where(ground, labels[code], lab)
    img[...] = np.where(ground[:, :, None], colors[code], img)


def _pole(canvas, scene, rng, y_bottom, side):
    d = scene.depth(y_bottom)
    x = scene.ground_x(rng.uniform(scene.a * 1.1, scene.b * 0.95), y_bottom, side)
    height, width = d * rng.uniform(2.0, 3.2), max(d * 0.03, 1.0)
    grey = jitter(rng, (130, 130, 130), 20)
    canvas.rect(x - width, y_bottom - height, x + width, y_bottom, grey, POLE)
    top = y_bottom - height
    kind = rng.random()
    if kind < 0.45:
        size = d * rng.uniform(0.18, 0.3)
        color = [(220, 30, 30), (30, 80, 200), (230, 200, 20), (240, 240, 240)][rng.integers(0, 4)]
        if rng.random() < 0.5:
            canvas.circle(x, top + size, size, color, SIGN)
        else:
            canvas.rect(x - size, top, x + size, top + 1.6 * size, color, SIGN)
    elif kind < 0.75:
        size = d * rng.uniform(0.08, 0.13)
        canvas.rect(x - size, top, x + size, top + 3.2 * size, (30, 30, 30), LIGHT)
        lit = rng.integers(0, 3)
        for i, color in enumerate(((230, 40, 40), (240, 190, 30), (40, 220, 90))):
            shade = color if i == lit else tuple(c // 4 for c in color)
            canvas.circle(x, top + size * (0.55 + 1.05 * i), size * 0.4, shade, LIGHT)


def _vehicle(canvas, scene, rng, y_bottom):
    d = scene.depth(y_bottom)
    lane = rng.uniform(-0.75, 0.75) * scene.a
    cx = scene.vx + lane * d
    kind = rng.random()
    body = jitter(rng, [(180, 20, 20), (20, 40, 150), (220, 220, 220), (30, 30, 30),
                         (120, 120, 125), (200, 160, 20), (20, 110, 60)][rng.integers(0, 7)], 20)
    glass = jitter(rng, (45, 60, 75), 10)
    if kind < 0.78:
        label, width, height = CAR, d * scene.a * 0.5, d * scene.a * 0.35
        canvas.rect(cx - width / 2, y_bottom - height * 0.55, cx + width / 2, y_bottom - height * 0.1,
                    body, label)
        cabin = [(cx - width * 0.38, y_bottom - height * 0.55), (cx - width * 0.28, y_bottom - height),
                 (cx + width * 0.28, y_bottom - height), (cx + width * 0.38, y_bottom - height * 0.55)]
        canvas.poly(cabin, body, label)
        canvas.rect(cx - width * 0.3, y_bottom - height * 0.92, cx + width * 0.3,
                    y_bottom - height * 0.6, glass, label)
    elif kind < 0.9:
        label, width, height = TRUCK, d * scene.a * 0.6, d * scene.a * 0.75
        canvas.rect(cx - width / 2, y_bottom - height, cx + width / 2, y_bottom - height * 0.12,
                    jitter(rng, (200, 200, 195), 30), label)
        canvas.rect(cx - width * 0.35, y_bottom - height * 0.35, cx + width * 0.35,
                    y_bottom - height * 0.12, body, label)
    else:
        label, width, height = BUS, d * scene.a * 0.65, d * scene.a * 0.85
        canvas.rect(cx - width / 2, y_bottom - height, cx + width / 2, y_bottom - height * 0.1,
                    body, label)
        canvas.rect(cx - width * 0.45, y_bottom - height * 0.9, cx + width * 0.45,
                    y_bottom - height * 0.55, glass, label)
    wheel = max(height * 0.12, 1.0)
    for wx in (cx - width * 0.32, cx + width * 0.32):
        canvas.circle(wx, y_bottom - wheel, wheel, (20, 20, 20), label)
    lamp = max(width * 0.06, 1.0)
    for lx in (cx - width * 0.45, cx + width * 0.45 - lamp):
        canvas.rect(lx, y_bottom - height * 0.45, lx + lamp, y_bottom - height * 0.35,
                    (200, 20, 20), label)


def _person(canvas, scene, rng, y_bottom, x, label=PERSON):
    d = scene.depth(y_bottom)
    height = d * rng.uniform(0.9, 1.2)
    shirt = jitter(rng, [(200, 40, 40), (40, 60, 160), (230, 230, 230), (40, 40, 40),
                          (200, 170, 50)][rng.integers(0, 5)], 25)
    trousers = jitter(rng, [(40, 40, 60), (90, 70, 50), (30, 30, 30)][rng.integers(0, 3)], 15)
    skin = jitter(rng, [(230, 190, 160), (190, 140, 100), (120, 80, 60)][rng.integers(0, 3)], 10)
    leg = max(height * 0.06, 1.0)
    stride = height * rng.uniform(0.0, 0.12)
    canvas.line((x - stride, y_bottom), (x - leg, y_bottom - height * 0.48), trousers, label, leg * 1.6)
    canvas.line((x + stride, y_bottom), (x + leg, y_bottom - height * 0.48), trousers, label, leg * 1.6)
    canvas.ellipse(x, y_bottom - height * 0.64, height * 0.13, height * 0.2, shirt, label)
    canvas.line((x - height * 0.12, y_bottom - height * 0.78), (x - height * 0.17, y_bottom - height * 0.5),
                shirt, label, leg * 1.2)
    canvas.line((x + height * 0.12, y_bottom - height * 0.78), (x + height * 0.17, y_bottom - height * 0.5),
                shirt, label, leg * 1.2)
    canvas.circle(x, y_bottom - height * 0.9, height * 0.09, skin, label)


def _cyclist(canvas, scene, rng, y_bottom):
    d = scene.depth(y_bottom)
    x = scene.vx + rng.choice([-1, 1]) * rng.uniform(0.7, 0.95) * scene.a * d
    radius = d * 0.2
    label = BICYCLE if rng.random() < 0.75 else MOTORCYCLE
    frame = (30, 30, 30) if label == BICYCLE else jitter(rng, (150, 20, 20), 30)
    for wx in (x - radius * 1.3, x + radius * 1.3):
        canvas.circle(wx, y_bottom - radius, radius, (25, 25, 25), label, max(int(radius * 0.25), 1))
    canvas.line((x - radius * 1.3, y_bottom - radius), (x, y_bottom - radius * 2.1), frame, label, radius * 0.2)
    canvas.line((x + radius * 1.3, y_bottom - radius), (x, y_bottom - radius * 2.1), frame, label, radius * 0.2)
    _person(canvas, scene, rng, y_bottom - radius * 1.2, x, RIDER)


def _fence(canvas, scene, rng, side):
    y0 = scene.horizon + (canvas.h - scene.horizon) * rng.uniform(0.15, 0.4)
    y1 = canvas.h * 1.2
    t = scene.b * 0.98
    color = jitter(rng, (160, 140, 120), 25)
    for y in np.linspace(y0, y1, rng.integers(4, 9)):
        d = scene.depth(y)
        x = scene.ground_x(t, y, side)
        canvas.rect(x - max(d * 0.015, 1), y - d * 0.5, x + max(d * 0.015, 1), y, color, FENCE)
    for frac in (0.2, 0.45):
        top = [(scene.ground_x(t, y0, side), y0 - scene.depth(y0) * frac * 2),
               (scene.ground_x(t, y1, side), y1 - scene.depth(y1) * frac * 2)]
        canvas.line(top[0], top[1], color, FENCE, max(scene.depth(y1) * 0.02, 1))


def _objects(canvas, scene, rng):
    """Poles, signs, vegetation, static objects, vehicles and people, far to near."""
    h = canvas.h
    span = h - scene.horizon
    items = []
    for _ in range(rng.integers(2, 6)):
        items.append(("pole", scene.horizon + span * rng.uniform(0.15, 0.9), rng.choice([-1, 1])))
    for _ in range(rng.integers(0, 4)):
        items.append(("tree", scene.horizon + span * rng.uniform(0.1, 0.6), rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 6)):
        items.append(("vehicle", scene.horizon + span * rng.uniform(0.12, 1.1), 0))
    for _ in range(rng.integers(0, 6)):
        items.append(("person", scene.horizon + span * rng.uniform(0.15, 1.0), rng.choice([-1, 1])))
    for _ in range(rng.integers(0, 2)):
        items.append(("cyclist", scene.horizon + span * rng.uniform(0.2, 0.9), 0))
    for _ in range(rng.integers(0, 2)):
        items.append(("static", scene.horizon + span * rng.uniform(0.2, 0.9), rng.choice([-1, 1])))
    if rng.random() < 0.4:
        _fence(canvas, scene, rng, rng.choice([-1, 1]))
    for kind, y, side in sorted(items, key=lambda item: item[1]):
        d = scene.depth(y)
        if kind == "pole":
            _pole(canvas, scene, rng, y, side)
        elif kind == "tree":
            x = scene.ground_x(rng.uniform(scene.b, scene.c * 1.2), y, side)
            radius = d * rng.uniform(0.5, 0.9)
            _tree_crown(canvas, rng, x, y - d * 2.6, radius, d * 2.6 - radius)
        elif kind == "vehicle":
            _vehicle(canvas, scene, rng, y)
        elif kind == "person":
            _person(canvas, scene, rng, y, scene.ground_x(rng.uniform(scene.a * 1.1, scene.b), y, side))
        elif kind == "cyclist":
            _cyclist(canvas, scene, rng, y)
        else:  # bins/boxes: Cityscapes 'static' (ignored in training)
            x = scene.ground_x(rng.uniform(scene.a * 1.15, scene.b), y, side)
            canvas.rect(x - d * 0.15, y - d * 0.4, x + d * 0.15, y, jitter(rng, (60, 90, 60), 30),
                        STATIC)


def _void_regions(canvas, rng):
    h, w = canvas.h, canvas.w
    if rng.random() < 0.3:  # ego-vehicle bonnet
        top = h * rng.uniform(0.9, 0.96)
        points = [(0, h), (0, top + h * 0.03), (w * 0.3, top), (w * 0.7, top), (w, top + h * 0.03), (w, h)]
        canvas.poly(points, jitter(rng, (40, 40, 45), 15), EGO)
    if rng.random() < 0.3:  # rectification border / out of region of interest
        border = max(int(w * 0.01), 1)
        canvas.rect(0, 0, border, h, (0, 0, 0), OUT_OF_ROI)
        canvas.rect(w - border, 0, w, h, (0, 0, 0), OUT_OF_ROI)
    for _ in range(rng.integers(0, 3)):  # unlabeled clutter
        cx, cy = rng.uniform(0, w), rng.uniform(h * 0.4, h)
        canvas.ellipse(cx, cy, w * rng.uniform(0.005, 0.02), h * rng.uniform(0.005, 0.02),
                       jitter(rng, (110, 100, 90), 40), UNLABELED)


def _finish(canvas, scene, rng):
    """Textures by class, a shadow, lighting, colour cast and sensor noise (image only)."""
    h, w = canvas.h, canvas.w
    coarse = cv2.resize(rng.standard_normal((max(h // 16, 2), max(w // 16, 2)), dtype=np.float32),
                        (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(-100, 101, size=(h, w), dtype=np.int16).astype(np.float32)
    sensor = np.float32(rng.uniform(0.02, 0.06))  # grain on every class
    texture = (cv2.LUT(canvas.lab, _FINE) * np.float32(0.017) + sensor) * fine
    texture += cv2.LUT(canvas.lab, _COARSE) * coarse
    gain = np.full((h, w), rng.uniform(0.65, 1.25), np.float32)
    if rng.random() < 0.5:  # a building's shadow across the street
        yy, xx = np.ogrid[0:h, 0:w]
        slope, offset = rng.uniform(-1.5, 1.5), rng.uniform(0, w)
        shadow = ((xx - offset - slope * (yy - scene.horizon)) < 0) & (yy > scene.horizon * 0.8)
        gain[shadow] *= np.float32(rng.uniform(0.55, 0.8))
    cast = rng.uniform(0.9, 1.1, size=3)
    # cv2 arithmetic on 3-channel images: numpy broadcasting over the channel axis is slow.
    img = cv2.add(canvas.img.astype(np.float32), cv2.merge([texture] * 3))
    img = cv2.multiply(img, cv2.merge([gain * np.float32(c) for c in cast]))
    image = np.clip(img, 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.8, 1.25)
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, table)
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    return image


def render_scene(rng, width, height):
    """One scene: (RGB uint8 HxWx3, Cityscapes label IDs uint8 HxW)."""
    if width < 16 or height < 16:
        raise DatasetError(f"synthetic scenes need at least 16x16 pixels, got {width}x{height}")
    canvas = Canvas(height, width)
    scene = StreetGeometry(rng, height, width)
    _sky_and_buildings(canvas, scene, rng)
    _ground(canvas, scene, rng)
    _objects(canvas, scene, rng)
    _void_regions(canvas, rng)
    return _finish(canvas, scene, rng), canvas.lab


def scene(seed, split, index, size):
    """Scene ``index`` of ``split`` for ``seed`` at ``size`` = (width, height)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODE[split], int(index)])
    return render_scene(rng, int(size[0]), int(size[1]))
