"""Physiological post-processing of a nerve segmentation: keep the nerve tube, drop blobs,
fill missed slices.

The nerve is one continuous tubular structure running through the stack that may split
into two branches. The rule (``PostprocessRule``), on a binary mask (z, y, x) with its
spacing in mm:

1. Components: 3D connected components with 26-connectivity.
2. Bridges over missed slices: a 2D piece (8-connected) in slice ``a`` that no mask voxel of
   slice ``a + 1`` touches, and a piece in slice ``b`` that no voxel of slice ``b - 1``
   touches (voxels of specks not counted: a speck, a piece of fewer than ``SPECK_PIXELS`` = 9
   pixels, has no pixel whose eight neighbours all belong to it, as boundary jitter detaches
   them; a speck touching a branch does not make the branch continue, and a speck is never
   one of the two pieces), with
   ``1 <= b - a - 1 <= max_gap_slices`` (default 2: a missed slice next to the slice where
   the small branch alone was missed leaves that branch a two-slice gap) slices between
   them (the fewest that give any pair), are bridged when they face each other: the
   distance between their centroids is at most the sum of their equivalent radii
   sqrt(area / pi) plus ``facing_tolerance_mm`` (default 2 mm, for a branch diverging at a
   missed junction slice). A piece that continues in the gap's direction may still be
   bridged to one that ends, when the two belong to different 3D components (a branch that
   lost its junction) and the ending piece's group (its component and those bridged to it
   over gaps where both ends are open) runs on, away from the gap, at least as far as the
   continuing piece's group: a branch runs on as far as the nerve does, a vein-like blob
   facing the nerve (say a lesion-thickened one) ends before it, if only by a slice.
   The slices between get the shape-based interpolation of the two pieces: both moved to
   the linearly interpolated centroid, voxels where the linear blend of their signed
   distance maps (mm, negative inside) is negative.
   Bridged components count as one group.
3. The main tube: the group of bridged components with the largest z-extent (first to
   last slice, gaps included); ties go to the larger voxel count.
4. Other groups are kept only when their z-extent is at least ``min_extent_fraction``
   (default 0.5) of the main tube's and their nearest voxel lies within
   ``max_branch_distance_mm`` (default 20 mm) of it: a branch whose junction was missed.
   Everything else (short blobs such as a segmented vein, anything far away) is removed.
5. Side pieces: a vessel touching the nerve is part of the main tube's 3D component, and on
   the slices where it is a separate 2D piece *Branches* would take it for a branch. A 2D
   piece (8-connected, at least SPECK_PIXELS) smaller than ``side_piece_fraction`` (default
   0.2) times the largest piece of its slice is a side piece; side pieces overlapping each
   other on consecutive slices (26-connected) form a track, and a track over at least
   SIDE_PIECE_MIN_SLICES (2) slices is removed. The common peroneal nerve holds about half
   the tibial's area (the phantom's: 0.69), so no branch is under a fifth of the largest
   piece over two slices; a piece that small on one slice (a branch just separating, a
   partial miss) stays. The largest piece, not the slice's area, is the scale: a kept vessel
   as large as a branch must not make the real peroneal look small. 0 turns the step off.
6. Floating tracks: a vessel beside the nerve that touches it only through a corner (one
   voxel diagonally between slices) is part of the main tube's 3D component, and as large
   as a branch it is no side piece. The 2D pieces (8-connected, at least SPECK_PIXELS) that
   are not the largest of their slice, linked from slice to slice where they overlap
   in-plane, form tracks; a track over fewer than ``min_extent_fraction`` of the nerve's
   z-extent (first to last slice holding mask) whose first and last pieces overlap nothing
   (no piece of at least SPECK_PIXELS) on the slices before and after, although those
   slices hold mask, is removed. A branch overlaps the trunk at its division and runs on to
   the edge of the stack, or merges back; a vessel floats. This also takes what a removed
   side piece alone held to the nerve.

Steps 1-6 are repeated until a pass changes nothing (at most ``MAX_PASSES``), so the output
post-processed again is unchanged: ``biomarkers`` (which post-processes by default) measures
``postprocess``'s output as it is.

So every voxel of the main tube is kept, except side pieces and floating tracks, and nothing
is added outside bridged gaps. A long vessel running beside the nerve over most of the stack and as
large as a branch is indistinguishable from one by this rule and is kept. An empty mask
stays empty.

nnU-Net's own post-processing (``remove_all_but_largest_component``) keeps the single
largest 3D component instead; ``benchmarks/bench_postprocess.py`` compares the two.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_nerve.errors import NerveError
from nnunet_nerve.parameters import require_number
from nnunet_nerve.io.masks import binary_mask

_STRUCTURE_3D = np.ones((3, 3, 3), dtype=bool)
_STRUCTURE_2D = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessRule:
    min_extent_fraction: float = 0.5
    max_branch_distance_mm: float = 20.0
    max_gap_slices: int = 2
    facing_tolerance_mm: float = 2.0
    side_piece_fraction: float = 0.2

    def __post_init__(self):
        """0 < min_extent_fraction <= 1, max_branch_distance_mm > 0, max_gap_slices an integer
        >= 0, facing_tolerance_mm >= 0, 0 <= side_piece_fraction <= 0.5 (0: step 5 off)."""
        require_number(self.min_extent_fraction, "--min-extent", above=0, maximum=1)
        require_number(self.max_branch_distance_mm, "--max-branch-distance", above=0)
        require_number(self.max_gap_slices, "--max-gap", minimum=0, integer=True)
        require_number(self.facing_tolerance_mm, "facing tolerance (mm)", minimum=0)
        require_number(self.side_piece_fraction, "--side-fraction", minimum=0, maximum=0.5)


@dataclass
class PostprocessResult:
    """The cleaned mask (bool) and what was changed."""

    mask: np.ndarray
    components: int = 0
    kept_components: int = 0
    removed_voxels: int = 0
    filled_slices: list = field(default_factory=list)
    filled_voxels: int = 0
    main_extent_slices: int = 0
    #: One entry per removed group of components: first/last slice, voxels and why.
    removed: list = field(default_factory=list)
    #: Passes of steps 1-6 made; the last changed nothing (but at ``MAX_PASSES``).
    passes: int = 0
    #: The rule applied (``PostprocessRule``'s fields), so that a summary says how it was cleaned.
    rule: dict = field(default_factory=lambda: asdict(PostprocessRule()))

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("mask")
        return out


@dataclass
class _Piece:
    """An 8-connected 2D piece of the mask: slice, label in that slice's 2D labelling, 3D
    component, centroid (x_mm, y_mm) as in ``branches.SlicePieces``, equivalent radius (mm),
    and whether no mask voxel of the next (``down``) or previous (``up``) slice touches it."""

    z: int
    label: int
    component: int
    centroid: np.ndarray
    radius: float
    down: bool
    up: bool


#: A 2D piece of fewer pixels than a 3x3 block is a speck: too small to have a pixel whose
#: eight neighbours all belong to it, so boundary only. One-pixel boundary jitter detaches
#: pieces of 1-5 pixels; the registry's smallest nerve piece has 20.
SPECK_PIXELS = 9
#: Passes of steps 1-6 at most. On the stability benchmark's 1,040 noisy masks (seeds 0-9)
#: every one is done in one pass and the second changes nothing; of the demo's eight network
#: masks one takes two (a removed side piece uncovers an end that the second pass bridges).
#: The passes guarantee that the output is post-processed already; they are not a rule.
MAX_PASSES = 4
#: A track of side pieces over at least this many slices is removed (step 5).
SIDE_PIECE_MIN_SLICES = 2
#: The ``kind`` of a ``removed`` entry, the first word(s) of its ``reason``: a group of components
#: shorter than the tube or far from it (steps 2-4), a track of side pieces (step 5), a floating
#: track (step 6).
SHORT, FAR, SIDE_PIECE, FLOATING = "short", "far", "side piece", "floating"
#: The kinds that are tracks beside the nerve (vessels), not groups of components.
VESSEL_TRACK_KINDS = (SIDE_PIECE, FLOATING)


def removed_entry(first_slice: int, last_slice: int, voxels: int, kind: str, why: str) -> dict:
    """One ``removed`` entry: its slices, voxels, ``kind`` and ``reason`` ("<kind>: <why>")."""
    return {"first_slice": int(first_slice), "last_slice": int(last_slice), "voxels": int(voxels), "kind": kind,
            "reason": f"{kind}: {why}"}


def vessel_tracks(removed: list) -> int:
    """How many entries of a ``removed`` list are tracks beside the nerve (steps 5 and 6: side
    pieces and floating tracks; the other entries are groups of components)."""
    return sum(entry["kind"] in VESSEL_TRACK_KINDS for entry in removed)


def vessel_tracks_phrase(removed: list) -> str:
    """" and N vessel track(s)" for the ``vessel_tracks`` of ``removed``; "" when none."""
    tracks = vessel_tracks(removed)
    return f" and {tracks} vessel track(s)" if tracks else ""


def _without_specks(slice_mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(slice_mask, structure=_STRUCTURE_2D)
    if n == 0:
        return slice_mask
    return _non_speck_pixels(lab, np.bincount(lab.ravel(), minlength=n + 1))


def _non_speck_pixels(lab: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The pixels of a slice's 2D labelling ``lab`` (pieces' ``sizes`` by label) in pieces
    that are not specks."""
    return (sizes >= SPECK_PIXELS)[lab] & (lab > 0)


