"""Branch identity along the nerve: which voxels of each slice are the sciatic trunk, the
tibial and the common peroneal nerve, each branch followed through the stack as one tube
and named once for the whole stack.

On a binary mask (z, y, x) with its spacing in mm (``nerve_parts``):

1. Pieces. A slice's nerve splits into 2D connected components (8-connectivity). A
   component holding at least ``min_branch_fraction`` (default 0.1) of the slice's nerve
   area is a major piece; smaller fragments join the major piece with the nearest centroid.
   Slices with two or more major pieces are split slices.
2. Overlap and links. A piece overlaps a piece of the next slice that holds nerve when the
   two share pixels after growing the first by one pixel (3 x 3), i.e. when they are
   26-connected in 3D; the overlap is counted in pixels. A piece is linked to the pieces of
   the next slice that it overlaps or that face it: centroids within the sum of the two
   pieces' equivalent radii (sqrt(area / pi)) plus 2 mm (a branch diverging by more than a
   pixel between slices 4 mm apart).
3. The trunk. First, branches touching through jitter: walking each end's run of single-piece
   slices from the split slice next to it, a slice whose piece touches both branches of the
   slice just walked (its two largest pieces) through a bridge of at most BRIDGE_MAX_PIXELS
   (1) pixel (the fewest pixels whose removal separates the piece's pixels inside the one
   branch from those inside the other), while the next slice of the run touches its two parts
   through as thin a bridge, is split in two (each pixel to the branch whose piece is nearest)
   and the walk goes on: the last thin contact before a wider one is the junction and stays a
   trunk slice. The run's first slice whose piece overlaps one branch only and holds less than
   75 % of the next slice's area is that branch alone (the other missed there). Then the run
   of single-piece slices (before any branch alone) at one end of the stack is the trunk when its
   piece next to the first split slice is linked to two or more of that slice's pieces (the
   junction). When neither end's run does, a run whose piece holds at least 75 % of the
   nerve area of that split slice is the trunk (a junction lost between slices). When both
   ends qualify, the longer run (ties: the first slices). Otherwise the stack has no trunk.
4. Tracking, walking the slices from the trunk's end (else from the first slice). Trunk
   slices are sciatic. The trunk continues while it is linked to one piece of the next slice
   (other pieces are left over); where it is linked to two or more, the two largest start
   the two branches (without a trunk: the two largest pieces of the first slice, or the first
   later piece for the second branch). Each branch then continues into the piece that
   overlaps its last piece: the pairing of branches to distinct pieces with the largest
   total overlap, ties going to the pairing whose centroids lie nearest to the branches'
   last separate centroids. A piece taken by one branch that also covers at least half
   of the other branch's last piece (overlap as in step 2), the other branch having no
   piece of its own, holds both branches: ``merged`` (both branches' last piece is then
   that piece, and when they separate again the tie rule gives each its own side back). A branch that no piece continues is absent
   on that slice; it reappears in a left-over piece whose centroid lies within the two
   pieces' equivalent radii (sqrt(area / pi)) plus 2 mm of its last separate centroid.
   Left-over pieces (a vessel not removed by post-processing, a fragment) join the part of
   their slice with the nearest centroid, so every voxel belongs to one part.
5. Names, once per stack. With the imaged leg known (``lateral_xy``, a unit vector in the
   grid's in-plane mm axes pointing laterally) the peroneal is the branch lying more
   lateral on average over the slices where both branches are separate; otherwise it is
   the branch with the smaller volume over those slices (the tibial division carries
   about two thirds of the sciatic nerve's fibres).

Slice regions: ``sciatic`` (trunk), ``split`` (both branches separate), ``tibial`` or
``peroneal`` (that branch alone: the other has left the field of view, ended or was
missed), ``merged`` (both branches in one piece after the split), ``none`` (no nerve).
Events per branch (``NerveParts.events``): slices where it merged with the other branch,
nerve slices where it was missing between two appearances, and, when it disappears before
the nerve's end, its last slice and whether it leaves the field of view there (its last
piece touches the image's in-plane border) or ends inside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import maximum_flow

BRANCHES = ("tibial", "peroneal")
#: Values of ``NerveParts.labels``.
PART_LABELS = {"sciatic": 1, "tibial": 2, "peroneal": 3, "merged": 4}
DEFAULT_MIN_BRANCH_FRACTION = 0.1
#: A single-piece end run holding at least this fraction of the next split slice's nerve area is a trunk.
TRUNK_AREA_FRACTION = 0.75
#: A piece holds both branches when it covers at least this fraction of the absent branch's last piece.
MERGED_OVERLAP = 0.5
#: Slack (mm) beyond the equivalent radii for a branch to reappear in a left-over piece.
REAPPEAR_TOLERANCE_MM = 2.0
#: Two branches touching through a bridge of at most this many pixels on a single-piece slice next
#: to a split slice are still two branches when the next slice's contact is as thin (``split_bridges``);
#: None turns the rule off.
BRIDGE_MAX_PIXELS: "int | None" = 1
_STRUCTURE_2D = np.ones((3, 3), dtype=bool)
_TRUNK, _MERGED = "trunk", "merged"


@dataclass
class SlicePieces:
    """One slice's nerve: ``labels`` 0 = background, 1..n the major pieces by decreasing area
    (fragments included), their ``areas`` (pixels), ``centroids`` (x_mm, y_mm), whether each
    touches the image's in-plane border, and the number of 2D components before grouping."""

    labels: np.ndarray
    areas: list
    centroids: list
    on_border: list
    components: int

    def radius(self, i: int, pixel_area: float) -> float:
        return math.sqrt(self.areas[i] * pixel_area / math.pi)


