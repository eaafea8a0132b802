"""Synthetic street scenes in the official Cityscapes and CamVid layouts.

``scenes.py`` draws one scene (label IDs and RGB, deterministic in ``(seed, split, index, size)``);
``layouts.py`` writes scenes in the dataset layouts with their list files; ``canvas.py`` is the
drawing surface both rest on. Growing ``num_train`` keeps the earlier scenes.

    from datasets.synthetic import generate
    generate("data/synthetic", num_train=100, num_val=20, size=(512, 256), seed=0)

writes ``data/synthetic/{cityscapes,camvid}/...`` and ``data/synthetic/list/...`` so every
official config runs with ``DATASET.ROOT data/synthetic/``.
"""
from datasets.synthetic.layouts import MARKER, SPLITS, camvid_color_lut, generate, write_samples
from datasets.synthetic.scenes import render_scene, scene

__all__ = ["MARKER", "SPLITS", "camvid_color_lut", "generate", "render_scene", "scene", "write_samples"]