def _pieces_by_slice(mask: np.ndarray, comp: np.ndarray, spacing_yx) -> dict:
    """{z: [_Piece]} for every slice holding pieces other than specks (every such 2D piece,
    with its 3D component and open ends; ``branches.slice_pieces`` instead groups one slice
    into major pieces). A speck is never a bridge's end, and a speck in the next or previous
    slice does not continue a piece: its end stays open."""
    sy, sx = spacing_yx
    nz = mask.shape[0]
    pieces = {}
    solid = {}

    def solid_slice(z):
        if z not in solid:
            solid[z] = _without_specks(mask[z])
        return solid[z]

    for z in np.flatnonzero(mask.reshape(nz, -1).any(axis=1)):
        z = int(z)
        lab, n = ndimage.label(mask[z], structure=_STRUCTURE_2D)
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        for i, box in enumerate(ndimage.find_objects(lab), 1):
            if areas[i] < SPECK_PIXELS:
                continue
            crop = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
            own = lab[crop] == i
            grown = ndimage.binary_dilation(own, structure=_STRUCTURE_2D)
            ys, xs = np.nonzero(own)
            origin = (crop[0].start, crop[1].start)
            pieces.setdefault(z, []).append(_Piece(
                z, i, int(comp[z][ys[0] + origin[0], xs[0] + origin[1]]),
                np.array([(xs.mean() + origin[1]) * sx, (ys.mean() + origin[0]) * sy]),
                float(np.sqrt(own.sum() * sy * sx / np.pi)),
                down=z + 1 < nz and not solid_slice(z + 1)[crop][grown].any(),
                up=z > 0 and not solid_slice(z - 1)[crop][grown].any()))
    return pieces


