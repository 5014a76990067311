"""Triangles of the MediaPipe face-mesh topology, rebuilt from the wheel's edge list.

The mediapipe wheel carries no triangle list, only ``FACEMESH_TESSELATION`` (a frozenset of
directed edges). In the wheel's source file that set is written as a literal list in which every
three consecutive edges ``(a, b), (b, c), (c, a)`` are one triangle, counter-clockwise seen from
outside; :func:`tessellation_triangles` reads that order (852 triangles over the 468 points). When
the literal cannot be read it falls back to the 3-cliques of the edge graph that form a manifold.

The tessellation leaves the eye openings and the mouth open; :func:`cap_triangles` closes them
with zig-zag strips between the upper and lower contour (14 + 14 + 18 triangles, which gives the
898 triangles of MediaPipe's canonical model), and adds a 4-triangle fan per iris (468-477).
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict

import numpy as np

N_MESH = 468
N_WITH_IRIS = 478

# inner lip loop, upper then lower, from the right corner (78) to the left corner (308)
INNER_LIP_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LIP_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_LIP_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LIP_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
# eye openings (subject's right eye = image left = -x: 33 outer .. 133 inner)
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [362, 398, 384, 385, 386, 387, 388, 466, 263]
LEFT_EYE_LOWER = [362, 382, 381, 380, 374, 373, 390, 249, 263]
# irises: centre, then the 4 ring points
RIGHT_IRIS = [468, 469, 470, 471, 472]
LEFT_IRIS = [473, 474, 475, 476, 477]


def _edge_key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def tessellation_edges() -> set[tuple[int, int]]:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    return {_edge_key(a, b) for a, b in fmc.FACEMESH_TESSELATION}


def tessellation_triangles() -> np.ndarray:
    """(852, 3) int64 triangles of the 468-point mesh, from ``FACEMESH_TESSELATION``."""
    tris = _triangles_from_source_order()
    if tris is None:
        tris = triangles_from_cliques(tessellation_edges())
    return tris


def _triangles_from_source_order() -> np.ndarray | None:
    try:
        from mediapipe.python.solutions import face_mesh_connections as fmc

        with open(fmc.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        lst = None
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "FACEMESH_TESSELATION"
                and isinstance(node.value, ast.Call)
            ):
                lst = ast.literal_eval(node.value.args[0])
        if lst is None or len(lst) % 3:
            return None
        tris = []
        for i in range(0, len(lst), 3):
            (a, b), (b2, c), (c2, a2) = lst[i], lst[i + 1], lst[i + 2]
            if not (b == b2 and c == c2 and a == a2):
                return None
            tris.append((a, b, c))
        if {_edge_key(*e) for e in fmc.FACEMESH_TESSELATION} != edges_of(np.array(tris)):
            return None
        return np.array(tris, dtype=np.int64)
    except Exception:  # pragma: no cover - depends on the wheel's source layout
        return None


def triangles_from_cliques(edges: set[tuple[int, int]]) -> np.ndarray:
    """Triangles as 3-cliques of an edge graph, keeping each edge in at most 2 triangles.

    Cliques are accepted in sorted order while all three edges are still used by fewer than two
    accepted triangles (deterministic; a fallback only). Unoriented: use
    :func:`orient_consistently` afterwards.
    """
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    cliques = set()
    for a, b in edges:
        for c in adj[a] & adj[b]:
            cliques.add(tuple(sorted((a, b, c))))
    use: Counter = Counter()
    out = []
    for t in sorted(cliques):
        es = [_edge_key(t[0], t[1]), _edge_key(t[1], t[2]), _edge_key(t[0], t[2])]
        if all(use[e] < 2 for e in es):
            out.append(t)
            for e in es:
                use[e] += 1
    return np.array(out, dtype=np.int64)


def edges_of(faces: np.ndarray) -> set[tuple[int, int]]:
    return {_edge_key(int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3)}


def edge_use(faces: np.ndarray) -> Counter:
    return Counter(_edge_key(int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))


def boundary_edges(faces: np.ndarray) -> list[tuple[int, int]]:
    return sorted(e for e, k in edge_use(faces).items() if k == 1)


def non_manifold_edges(faces: np.ndarray) -> list[tuple[int, int]]:
    return sorted(e for e, k in edge_use(faces).items() if k > 2)


def is_consistently_oriented(faces: np.ndarray) -> bool:
    """Every directed edge is used at most once (interior edges once in each direction)."""
    directed = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))
    return max(directed.values()) == 1


def orient_consistently(faces: np.ndarray, vertices: np.ndarray | None = None) -> np.ndarray:
    """Flip triangles so that neighbours agree (BFS per connected piece); each piece is then
    turned so that its area-weighted normal points to +z when ``vertices`` are given."""
    faces = np.array(faces, dtype=np.int64).copy()
    e2f: dict[tuple[int, int], list[int]] = defaultdict(list)
    for fi, f in enumerate(faces):
        for i in range(3):
            e2f[_edge_key(int(f[i]), int(f[(i + 1) % 3]))].append(fi)
    seen = np.zeros(len(faces), bool)
    for start in range(len(faces)):
        if seen[start]:
            continue
        comp = [start]
        seen[start] = True
        queue = [start]
        while queue:
            fi = queue.pop()
            f = faces[fi]
            for i in range(3):
                a, b = int(f[i]), int(f[(i + 1) % 3])
                for nj in e2f[_edge_key(a, b)]:
                    if nj == fi or seen[nj]:
                        continue
                    g = faces[nj]
                    # neighbour must traverse the shared edge as (b, a)
                    same = any(int(g[k]) == a and int(g[(k + 1) % 3]) == b for k in range(3))
                    if same:
                        faces[nj] = g[::-1]
                    seen[nj] = True
                    comp.append(nj)
                    queue.append(nj)
        if vertices is not None:
            v = vertices[faces[comp]]
            n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).sum(0)
            if n[2] < 0:
                faces[comp] = faces[comp][:, ::-1]
    return faces


def zigzag_strip(upper: list[int], lower: list[int]) -> np.ndarray:
    """Close the opening between two chains that share their first point (a corner).

    A strip that alternates strictly between the chains, advancing along ``upper`` first, until
    both chains end (at a shared corner, or at a final 'rung' edge upper[-1]-lower[-1]). This is
    the pattern of MediaPipe's canonical caps when eye chains start at the medial corner and the
    mouth is closed from both corners towards the rung 13-14. Unoriented."""
    assert upper[0] == lower[0]
    tris = [(upper[0], lower[1], upper[1])]
    i, j = 1, 1  # current indices on upper / lower
    turn_upper = True
    while i < len(upper) - 1 or j < len(lower) - 1:
        adv_u = (turn_upper and i < len(upper) - 1) or j >= len(lower) - 1
        if adv_u:
            tris.append((upper[i], lower[j], upper[i + 1]))
            i += 1
        else:
            tris.append((upper[i], lower[j], lower[j + 1]))
            j += 1
        turn_upper = not turn_upper
    return np.array([t for t in tris if len(set(t)) == 3], dtype=np.int64)


def iris_fan(iris: list[int]) -> np.ndarray:
    c, ring = iris[0], iris[1:]
    return np.array([(c, ring[k], ring[(k + 1) % 4]) for k in range(4)], dtype=np.int64)


def cap_triangles(vertices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Cap triangles by part: mouth (inner-lip loop), right/left eye opening, right/left iris.

    Unoriented unless ``vertices`` are given (then each faces +z, see :func:`orient_like`)."""
    caps = {
        # mouth: from each corner to the central rung 13-14 (mirror-symmetric)
        "mouth": np.concatenate(
            [
                zigzag_strip(INNER_LIP_UPPER[:6], INNER_LIP_LOWER[:6]),
                zigzag_strip(INNER_LIP_UPPER[5:][::-1], INNER_LIP_LOWER[5:][::-1]),
            ]
        ),
        # eyes walk from the inner (medial) corner to the outer one
        "eye_right": zigzag_strip(RIGHT_EYE_UPPER[::-1], RIGHT_EYE_LOWER[::-1]),
        "eye_left": zigzag_strip(LEFT_EYE_UPPER, LEFT_EYE_LOWER),
        "iris_right": iris_fan(RIGHT_IRIS),
        "iris_left": iris_fan(LEFT_IRIS),
    }
    if vertices is not None:
        caps = {k: orient_like(v, vertices) for k, v in caps.items()}
    return caps


