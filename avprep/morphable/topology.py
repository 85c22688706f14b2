"""Triangles of MediaPipe's 468-vertex face mesh, recovered from the edge list MediaPipe ships.

``FACEMESH_TESSELATION`` holds the mesh's edges, not its faces. Every face is a 3-clique of the edge graph, but
a vertex with only three neighbours also closes a false clique over its neighbours (two such spots lie on the
sides of the nose); those are the cliques whose three edges are each claimed by more than two cliques. What remains is a
manifold surface of 852 triangles with four boundary loops: the outline of the face, both eyes and the inner
lips. (MediaPipe's canonical_face_model.obj has 898: it also closes the eyes and the mouth with 46 triangles whose
edges the tesselation leaves out, so here the eyes and an open mouth stay holes.)
"""
from __future__ import annotations

import itertools
from collections import defaultdict, deque

import numpy as np

FACE_VERTICES = 468  # the mesh without the 10 iris points


def face_triangles(reference: np.ndarray) -> np.ndarray:
    """(F, 3) int32 triangles, wound alike and so that most normals of ``reference`` (468, 3) face the camera.

    MediaPipe's depth grows away from the camera, so a triangle faces it when its normal has negative z, that
    is when its signed area ``(b - a) x (c - a)`` in image pixels (y down) is negative.
    """
    triangles = _orient_alike(_surface_triangles(tesselation_edges()))
    if np.mean(signed_areas(reference, triangles) < 0) < 0.5:
        triangles = triangles[:, ::-1]
    return np.ascontiguousarray(triangles, dtype=np.int32)


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Twice the signed image-plane area of each triangle (the z of its unnormalised normal)."""
    a, b, c = (points[triangles[:, k], :2] for k in range(3))
    ab, ac = b - a, c - a
    return ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]


def tesselation_edges() -> set[tuple[int, int]]:
    """MediaPipe's face mesh edges as (low, high) vertex pairs."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return {(min(a, b), max(a, b)) for a, b in FACEMESH_TESSELATION}


def _surface_triangles(edges: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The 3-cliques of the edge graph that are faces, checked to form a manifold (no edge in 3 triangles)."""
    neighbours = defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]})
    uses = _edge_uses(cliques)
    faces = [t for t in cliques if min(uses[e] for e in _edges_of(t)) <= 2]
    if max(_edge_uses(faces).values()) > 2:
        raise ValueError("the face mesh tesselation does not form a manifold surface")
    return faces


def _edges_of(triangle) -> list[tuple[int, int]]:
    return [(min(a, b), max(a, b)) for a, b in itertools.combinations(triangle, 2)]


def _edge_uses(triangles) -> dict[tuple[int, int], int]:
    uses = defaultdict(int)
    for triangle in triangles:
        for edge in _edges_of(triangle):
            uses[edge] += 1
    return uses


def _orient_alike(triangles: list[tuple[int, int, int]]) -> np.ndarray:
    """Wind every triangle like its neighbours: a shared edge is walked in opposite directions by its two faces.

    A breadth-first walk from the first triangle flips each newly reached neighbour that walks the shared edge
    the same way; the mesh must be connected and orientable.
    """
    wound = np.array(triangles)
    by_edge = defaultdict(list)
    for index, triangle in enumerate(triangles):
        for edge in _edges_of(triangle):
            by_edge[edge].append(index)
    reached = np.zeros(len(wound), dtype=bool)
    reached[0] = True
    queue = deque([0])
    while queue:
        current = queue.popleft()
        for a, b in _directed_edges(wound[current]):
            for other in by_edge[(min(a, b), max(a, b))]:
                if other == current:
                    continue
                same_way = (a, b) in _directed_edges(wound[other])
                if not reached[other]:
                    if same_way:
                        wound[other] = wound[other][::-1]
                    reached[other] = True
                    queue.append(other)
                elif same_way:
                    raise ValueError("the face mesh is not orientable")
    if not reached.all():
        raise ValueError("the face mesh is not connected")
    return wound


def _directed_edges(triangle) -> list[tuple[int, int]]:
    a, b, c = (int(v) for v in triangle)
    return [(a, b), (b, c), (c, a)]