def _piece_mask(mask: np.ndarray, piece: _Piece, labels: dict) -> np.ndarray:
    """The piece's pixels in its slice; ``labels`` caches each slice's 2D labelling."""
    if piece.z not in labels:
        labels[piece.z] = ndimage.label(mask[piece.z], structure=_STRUCTURE_2D)[0]
    return labels[piece.z] == piece.label


def _signed_distance(piece: np.ndarray, spacing_yx) -> np.ndarray:
    """Signed distance (mm) to the piece's boundary: negative inside, positive outside."""
    return (ndimage.distance_transform_edt(~piece, sampling=spacing_yx)
            - ndimage.distance_transform_edt(piece, sampling=spacing_yx))


def _shifted(piece: np.ndarray, shift_px) -> np.ndarray:
    return ndimage.shift(piece.astype(np.uint8), np.round(shift_px), order=0, mode="constant", cval=0) > 0


def interpolate_gap(lower: np.ndarray, upper: np.ndarray, gap: int, spacing_yx) -> list:
    """``gap`` 2D masks between slice masks ``lower`` and ``upper``: shape-based interpolation
    with centroid alignment. For the slice at fraction w of the way, both shapes are moved
    (whole pixels) to the blended centroid (1 - w) c_lower + w c_upper, and the result is
    where (1 - w) d_lower + w d_upper < 0, d being the moved shapes' signed distances (mm).
    Pixels where the blend is exactly 0 (inside one shape's edge, outside the other's) are
    split evenly, on a checkerboard: taking none of them shrinks a ragged shape by about a
    fifth, taking all grows it by a tenth."""
    (y0, x0), (y1, x1) = np.nonzero(lower), np.nonzero(upper)
    # centroids as sums of integer indices divided once (exact sums: what ndimage.center_of_mass gives)
    c0 = np.array([y0.sum(), x0.sum()]) / y0.size
    c1 = np.array([y1.sum(), x1.sum()]) / y1.size
    # computed on the shapes' bounding box, padded by the largest shift and a margin of background:
    # the same result as on the whole slice (every shifted shape, and its nearest background, lies
    # inside), at a cost that follows the shapes, not the slice
    pad = int(np.ceil(np.abs(c1 - c0).max())) + 2
    ys, xs = np.concatenate([y0, y1]), np.concatenate([x0, x1])
    crop = (slice(max(ys.min() - pad, 0), ys.max() + pad + 1), slice(max(xs.min() - pad, 0), xs.max() + pad + 1))
    origin = np.array([crop[0].start, crop[1].start])
    lower_c, upper_c = lower[crop], upper[crop]
    checker = ((np.indices(lower_c.shape).sum(axis=0) + origin.sum()) % 2) == 0
    out = []
    for w in np.arange(1, gap + 1) / (gap + 1):
        target = (1 - w) * c0 + w * c1
        d0 = _signed_distance(_shifted(lower_c, target - c0), spacing_yx)
        d1 = _signed_distance(_shifted(upper_c, target - c1), spacing_yx)
        blend = (1 - w) * d0 + w * d1
        fill = np.zeros_like(lower, dtype=bool)
        fill[crop] = (blend < 0) | ((blend == 0) & checker)
        out.append(fill)
    return out