def slice_pieces(mask2d: np.ndarray, spacing_yx: Sequence[float], min_branch_fraction: float,
                 border: "np.ndarray | None" = None) -> SlicePieces:
    """Major pieces of one slice (step 1 of the module docstring); ``border`` marks the
    pixels on the image's in-plane border (default: the array's own edge)."""
    sy, sx = spacing_yx
    comp, n = ndimage.label(mask2d, structure=_STRUCTURE_2D)
    areas = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    major = [int(i) for i in order if areas[i] >= min_branch_fraction * areas.sum()] or [int(order[0])]
    cy_cx = np.array(ndimage.center_of_mass(mask2d, comp, index=np.arange(1, n + 1)), dtype=float).reshape(n, 2)
    mm = cy_cx[:, ::-1] * (sx, sy)
    lookup = np.zeros(n + 1, dtype=np.int32)
    for i in range(n):
        lookup[i + 1] = 1 + int(np.argmin(np.linalg.norm(mm[major] - mm[i], axis=1)))
    return _labelled_pieces(lookup[comp], len(major), spacing_yx, border, int(n))


def _labelled_pieces(labels: np.ndarray, k: int, spacing_yx: Sequence[float], border: "np.ndarray | None",
                     components: int) -> SlicePieces:
    """The SlicePieces of a label image holding pieces 1..k by decreasing area (``border`` as in
    ``slice_pieces``)."""
    sy, sx = spacing_yx
    part_areas = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    centres = ndimage.center_of_mass(labels > 0, labels, index=np.arange(1, k + 1))
    if border is None:
        border = np.ones(labels.shape, dtype=bool)
        border[1:-1, 1:-1] = False
    on_border = np.bincount(labels[border], minlength=k + 1)[1:] > 0
    return SlicePieces(labels, [int(a) for a in part_areas], [(cx * sx, cy * sy) for cy, cx in centres],
                       [bool(b) for b in on_border], components)


