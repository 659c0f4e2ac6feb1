"""Soft tissues of the phantom: muscles, fat planes, pelvic organs, bowel, vessels, discs, tumour.

Shapes live in the pelvis frame of ``skeleton`` (they move and scale with the pelvis) and are
returned as painting layers, back to front: a later layer covers an earlier one where it lies.
The body outline and the abdominal cavity depend on the skeleton's extent and are made in
``phantom``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from abmseg.synth.params import Organs
from abmseg.synth.sdf import (
    Shape,
    capsule,
    chain,
    disc,
    ellipsoid,
    intersect,
    mirrored_x,
    rotation,
    smooth_union,
    union,
)
from abmseg.synth.skeleton import VERTEBRAE, PelvisShape, place_in_pelvis, vertebra_centres


class Tissue(IntEnum):
    """Dominant tissue of a voxel (the layer covering at least half of it)."""

    AIR = 0
    BED = 1
    FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    DISC = 5
    BOWEL_WALL = 6
    BOWEL_CONTENT = 7
    GAS = 8
    URINE = 9
    VESSEL = 10
    TUMOUR = 11
    CORTEX = 12
    MARROW = 13


@dataclass(frozen=True)
class Layer:
    name: str
    tissue: Tissue
    shape: Shape
    suv: float | None = None  # this layer's own uptake instead of the tissue's


def _both_sides(shape: Shape) -> Shape:
    return union([shape, mirrored_x(shape, 0.0)])


def cavity(p: PelvisShape) -> Shape:
    """Abdominal cavity above the brim and the lesser pelvis below it (pelvis frame)."""
    hx = p.hip_half_width
    abdomen = ellipsoid((0.0, -30.0, 165.0), (hx + 5.0, 70.0, 115.0))
    lesser = ellipsoid((0.0, 15.0, 10.0), (hx - 40.0, 58.0, 62.0))
    return smooth_union([abdomen, lesser], k=30.0)


def _muscles(p: PelvisShape) -> list[Layer]:
    hx = p.hip_half_width
    psoas = chain(
        [(22.0, 32.0, 250.0), (40.0, 22.0, 170.0), (56.0, -2.0, 90.0), (hx - 22.0, -30.0, 20.0),
         (hx - 2.0, -18.0, -30.0), (hx + 20.0, 10.0, -62.0)],
        [14.0, 20.0, 23.0, 20.0, 15.0, 10.0],
    )  # fmt: skip
    iliacus = ellipsoid((hx - 22.0, 10.0, 85.0), (22.0, 42.0, 55.0), rotation("y", -18.0))
    obturator = ellipsoid((hx - 34.0, 18.0, -22.0), (9.0, 30.0, 26.0))
    gluteus_medius = ellipsoid((hx + 18.0, 40.0, 75.0), (30.0, 50.0, 60.0), rotation("y", 20.0))
    gluteus_maximus = ellipsoid((hx - 5.0, 105.0, -5.0), (50.0, 34.0, 95.0), rotation("y", 15.0))
    paraspinal = chain([(26.0, 95.0, 290.0), (24.0, 100.0, 160.0), (16.0, 102.0, 100.0)],
                       [26.0, 24.0, 10.0])  # fmt: skip
    thigh = capsule((hx + 10.0, 0.0, -50.0), (hx + 20.0, 0.0, -320.0), 62.0)
    fat_planes = _both_sides(union([gluteus_maximus.grown(3.0), gluteus_medius.grown(3.0)]))
    return [
        Layer("intermuscular fat", Tissue.FAT, fat_planes),
        Layer("thigh muscles", Tissue.MUSCLE, _both_sides(thigh)),
        Layer("gluteus medius", Tissue.MUSCLE, _both_sides(gluteus_medius)),
        Layer("gluteus maximus", Tissue.MUSCLE, _both_sides(gluteus_maximus)),
        Layer("paraspinal", Tissue.MUSCLE, _both_sides(paraspinal)),
        Layer("iliacus", Tissue.MUSCLE, _both_sides(iliacus)),
        Layer("psoas", Tissue.MUSCLE, _both_sides(psoas)),
        Layer("obturator internus", Tissue.MUSCLE, _both_sides(obturator)),
    ]


def _vessels(p: PelvisShape) -> list[Layer]:
    hx = p.hip_half_width
    artery = chain(
        [(4.0, -8.0, 290.0), (6.0, -10.0, 225.0), (40.0, 0.0, 150.0), (hx - 28.0, -28.0, 60.0),
         (hx - 18.0, -45.0, -10.0), (hx - 10.0, -48.0, -120.0)],
        [8.0, 7.0, 5.5, 5.0, 4.5, 4.5],
    )  # fmt: skip
    vein = chain(
        [(-14.0, 4.0, 290.0), (-8.0, 8.0, 220.0), (30.0, 14.0, 150.0), (hx - 38.0, -18.0, 60.0),
         (hx - 28.0, -38.0, -10.0), (hx - 20.0, -42.0, -120.0)],
        [10.0, 9.0, 7.0, 6.5, 6.0, 6.0],
    )  # fmt: skip
    # Mirrored whole: above the bifurcation (pelvis z > about 220, mostly above the CT's field)
    # this draws two aortas and two venae cavae instead of one of each, a known simplification.
    return [
        Layer("iliac veins", Tissue.VESSEL, union([vein, mirrored_x(vein, 0.0)])),
        Layer("iliac arteries", Tissue.VESSEL, union([artery, mirrored_x(artery, 0.0)])),
    ]


def _bowel_layers(organs: Organs) -> list[Layer]:
    layers, gases = [], []
    for k, loop in enumerate(organs.bowel):
        tube = chain(loop.points, [loop.radius] * len(loop.points))
        lumen = tube.grown(-3.0)
        # Each loop has its own uptake (physiological bowel FDG varies from loop to loop).
        layers.append(Layer(f"bowel wall {k + 1}", Tissue.BOWEL_WALL, tube, loop.suv))
        layers.append(Layer(f"bowel content {k + 1}", Tissue.BOWEL_CONTENT, lumen, loop.suv / 2))
        if loop.gas:
            # Gas rises to the front of a supine patient's loop.
            level = np.float32(min(pt[1] for pt in loop.points) + 0.3 * loop.radius)
            front = Shape(lambda x, y, z, lv=level: y - lv, np.full(3, -1e4), np.full(3, 1e4))
            gases.append(intersect(lumen, front))
    if gases:
        layers.append(Layer("bowel gas", Tissue.GAS, union(gases)))
    return layers


def _pelvic_organs(organs: Organs) -> list[Layer]:
    f = organs.bladder_fill ** (1.0 / 3.0)
    bladder = ellipsoid((0.0, -32.0, -5.0 + 30.0 * f), (40.0 * f, 32.0 * f, 32.0 * f))
    r = organs.rectum_radius
    path = [(0.0, 58.0, 120.0), (0.0, 54.0, 70.0), (0.0, 64.0, 30.0), (0.0, 60.0, -10.0),
            (0.0, 45.0, -45.0), (0.0, 38.0, -90.0)]  # fmt: skip
    radii = [0.8 * r, r, r, 0.9 * r, 0.5 * r, 0.4 * r]
    rectum = chain(path, radii)
    lumen = chain(path, [max(v - 4.0, 1.0) for v in radii])
    layers = [
        Layer("rectal wall", Tissue.BOWEL_WALL, rectum),
        Layer("rectal content", Tissue.BOWEL_CONTENT, lumen),
    ]
    if organs.rectum_gas:
        front = Shape(lambda x, y, z: y - 52.0, np.full(3, -1e4), np.full(3, 1e4))
        high = Shape(lambda x, y, z: -10.0 - z, np.full(3, -1e4), np.full(3, 1e4))
        layers.append(Layer("rectal gas", Tissue.GAS, intersect(intersect(lumen, front), high)))
    layers.append(Layer("bladder", Tissue.URINE, bladder))
    if organs.tumour is not None:
        tx, ty, tz, tr = organs.tumour
        layers.append(Layer("tumour", Tissue.TUMOUR, ellipsoid((tx, ty, tz), (tr, tr * 0.8, tr))))
    return layers


def _discs(p: PelvisShape) -> list[Layer]:
    l5, l4 = vertebra_centres()["L5"], vertebra_centres()["L4"]
    tilt = {name: t + p.lordosis_deg for name, _big, t in VERTEBRAE}
    l5_s1 = disc((0.0, 34.0, l5[2] - 19.0), (24.0, 17.0), 5.5, rotation("x", tilt["L5"] + 6.0), 2.0)
    l4_l5 = disc(
        (0.0, 26.0, 0.5 * (l4[2] + l5[2])), (24.0, 17.0), 5.5, rotation("x", tilt["L4"] + 4.0), 2.0
    )
    return [Layer("intervertebral discs", Tissue.DISC, union([l5_s1, l4_l5]))]


def soft_tissue_layers(p: PelvisShape, organs: Organs) -> list[Layer]:
    """Layers inside the body wall, in painting order, placed in world coordinates."""
    layers = _muscles(p) + _vessels(p) + _bowel_layers(organs) + _pelvic_organs(organs) + _discs(p)
    return [Layer(la.name, la.tissue, place_in_pelvis(la.shape, p)) for la in layers]