def _find_bridges(mask: np.ndarray, comp: np.ndarray, rule: PostprocessRule, spacing_yx) -> list:
    """(lower piece, upper piece) pairs across 1..max_gap slices (the fewest that give any for
    each end piece) that face each other, where the lower piece ends downwards and the upper
    piece upwards (two-sided), or one of them does and they belong to different 3D components
    (one-sided: a branch that lost its junction). A branch runs on from its junction as far as
    the nerve does, so a one-sided bridge is made only when the ending piece's group (its
    component with those bridged to it two-sidedly) reaches, away from the gap, at least as
    far as the continuing piece's group: a vein-like blob facing the nerve ends before it."""
    pieces = _pieces_by_slice(mask, comp, spacing_yx)
    # centroids and radii per slice, so that the facing test of one piece against a slice is one
    # array operation (a noisy mask holds thousands of pieces: pairwise calls took minutes)
    arrays = {z: (np.array([q.centroid for q in here]), np.array([q.radius for q in here]))
              for z, here in pieces.items()}

    def facing(p: _Piece, z: int) -> list:
        """The pieces q of slice ``z`` facing ``p``: centroids at most p's radius + q's radius +
        the facing tolerance apart (a piece and its continuation across a gap overlap in-plane)."""
        if z not in arrays:
            return []
        centroids, radii = arrays[z]
        distance = np.sqrt(((centroids - p.centroid) ** 2).sum(axis=1))
        return [pieces[z][i] for i in np.flatnonzero(distance <= p.radius + radii + rule.facing_tolerance_mm)]

    def search(joinable) -> list:
        """Pairs (lower, upper) of facing pieces across a gap for which ``joinable`` holds."""
        found = {}
        for z, here in pieces.items():
            for p in here:
                for gap in range(1, int(rule.max_gap_slices) + 1):
                    hits = []
                    if p.down:
                        hits += [(p, q) for q in facing(p, z + gap + 1) if joinable(p, q)]
                    if p.up:
                        hits += [(q, p) for q in facing(p, z - gap - 1) if joinable(q, p)]
                    for lo, up in hits:
                        found[(lo.z, lo.label, up.z, up.label)] = (lo, up)
                    if hits:
                        break
        return list(found.values())

    n = int(comp.max())
    group_of = _groups(n, search(lambda lo, up: lo.down and up.up))
    first, last = np.full(n + 1, mask.shape[0]), np.full(n + 1, -1)
    for c, obj in enumerate(ndimage.find_objects(comp), 1):
        if obj is not None:
            g = group_of[c]
            first[g], last[g] = min(first[g], obj[0].start), max(last[g], obj[0].stop - 1)

    def reaches_as_far(lo: _Piece, up: _Piece) -> bool:
        """The ending piece's group extends, away from the gap, at least as far as the continuing one's."""
        a, b = group_of[lo.component], group_of[up.component]
        if up.up:      # the piece after the gap (higher z) starts there; it must run on towards higher z
            return last[b] >= last[a]
        return first[a] <= first[b]      # the piece before the gap ends there

    def joinable(lo: _Piece, up: _Piece) -> bool:
        if lo.down and up.up:
            return True
        return lo.component != up.component and reaches_as_far(lo, up)

    return search(joinable)