def bridge_width(piece: np.ndarray, side_a: np.ndarray, side_b: np.ndarray) -> "int | None":
    """The fewest pixels of ``piece`` (2D bool) whose removal leaves no 8-connected path between
    its pixels inside ``side_a`` and its pixels inside ``side_b`` (the two branches' pieces on the
    adjacent slice; neither 8-adjacent to the other); None when it overlaps only one side. A
    minimum vertex cut: each pixel a node of capacity 1, computed as a maximum flow."""
    core_a, core_b = piece & side_a, piece & side_b
    if not core_a.any() or not core_b.any():
        return None
    ys, xs = np.nonzero(piece)
    n = len(ys)
    index = np.full(piece.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    big = n + 1
    rows, cols, caps = [np.arange(n) * 2], [np.arange(n) * 2 + 1], [np.ones(n, dtype=np.int64)]  # in -> out
    padded = np.pad(index, 1, constant_values=-1)
    h, w = piece.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            nb = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w][ys, xs]
            ok = nb >= 0
            rows.append(np.arange(n)[ok] * 2 + 1)        # out of this pixel -> into its neighbour
            cols.append(nb[ok] * 2)
            caps.append(np.full(int(ok.sum()), big, dtype=np.int64))
    source, sink = 2 * n, 2 * n + 1
    a, b = index[core_a], index[core_b]
    rows += [np.full(len(a), source), b * 2 + 1]
    cols += [a * 2, np.full(len(b), sink)]
    caps += [np.full(len(a), big, dtype=np.int64), np.full(len(b), big, dtype=np.int64)]
    graph = coo_matrix((np.concatenate(caps).astype(np.int32), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(2 * n + 2, 2 * n + 2)).tocsr()
    return int(maximum_flow(graph, source, sink).flow_value)


def _two_parts(piece: np.ndarray, side_a: np.ndarray, side_b: np.ndarray, spacing_yx: Sequence[float]) -> np.ndarray:
    """``piece`` as labels 1 and 2: each pixel to the side whose nearest pixel is nearer (ties: a)."""
    near_a = ndimage.distance_transform_edt(~side_a, sampling=spacing_yx)
    near_b = ndimage.distance_transform_edt(~side_b, sampling=spacing_yx)
    return np.where(piece, np.where(near_a <= near_b, 1, 2), 0)


def split_bridges(nerve_z: list, pieces: dict, spacing_yx: Sequence[float], max_pixels: "int | None",
                  border: "np.ndarray | None" = None) -> tuple:
    """Step 3's first part: the single-piece slices at each end of the stack next to a split
    slice, walked from the split side. A slice stays split when its piece touches both
    branches of the slice just walked (its two largest pieces) through a bridge of at most
    ``max_pixels`` pixels (``bridge_width``) and the next slice of the run does too, against
    the two parts of this one (each pixel to the branch whose piece is nearest): the last
    slice whose branches touch through a thin bridge before a wider contact is the junction
    and stays a trunk slice. A first slice whose piece overlaps one of the two branches only and
    holds less than TRUNK_AREA_FRACTION of the next slice's area is that branch alone (the other
    was missed there). Rewrites ``pieces`` in place; returns the slices holding one branch alone."""
    if max_pixels is None:
        return []
    split = [z for z in nerve_z if len(pieces[z].areas) >= 2]
    if not split:
        return []
    alone = []
    for run, before in (([z for z in nerve_z if z < split[0]][::-1], split[0]),
                        ([z for z in nerve_z if z > split[-1]], split[-1])):
        sides = (pieces[before].labels == 1, pieces[before].labels == 2)
        parts = []        # (slice, its piece split in two) while the bridges stay thin
        for z in run:
            if len(pieces[z].areas) != 1:
                break
            piece = pieces[z].labels == 1
            width = bridge_width(piece, *sides)
            if width is None and not parts and _one_branch_alone(pieces, run, piece, sides):
                alone.append(z)
            if width is None or width > max_pixels:
                break
            two = _two_parts(piece, *sides, spacing_yx)
            if not (two == 1).any() or not (two == 2).any():
                break
            parts.append((z, two))
            sides = (two == 1, two == 2)
        for z, two in parts[:-1]:          # the last thin contact before a wider one is the junction
            if (two == 2).sum() > (two == 1).sum():
                two = np.where(two > 0, 3 - two, 0)
            pieces[z] = _labelled_pieces(two.astype(pieces[z].labels.dtype), 2, spacing_yx, border,
                                         pieces[z].components)
    return sorted(alone)


def _one_branch_alone(pieces: dict, run: list, piece: np.ndarray, sides: tuple) -> bool:
    """The run's first slice (next to the split slice) holds one branch alone, the other missed
    there: its piece overlaps one of the split slice's branches (``sides``; not both) and holds
    less than TRUNK_AREA_FRACTION of the area of the run's next slice, a single piece too."""
    if len(run) < 2 or len(pieces[run[1]].areas) != 1:
        return False
    return bool((piece & (sides[0] | sides[1])).any()) and \
        pieces[run[0]].areas[0] < TRUNK_AREA_FRACTION * pieces[run[1]].areas[0]


def overlaps(prev: SlicePieces, i: int, nxt: SlicePieces) -> np.ndarray:
    """Pixels of each piece of ``nxt`` inside piece ``i`` of ``prev`` grown by one pixel."""
    grown = ndimage.binary_dilation(prev.labels == i + 1, _STRUCTURE_2D)
    return np.bincount(nxt.labels[grown], minlength=len(nxt.areas) + 1)[1:]


def linked(prev: SlicePieces, i: int, nxt: SlicePieces, pixel_area: float) -> list:
    """Pieces of ``nxt`` that continue piece ``i`` of ``prev``: overlapping it (``overlaps``)
    or facing it (centroids within the equivalent radii plus REAPPEAR_TOLERANCE_MM)."""
    over = overlaps(prev, i, nxt)
    reach = prev.radius(i, pixel_area) + REAPPEAR_TOLERANCE_MM
    return [j for j in range(len(nxt.areas))
            if over[j] > 0 or math.dist(prev.centroids[i], nxt.centroids[j]) <= reach + nxt.radius(j, pixel_area)]


@dataclass
class NerveParts:
    """The result: part labels per voxel (``PART_LABELS``), the region of every slice, the
    naming rule used (``lateral``, ``volume``, or None without branches), where the trunk
    is (``first slices``, ``last slices``, ``whole nerve`` or None) and each branch's events."""

    labels: np.ndarray
    regions: list
    components: list
    naming: "str | None"
    trunk: "str | None"
    events: dict = field(default_factory=dict)


def _trunk_side(nerve_z: list, pieces: dict, pixel_area: float, alone: Sequence[int] = ()) -> "str | None":
    """'low', 'high', 'all' (no split slice) or None (no trunk): step 3. Slices in ``alone``
    hold one branch (``split_bridges``): they end the trunk like a split slice, and the trunk
    continuing into that branch is a junction."""
    split = [z for z in nerve_z if len(pieces[z].areas) >= 2 or z in alone]
    if not split:
        return "all" if nerve_z else None
    runs = {"low": ([z for z in nerve_z if z < split[0]], split[0], -1),
            "high": ([z for z in nerve_z if z > split[-1]], split[-1], 0)}

    def junction(side):
        run, first_split, end = runs[side]
        need = 1 if first_split in alone else 2
        return bool(run) and len(linked(pieces[run[end]], 0, pieces[first_split], pixel_area)) >= need

    def most_area(side):
        run, first_split, end = runs[side]
        return bool(run) and pieces[run[end]].areas[0] >= TRUNK_AREA_FRACTION * sum(pieces[first_split].areas)

    for test in (junction, most_area):
        sides = [s for s in ("low", "high") if test(s)]
        if sides:
            return max(sides, key=lambda s: len(runs[s][0]))   # max keeps the first of equals: "low"
    return None


@dataclass
class _Branch:
    last: "tuple | None" = None          # (z, piece) holding the branch in the last slice where it was seen
    centroid: "tuple | None" = None      # its last separate centroid (x_mm, y_mm)
    radius: float = 0.0


class _Walk:
    """Step 4 over the nerve slices in walking order; ``assign[z][i]`` ends as _TRUNK, 0, 1,
    _MERGED or None (left over) for every major piece."""

    def __init__(self, pieces: dict, pixel_area: float, alone: Sequence[int] = ()):
        self.pieces = pieces
        self.alone = set(alone)
        self.pixel_area = pixel_area
        self.assign = {z: [None] * len(p.areas) for z, p in pieces.items()}
        self.branches = [_Branch(), _Branch()]
        self.trunk_last = None

    def take(self, z: int, i: int, who) -> None:
        self.assign[z][i] = who
        if who in (0, 1):
            p = self.pieces[z]
            self.branches[who] = _Branch((z, i), p.centroids[i], p.radius(i, self.pixel_area))

    def _last_area(self, who: int) -> int:
        last_z, last_i = self.branches[who].last
        return self.pieces[last_z].areas[last_i]

    def trunk_slice(self, z: int) -> bool:
        """Continue the trunk into slice z; False once the branches start here."""
        p = self.pieces[z]
        if z in self.alone and self.trunk_last is not None:     # one branch, the other missed here
            self.take(z, 0, 0)
            return False
        if self.trunk_last is None or len(p.areas) == 1:
            self.assign[z][0] = _TRUNK
            self.trunk_last = (z, 0)
            return True
        children = linked(self.pieces[self.trunk_last[0]], self.trunk_last[1], p, self.pixel_area)
        if len(children) == 1:
            self.assign[z][children[0]] = _TRUNK
            self.trunk_last = (z, children[0])
            return True
        children = children or list(range(len(p.areas)))   # pieces are sorted by area
        self.take(z, children[0], 0)
        self.take(z, children[1], 1)
        return False

    def branch_slice(self, z: int) -> None:
        p = self.pieces[z]
        n = len(p.areas)
        started = [b.last is not None for b in self.branches]
        if not any(started):
            for who, i in zip((0, 1), range(min(n, 2))):
                self.take(z, i, who)
            return
        over = np.zeros((n, 2))
        for who in (0, 1):
            if started[who]:
                last_z, last_i = self.branches[who].last
                over[:, who] = overlaps(self.pieces[last_z], last_i, p)
        pair = self._best_pair(p, over)
        merged = [pair[1 - who] for who in (0, 1) if pair[who] is None and started[who]
                  and pair[1 - who] is not None and over[pair[1 - who], who] >= MERGED_OVERLAP * self._last_area(who)]
        if merged:      # one piece holds both branches; their last separate centroids are kept
            self.assign[z][merged[0]] = _MERGED
            for b in self.branches:
                b.last = (z, merged[0])
        else:
            for who, i in enumerate(pair):
                if i is not None:
                    self.take(z, i, who)
        self._reappear(z, pair, started)
        if all(a is None for a in self.assign[z]):
            # nothing continues: the largest piece goes to the branch seen nearest to it
            near = [math.dist(p.centroids[0], b.centroid) if b.centroid else math.inf for b in self.branches]
            self.take(z, 0, int(np.argmin(near)))

    def _best_pair(self, p: SlicePieces, over: np.ndarray) -> tuple:
        n = len(p.areas)
        options = [None, *range(n)]
        best, best_key = (None, None), (0.0, 0.0)
        for a in options:
            for b in options:
                if a is not None and a == b:
                    continue
                if (a is not None and over[a, 0] == 0) or (b is not None and over[b, 1] == 0):
                    continue
                score = (over[a, 0] if a is not None else 0.0) + (over[b, 1] if b is not None else 0.0)
                distance = sum(math.dist(p.centroids[i], self.branches[who].centroid)
                               for who, i in ((0, a), (1, b)) if i is not None and self.branches[who].centroid)
                key = (score, -distance)
                if score > 0 and key > best_key:
                    best, best_key = (a, b), key
        return best

    def _reappear(self, z: int, pair: tuple, started: list) -> None:
        p = self.pieces[z]
        absent = [who for who in (0, 1) if pair[who] is None and started[who] and _MERGED not in self.assign[z]]
        if not started[1] and started[0]:
            absent.append(1)           # no trunk: the second branch starts in the first left-over piece
        candidates = []
        for who in absent:
            b = self.branches[who]
            for i in range(len(p.areas)):
                if self.assign[z][i] is not None:
                    continue
                if b.centroid is None:
                    candidates.append((0.0, who, i))
                    continue
                d = math.dist(p.centroids[i], b.centroid)
                if d <= p.radius(i, self.pixel_area) + b.radius + REAPPEAR_TOLERANCE_MM:
                    candidates.append((d, who, i))
        for _, who, i in sorted(candidates):
            if self.assign[z][i] is None and who not in self.assign[z]:
                self.take(z, i, who)


def nerve_parts(mask: np.ndarray, spacing_zyx: Sequence[float], lateral_xy: "Sequence[float] | None" = None,
                min_branch_fraction: float = DEFAULT_MIN_BRANCH_FRACTION,
                border: "np.ndarray | None" = None) -> NerveParts:
    """Trunk and branches of a binary mask (z, y, x); see the module docstring. ``border``
    (y, x) marks the image's in-plane border when ``mask`` is a crop of the image."""
    sz, sy, sx = (float(s) for s in spacing_zyx)
    nz = mask.shape[0]
    nerve_z = [int(z) for z in np.flatnonzero(mask.reshape(nz, -1).any(axis=1))]
    pieces = {z: slice_pieces(mask[z], (sy, sx), min_branch_fraction, border) for z in nerve_z}
    alone = split_bridges(nerve_z, pieces, (sy, sx), BRIDGE_MAX_PIXELS, border)
    walk = _Walk(pieces, sy * sx, alone)
    side = _trunk_side(nerve_z, pieces, sy * sx, alone)
    in_trunk = side in ("low", "high", "all")
    order = nerve_z[::-1] if side == "high" else nerve_z
    walked = []
    for z in order:
        walked.append(z)
        if in_trunk:
            in_trunk = walk.trunk_slice(z)
        else:
            walk.branch_slice(z)
    names = _names(walk, pieces, nerve_z, lateral_xy)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    regions = ["none"] * nz
    for z in nerve_z:
        parts = _parts_of_slice(walk.assign[z], pieces[z], names)
        lookup = np.array([0] + [PART_LABELS[name] for name in parts], dtype=np.uint8)
        labels[z] = lookup[pieces[z].labels]
        regions[z] = _region(set(parts))
    trunk = {"low": "first slices", "high": "last slices", "all": "whole nerve"}.get(side)
    naming = (("lateral" if lateral_xy is not None else "volume")
              if any(r in ("split", "tibial", "peroneal", "merged") for r in regions) else None)
    events = _events(walk, pieces, walked, names) if naming else {}
    return NerveParts(labels, regions, [pieces[z].components if z in pieces else 0 for z in range(nz)],
                      naming, trunk, events)


def _names(walk: _Walk, pieces: dict, nerve_z: list, lateral_xy) -> dict:
    """{0: name, 1: name}: step 5."""
    both = [z for z in nerve_z if 0 in walk.assign[z] and 1 in walk.assign[z]]

    def of(who, zs):
        return [(pieces[z].centroids[walk.assign[z].index(who)], pieces[z].areas[walk.assign[z].index(who)])
                for z in zs if who in walk.assign[z]]

    own = [of(who, both or nerve_z) for who in (0, 1)]
    if lateral_xy is not None:
        lat = np.asarray(lateral_xy, dtype=float)
        score = [np.mean([np.dot(c, lat) for c, _ in own[who]]) if own[who] else -math.inf for who in (0, 1)]
        peroneal = int(np.argmax(score))
    else:
        volume = [sum(a for _, a in own[who]) if own[who] else math.inf for who in (0, 1)]
        if not both:   # never side by side: compare mean areas
            volume = [v / max(len(own[who]), 1) for who, v in enumerate(volume)]
        peroneal = int(np.argmin(volume)) if volume[0] != volume[1] else 1
    return {peroneal: "peroneal", 1 - peroneal: "tibial"}


def _parts_of_slice(assign: list, p: SlicePieces, names: dict) -> list:
    """Part name per major piece; left-over pieces take the part with the nearest centroid."""
    named = [("sciatic" if a == _TRUNK else "merged" if a == _MERGED else names[a] if a in (0, 1) else None)
             for a in assign]
    known = [i for i, name in enumerate(named) if name is not None]
    for i, name in enumerate(named):
        if name is None:
            nearest = min(known, key=lambda k: math.dist(p.centroids[i], p.centroids[k]))
            named[i] = named[nearest]
    return named


def _region(parts: set) -> str:
    if "sciatic" in parts:
        return "sciatic"
    if "merged" in parts:
        return "merged"
    if set(BRANCHES) <= parts:
        return "split"
    return next(iter(parts))


def _ranges(values: list) -> list:
    """Runs of consecutive integers as [first, last] pairs."""
    out = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _events(walk: _Walk, pieces: dict, walked: list, names: dict) -> dict:
    """Per branch name: merges, missing stretches, and how it ends (module docstring)."""
    events = {}
    for who, name in names.items():
        seen = [z for z in walked if who in walk.assign[z]]
        merged = [z for z in walked if _MERGED in walk.assign[z]]
        present = set(seen) | set(merged)
        out = [{"event": "merged with the other branch", "first_slice": a, "last_slice": b}
               for a, b in _ranges(merged)]
        if seen:
            start = walked.index(min(present, key=walked.index))
            stop = walked.index(max(present, key=walked.index))
            missing = [z for z in walked[start:stop + 1] if z not in present]
            out += [{"event": "missing", "first_slice": a, "last_slice": b} for a, b in _ranges(missing)]
            last = walked[stop]
            if stop < len(walked) - 1:
                i = walk.assign[last].index(who) if who in walk.assign[last] else walk.assign[last].index(_MERGED)
                leaves = pieces[last].on_border[i]
                out.append({"event": "leaves the field of view" if leaves else "ends inside the field of view",
                            "last_slice": last})
        events[name] = sorted(out, key=lambda e: e.get("first_slice", e.get("last_slice")))
    return events
