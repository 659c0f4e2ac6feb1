"""The bones of the phantom: L4, L5, sacrum, two innominate bones and two proximal femora.

Shapes are laid out in a pelvis frame (origin midway between the hip-joint centres; x to the
patient's left, y posterior, z superior, mm as in DICOM LPS) for a nominal adult, scaled per
patient and tilted about the hip axis. Proportions follow standard adult pelvic anatomy: iliac crest
about 130-150 mm above the hip centres, acetabula about 170-190 mm apart, sacral promontory about
100-120 mm above them, femoral heads of 22-27 mm radius (Gray's Anatomy, 42nd ed.; the pelvic
bone-marrow sub-site atlas of Mell et al., Int J Radiat Oncol Biol Phys 2008, for the regions).

Each bone is one fused solid: the innominate bone is ilium, ischium and pubis grown together
(smooth union) with an acetabular socket that holds the femoral head across a 2 mm joint space;
the sacrum meets both ilia at the sacroiliac joints across a 2.5 mm joint space; iliac wings are a
curved plate, a few mm thick in the centre of the fossa and thick at the crest and posteriorly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
    sphere,
    subtract,
    transformed,
)

SPINE, ILIUM, LOWER_PELVIS = 1, 2, 3
REGION_NAMES = {SPINE: "spine", ILIUM: "ilium", LOWER_PELVIS: "lower_pelvis"}
HIP_JOINT_SPACE_MM = 2.0
SI_JOINT_SPACE_MM = 2.5


@dataclass(frozen=True)
class PelvisShape:
    """Per-patient skeletal proportions (mm and degrees, before scaling by ``scale``)."""

    scale: float  # overall size
    hip_half_width: float  # half the distance between the hip-joint centres
    head_radius: float
    wing_flare: float  # lateral reach of the iliac wings (relative)
    crest_height: float  # iliac crest above the hip centres
    wing_centre_mm: float  # plate thickness in the centre of the iliac fossa
    tilt_deg: float  # pelvic tilt about the hip axis (positive: anterior tilt)
    lordosis_deg: float  # L4/L5 tilt against the sacral base
    origin: tuple[float, float, float]  # world position of the pelvis-frame origin
    cortex_mm: float  # cortical shell of flat bones and vertebrae
    femur_cortex_mm: float  # cortical wall of the femoral shaft


@dataclass(frozen=True)
class Bone:
    """One bone: its outer solid, its marrow space and its ABM region.

    The marrow space is the outer solid shrunk by ``cortex_mm`` unless ``marrow`` gives its own
    shape (the femoral shaft's thick wall). ``region`` is a region id, or a function of world
    coordinates for a bone that spans two regions (the innominate bone's acetabular-roof plane).
    """

    name: str
    region: int | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    outer: Shape
    cortex_mm: float
    marrow: Shape | None = None


def _wing_plate(p: PelvisShape) -> Shape:
    """Left iliac wing: at each height an arc of a circle from the sacroiliac joint (posterior,
    medial) to the anterior border, bulging posterolaterally, so the fossa is concave towards the
    pelvis. The arc's anterior end moves laterally with height (the wing flares out); its
    thickness is ``wing_centre_mm`` in the middle of the fossa and grows towards the crest, the
    posterior ilium (iliac tuberosity), the anterior border and the ilium body above the socket.
    """
    flare = np.float32(p.wing_flare)
    crest = np.float32(p.crest_height)
    thin = np.float32(p.wing_centre_mm)

    def sdf(x, y, z):
        h = np.clip((z - 30.0) / (crest - 30.0), 0.0, 1.0)
        px, py = np.float32(50.0), np.float32(74.0)
        qx = (72.0 + 50.0 * h) * flare
        qy = -22.0 - 22.0 * h
        mx, my = 0.5 * (px + qx), 0.5 * (py + qy)
        dx, dy = qx - px, qy - py
        chord = np.sqrt(dx * dx + dy * dy)
        sag = np.float32(20.0)
        radius = (chord * chord / 4.0 + sag * sag) / (2.0 * sag)
        # Unit normal towards the concave (anteromedial) side: (-dy, dx) / chord points there.
        nx, ny = -dy / chord, dx / chord
        nx, ny = np.where(nx > 0, -nx, nx), np.where(nx > 0, -ny, ny)
        cx, cy = mx + nx * (radius - sag), my + ny * (radius - sag)
        theta = np.arctan2(y - cy, x - cx)
        t_p = np.arctan2(py - cy, px - cx)
        t_q = np.arctan2(qy - cy, qx - cx)
        span = np.angle(np.exp(1j * (t_q - t_p)))
        u = np.angle(np.exp(1j * (theta - t_p))) / span
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        on_arc = np.abs(r - radius)
        to_p = np.sqrt((x - px) ** 2 + (y - py) ** 2)
        to_q = np.sqrt((x - qx) ** 2 + (y - qy) ** 2)
        dist = np.where(u < 0.0, to_p, np.where(u > 1.0, to_q, on_arc))
        uc = np.clip(u, 0.0, 1.0)
        top = crest - 110.0 * (uc - 0.45) ** 2
        bottom = 52.0 - 30.0 * uc
        thick = (
            thin
            + 12.0 * np.exp(-np.maximum(top - z, 0.0) / 8.0)
            + 26.0 * np.exp(-uc / 0.14)
            + 7.0 * np.exp(-(1.0 - uc) / 0.08)
            + 22.0 * np.exp(-np.maximum(z - bottom, 0.0) / 14.0)
        )
        plate = dist - 0.5 * thick
        return np.maximum.reduce([plate, z - top, bottom - 14.0 - z - 0.15 * (y - 20.0)])

    lo = np.array([15.0, -75.0, 10.0])
    hi = np.array([130.0 * p.wing_flare, 100.0, p.crest_height + 8.0])
    return Shape(sdf, lo, hi)


def _innominate_left(p: PelvisShape, sacrum: Shape) -> Shape:
    """Left hip bone: wing, ilium body over the acetabulum, ischium, pubis."""
    hx, rh = p.hip_half_width, p.head_radius
    hip = (hx, 0.0, 0.0)
    wing = _wing_plate(p)
    body = ellipsoid((hx - 10.0, 8.0, 16.0), (24.0, 32.0, 34.0))  # over and around the socket
    post_rim = ellipsoid((hx - 10.0, 22.0, -8.0), (22.0, 22.0, 26.0))
    ischium = chain(
        [(hx - 12.0, 26.0, -14.0), (hx - 26.0, 40.0, -52.0), (hx - 40.0, 30.0, -66.0)],
        [15.0, 16.0, 12.0],
    )
    ischial_ramus = capsule((hx - 40.0, 30.0, -66.0), (22.0, -20.0, -62.0), 9.0, 8.0)
    superior_ramus = capsule((hx - 20.0, -22.0, 6.0), (16.0, -56.0, -18.0), 12.0, 10.0)
    pubic_body = ellipsoid((15.5, -60.0, -30.0), (13.0, 11.0, 22.0), rotation("x", -20.0))
    inferior_ramus = capsule((17.0, -50.0, -48.0), (22.0, -20.0, -62.0), 8.0, 8.0)
    outer = smooth_union(
        [wing, body, post_rim, ischium, ischial_ramus, superior_ramus, pubic_body, inferior_ramus],
        k=12.0,
    )
    # Socket: the head's sphere plus joint space, opened laterally, anteriorly and inferiorly.
    socket = sphere(hip, rh + HIP_JOINT_SPACE_MM)
    n = np.array([0.78, -0.35, -0.52])
    n /= np.linalg.norm(n)
    mouth_c = np.asarray(hip) + n * (rh + 80.0)
    mouth = sphere(tuple(mouth_c), 80.0 + 0.45 * rh)
    outer = subtract(subtract(outer, socket), mouth)
    # Sacroiliac joint: the ilium stops a joint space short of the sacrum.
    return subtract(outer, sacrum.grown(SI_JOINT_SPACE_MM))


def _sacrum(p: PelvisShape) -> Shape:
    """Sacrum: five fused segments along a curve concave forwards, with alae at S1-S2."""
    path = np.array(
        [[0.0, 40.0, 112.0], [0.0, 52.0, 86.0], [0.0, 66.0, 62.0], [0.0, 80.0, 42.0],
         [0.0, 92.0, 26.0], [0.0, 98.0, 12.0]]
    )  # fmt: skip
    half_w = [26.0, 22.0, 17.0, 13.0, 9.0, 6.0]
    half_d = [16.0, 14.0, 12.0, 10.0, 8.0, 6.0]
    parts = []
    for i in range(len(path) - 1):
        mid = (path[i] + path[i + 1]) / 2
        seg = path[i + 1] - path[i]
        angle = float(np.degrees(np.arctan2(seg[1], -seg[2])))
        parts.append(
            ellipsoid(
                tuple(mid),
                (half_w[i], half_d[i], 0.5 * float(np.linalg.norm(seg)) + 6.0),
                rotation("x", angle),
            )
        )
    alae = [
        ellipsoid((side * 28.0, 60.0, 92.0), (27.0, 20.0, 30.0), rotation("x", 25.0))
        for side in (-1.0, 1.0)
    ]
    dorsum = ellipsoid((0.0, 84.0, 84.0), (28.0, 12.0, 38.0), rotation("x", 28.0))
    outer = smooth_union(parts + alae + [dorsum], k=10.0)
    canal = chain([tuple(pt + np.array([0.0, 22.0, 0.0])) for pt in path[:4]], [7, 6, 5, 4])
    return subtract(outer, canal)


def _vertebra(centre: tuple[float, float, float], big: float, tilt: float) -> Shape:
    """Vertebral body with pedicles, laminae, spinous and transverse processes."""
    cx, cy, cz = centre
    rot = rotation("x", tilt)
    body = disc(centre, (25.0 * big, 18.0 * big), 13.5, rot, 3.0)

    def at(dx: float, dy: float, dz: float) -> tuple[float, float, float]:
        v = rot @ np.array([dx, dy, dz])
        return (cx + float(v[0]), cy + float(v[1]), cz + float(v[2]))

    parts = [body]
    for side in (-1.0, 1.0):
        parts.append(capsule(at(side * 12.0, 14.0, 2.0), at(side * 14.0, 30.0, 2.0), 6.0))
        parts.append(capsule(at(side * 14.0, 30.0, 0.0), at(side * 3.0, 44.0, -4.0), 5.0))
        parts.append(capsule(at(side * 15.0, 31.0, 3.0), at(side * 44.0 * big, 34.0, 4.0), 6.0, 5))
    parts.append(capsule(at(0.0, 44.0, -4.0), at(0.0, 68.0, -14.0), 6.0, 5.0))
    return smooth_union(parts, k=4.0)


def _femur_left(p: PelvisShape) -> tuple[Shape, Shape]:
    """Proximal femur: head in the socket, neck, trochanters and shaft with a thick cortex."""
    hx, rh = p.hip_half_width, p.head_radius
    head = sphere((hx, 0.0, 0.0), rh)
    neck_end = (hx + 34.0, -6.0, -28.0)
    neck = capsule((hx, 0.0, 0.0), neck_end, 0.62 * rh, 0.72 * rh)
    greater = ellipsoid((hx + 46.0, 8.0, -22.0), (14.0, 18.0, 22.0))
    lesser = ellipsoid((hx + 24.0, 16.0, -62.0), (9.0, 9.0, 11.0))
    shaft = capsule((hx + 38.0, 2.0, -36.0), (hx + 30.0, -2.0, -300.0), 17.0, 14.0)
    outer = smooth_union([head, neck, greater, lesser, shaft], k=10.0)
    proximal = outer.grown(-p.cortex_mm)
    # Coaxial with the tapering shaft (17 -> 14 mm), so the wall is femur_cortex_mm all round.
    t = 34.0 / 264.0  # where z = -70 lies along the shaft's axis
    canal = capsule(
        (hx + 38.0 - 8.0 * t, 2.0 - 4.0 * t, -70.0),
        (hx + 30.0, -2.0, -300.0),
        17.0 - 3.0 * t - p.femur_cortex_mm,
        14.0 - p.femur_cortex_mm,
    )
    below = Shape(lambda x, y, z: z + 70.0, np.array([-1e4] * 3), np.array([1e4, 1e4, -70.0]))
    shaft_marrow = intersect(canal, below)
    top = Shape(lambda x, y, z: -70.0 - z, np.array([-1e4, -1e4, -70.0]), np.array([1e4] * 3))
    marrow = smooth_union([intersect(proximal, top), shaft_marrow], k=6.0)
    return outer, marrow


def place_in_pelvis(shape: Shape, p: PelvisShape) -> Shape:
    """Pelvis frame (scaled) -> world: scale, tilt about the hip axis, move to ``origin``."""
    s = np.float32(p.scale)
    f = shape.sdf
    scaled = Shape(
        lambda x, y, z: f(x / s, y / s, z / s) * s, shape.lo * p.scale, shape.hi * p.scale
    )
    return transformed(scaled, rotation("x", p.tilt_deg), (0.0, 0.0, 0.0), p.origin)


def _roof_region(p: PelvisShape) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Ilium above the acetabular-roof plane (0.55 head radii above the hip centres), lower
    pelvis below it; the plane tilts with the pelvis."""
    normal = rotation("x", p.tilt_deg) @ np.array([0.0, 0.0, 1.0])
    point = np.asarray(p.origin) + normal * 0.55 * p.head_radius * p.scale
    n = normal.astype(np.float32)
    offset = np.float32(normal @ point)

    def region(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        above = x * n[0] + y * n[1] + z * n[2] >= offset
        return np.where(above, np.uint8(ILIUM), np.uint8(LOWER_PELVIS))

    return region


VERTEBRAE = (("L5", 1.0, 12.0), ("L4", 0.96, 4.0))  # name, size, tilt (degrees) before lordosis


def vertebra_centres() -> dict[str, tuple[float, float, float]]:
    """Vertebral-body centres in the pelvis frame (the discs sit between them)."""
    l5 = (0.0, 30.0, 112.0 + 10.0 + 14.0)
    return {"L5": l5, "L4": (0.0, 22.0, l5[2] + 27.0 + 10.0)}


def build_skeleton(p: PelvisShape) -> list[Bone]:
    """Every bone of one patient, in world coordinates."""
    sacrum = _sacrum(p)
    centres = vertebra_centres()
    bones = [
        Bone(name, SPINE, place_in_pelvis(_vertebra(centres[name], big, tilt + p.lordosis_deg), p),
             p.cortex_mm)
        for name, big, tilt in VERTEBRAE
    ]  # fmt: skip
    bones.append(Bone("sacrum", SPINE, place_in_pelvis(sacrum, p), p.cortex_mm))
    hip = _innominate_left(p, sacrum)
    femur, femur_marrow = _femur_left(p)
    region = _roof_region(p)
    for side, mirror in (("left", False), ("right", True)):

        def placed(shape: Shape, mirror: bool = mirror) -> Shape:
            return place_in_pelvis(mirrored_x(shape, 0.0) if mirror else shape, p)

        bones.append(Bone(f"hip_{side}", region, placed(hip), p.cortex_mm))
        bones.append(
            Bone(f"femur_{side}", LOWER_PELVIS, placed(femur), p.cortex_mm, placed(femur_marrow))
        )
    return bones