def _union_roots(n: int, pairs) -> np.ndarray:
    """Union-find over items 0..n-1 joined by ``pairs`` (i, j); a root id per item."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    return np.array([root(i) for i in range(n)], dtype=int)


def _groups(n: int, bridges: list) -> np.ndarray:
    """Components 1..n joined by bridges; group id per component (index 0 unused)."""
    return _union_roots(n + 1, ((lo.component, up.component) for lo, up in bridges))


def rule_of(postprocess: "bool | PostprocessRule") -> "PostprocessRule | None":
    """What a ``postprocess`` argument asks for: True the default rule, a rule itself, False none."""
    if postprocess is False:
        return None
    return PostprocessRule() if postprocess is True else postprocess


def postprocess_nerve(mask: np.ndarray, spacing_zyx: Sequence[float], rule: PostprocessRule = PostprocessRule()
                      ) -> PostprocessResult:
    """Apply the module's rule to a binary mask (z, y, x); see the module docstring.

    Works on the mask's bounding box (plus one voxel in-plane), so its cost follows the
    segmented region, not the field of view."""
    mask = binary_mask(np.asarray(mask))
    if mask.ndim != 3:
        raise NerveError(f"mask: expected a 3D mask (z, y, x), got {mask.ndim} dimensions")
    if mask.any():
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        box = (slice(0, mask.shape[0]),) + tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box[1:])
        result = _postprocess_to_fixed_point(mask[box], spacing_zyx, rule)
        full = np.zeros_like(mask)
        full[box] = result.mask
        result.mask = full
    else:
        result = PostprocessResult(mask.copy())
    result.rule = asdict(rule)
    return result


def _postprocess_to_fixed_point(mask: np.ndarray, spacing_zyx: Sequence[float], rule: PostprocessRule
                                ) -> PostprocessResult:
    """Steps 1-6 repeated until a pass changes nothing (at most ``MAX_PASSES``), so that the
    output post-processed again stays as it is (a clean mask takes one pass). What changed is
    counted against the input: removed voxels are the input's voxels not in the output, filled
    ones the output's voxels that a pass interpolated into a gap (``filled_slices``: the
    slices holding such); ``removed`` lists every pass's entries; ``components`` are the
    input's, ``kept_components`` those with a voxel left."""
    current, removed, filled = mask, [], np.zeros_like(mask)
    for passes in range(1, MAX_PASSES + 1):
        step = _postprocess_pass(current, spacing_zyx, rule)
        if passes == 1:
            comp, n = step.components, step.n_components
        if np.array_equal(step.mask, current):
            break
        removed += step.removed
        filled |= step.filled
        current = step.mask
    filled &= current
    return PostprocessResult(current, components=n, kept_components=int(np.unique(comp[current & mask]).size),
                             removed_voxels=int((mask & ~current).sum()),
                             filled_slices=[int(z) for z in np.flatnonzero(filled.reshape(len(filled), -1).any(axis=1))],
                             filled_voxels=int(filled.sum()), main_extent_slices=step.main_extent_slices,
                             removed=removed, passes=passes)