def orient_like(faces: np.ndarray, vertices: np.ndarray, direction=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Flip each triangle whose normal points away from ``direction`` (for detached caps/fans)."""
    faces = faces.copy()
    v = vertices[faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    flip = n @ np.asarray(direction) < 0
    faces[flip] = faces[flip][:, ::-1]
    return faces


def mirror_correspondence(vertices: np.ndarray, max_dist: float | None = None) -> np.ndarray:
    """For each vertex, the index of its left/right mirror partner (x -> -x), by a one-to-one
    assignment (Hungarian) between the points and their mirror images. Points on the midline
    map to themselves. ``vertices`` should be roughly symmetric about x = 0."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    m = vertices * np.array([-1.0, 1.0, 1.0])
    d = cdist(vertices, m)
    r, c = linear_sum_assignment(d)
    out = np.empty(len(vertices), dtype=np.int64)
    out[r] = c
    return out


def loop_vertices(pairs) -> list[int]:
    return sorted({int(v) for e in pairs for v in e})


__all__ = [
    "N_MESH",
    "N_WITH_IRIS",
    "boundary_edges",
    "cap_triangles",
    "edge_use",
    "edges_of",
    "is_consistently_oriented",
    "iris_fan",
    "mirror_correspondence",
    "non_manifold_edges",
    "orient_consistently",
    "orient_like",
    "tessellation_edges",
    "tessellation_triangles",
    "triangles_from_cliques",
    "zigzag_strip",
]