@dataclass
class _Pass:
    """One pass of steps 1-6: the mask after it, its ``removed`` entries, the main tube's
    z-extent, the voxels it interpolated into gaps (not in the kept components before), and
    the 3D components of its input (labels, count)."""

    mask: np.ndarray
    removed: list
    main_extent_slices: int
    filled: np.ndarray
    components: np.ndarray
    n_components: int


def _postprocess_pass(mask: np.ndarray, spacing_zyx: Sequence[float], rule: PostprocessRule) -> _Pass:
    sz, sy, sx = (float(s) for s in spacing_zyx)
    comp, n = ndimage.label(mask, structure=_STRUCTURE_3D)
    if n == 0:
        return _Pass(mask.copy(), [], 0, np.zeros_like(mask), comp, 0)
    objects = ndimage.find_objects(comp)
    zranges = {i + 1: (obj[0].start, obj[0].stop - 1) for i, obj in enumerate(objects)}
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    bridges = _find_bridges(mask, comp, rule, (sy, sx))
    group_of = _groups(n, bridges)

    groups = {}
    for c in range(1, n + 1):
        g = groups.setdefault(group_of[c], {"members": [], "z0": zranges[c][0], "z1": zranges[c][1], "voxels": 0})
        g["members"].append(c)
        g["z0"], g["z1"] = min(g["z0"], zranges[c][0]), max(g["z1"], zranges[c][1])
        g["voxels"] += int(sizes[c])
    extent = {g: v["z1"] - v["z0"] + 1 for g, v in groups.items()}
    main = max(groups, key=lambda g: (extent[g], groups[g]["voxels"]))
    keep_groups, removed = {main}, []
    distance = None
    for g in sorted(groups, key=lambda g: groups[g]["z0"]):
        if g == main:
            continue
        where = (groups[g]["z0"], groups[g]["z1"], groups[g]["voxels"])
        if extent[g] < rule.min_extent_fraction * extent[main]:
            removed.append(removed_entry(*where, SHORT, f"{extent[g]} slice(s), under {rule.min_extent_fraction:g} "
                                                        f"of the nerve tube's {extent[main]}"))
            continue
        if distance is None:
            distance = ndimage.distance_transform_edt(~np.isin(comp, groups[main]["members"]), sampling=(sz, sy, sx))
        gap = float(distance[np.isin(comp, groups[g]["members"])].min())
        if gap <= rule.max_branch_distance_mm:
            keep_groups.add(g)
        else:
            removed.append(removed_entry(*where, FAR, f"{gap:.1f} mm from the nerve tube, over "
                                                      f"{rule.max_branch_distance_mm:g} mm"))

    kept_components = [c for g in keep_groups for c in groups[g]["members"]]
    out = np.isin(comp, kept_components)
    filled, labels = np.zeros_like(mask), {}
    for lo, up in bridges:
        if group_of[lo.component] not in keep_groups:
            continue
        gap = up.z - lo.z - 1
        fills = interpolate_gap(_piece_mask(mask, lo, labels), _piece_mask(mask, up, labels), gap, (sy, sx))
        for z, fill in zip(range(lo.z + 1, up.z), fills):
            # a bridge inside voxels already there (pieces ending beside other nerve) fills nothing
            filled[z] |= fill & ~out[z]
            out[z] |= fill
    side = _remove_side_pieces(out, rule.side_piece_fraction)
    side += _remove_floating_tracks(out, rule.min_extent_fraction)
    return _Pass(out, removed + side, int(extent[main]), filled, comp, n)


def _tracks(pieces: list, labels: dict, grown: bool) -> list:
    """Tracks of 2D pieces ``(z, label, pixels)`` (``labels``: each slice's 2D labelling):
    pieces of consecutive slices are linked where one overlaps the other in-plane, or, with
    ``grown``, touches it (26-connected). Returns each track's pieces, tracks sorted."""
    index = {(z, i): k for k, (z, i, _) in enumerate(pieces)}

    def links():
        for k, (z, i, _) in enumerate(pieces):
            if z + 1 not in labels:
                continue
            own = labels[z] == i
            for j in np.unique(labels[z + 1][ndimage.binary_dilation(own, structure=_STRUCTURE_2D) if grown else own]):
                if (z + 1, int(j)) in index:
                    yield index[(z + 1, int(j))], k

    roots = _union_roots(len(pieces), links())
    tracks = {}
    for k, piece in enumerate(pieces):
        tracks.setdefault(int(roots[k]), []).append(piece)
    return sorted(tracks.values())


def _remove_side_pieces(out: np.ndarray, fraction: float) -> list:
    """Step 5 of the module docstring on ``out`` (z, y, x; changed in place); returns one
    ``removed`` entry per track of side pieces taken out."""
    if fraction <= 0:
        return []
    labels, side = {}, []            # side: (z, label, pixels)
    for z in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        lab, n = ndimage.label(out[z], structure=_STRUCTURE_2D)
        if n < 2:
            continue
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        labels[int(z)] = lab
        side += [(int(z), i, int(areas[i])) for i in range(1, n + 1)
                 if SPECK_PIXELS <= areas[i] < fraction * areas[1:].max()]
    tracks = _tracks(side, labels, grown=True)
    removed = []
    for members in tracks:
        slices = sorted({z for z, _, _ in members})
        if len(slices) < SIDE_PIECE_MIN_SLICES:
            continue
        for z, i, _ in members:
            out[z][labels[z] == i] = False
        removed.append(removed_entry(slices[0], slices[-1], sum(a for _, _, a in members), SIDE_PIECE,
                                     f"under {fraction:g} of its slice's largest piece on {len(slices)} slices "
                                     "(a vessel touching the nerve)"))
    return removed


def _remove_floating_tracks(out: np.ndarray, fraction: float) -> list:
    """Step 6 of the module docstring on ``out`` (changed in place); one ``removed`` entry per
    floating track taken out (kind ``floating``)."""
    nz = out.shape[0]
    present = np.flatnonzero(out.reshape(nz, -1).any(axis=1))
    if present.size == 0:
        return []
    extent = int(present[-1] - present[0] + 1)
    labels, solid, pieces = {}, {}, []        # pieces: (z, label, pixels), the slice's largest left out
    for z in (int(z) for z in present):
        lab, n = ndimage.label(out[z], structure=_STRUCTURE_2D)
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        labels[z], solid[z] = lab, _non_speck_pixels(lab, areas)
        largest = int(np.argmax(areas[1:])) + 1
        pieces += [(z, i, int(areas[i])) for i in range(1, n + 1) if i != largest and areas[i] >= SPECK_PIXELS]
    tracks = _tracks(pieces, labels, grown=False)

    def blind(ends: list, beyond: int) -> bool:
        """The slice beyond holds mask, and none of its (non-speck) pixels overlaps these end pieces."""
        return beyond in labels and not any(solid[beyond][labels[z] == i].any() for z, i, _ in ends)

    removed = []
    for members in tracks:
        z0, z1 = min(m[0] for m in members), max(m[0] for m in members)
        if z1 - z0 + 1 >= fraction * extent:
            continue
        if blind([m for m in members if m[0] == z0], z0 - 1) and blind([m for m in members if m[0] == z1], z1 + 1):
            for z, i, _ in members:
                out[z][labels[z] == i] = False
            removed.append(removed_entry(z0, z1, sum(a for _, _, a in members), FLOATING,
                                         f"{z1 - z0 + 1} slice(s) beside the nerve, overlapping nothing on the slices "
                                         f"before and after, under {fraction:g} of the tube's {extent}"))
    return removed
