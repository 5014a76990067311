"""Named index sets of the MediaPipe face mesh (478 points: 468 mesh + 10 iris), as plain data.

Importing this module does not import mediapipe. The contours are the edge lists of the mediapipe
wheel's ``mediapipe/python/solutions/face_mesh_connections.py`` (``FACEMESH_FACE_OVAL``, ``_LIPS``,
``_LEFT_EYE`` ...) rewritten as ordered index loops; ``tests/detect/test_landmark_sets.py`` checks that
the loops reproduce those edge lists exactly.

**Left / right.** MediaPipe names sides from the *subject's* point of view, like this module and
facerig's model space (x = subject's left): ``LEFT_EYE`` is the subject's left eye, which appears on
the **image right** in a frontal, unmirrored photo (larger x). ``RIGHT_EYE`` (33 ... 133) is on the
image left. Checked on ``skimage.data.astronaut()``: point 33 at x = 195 px, point 263 at x = 256 px.

Loop orientation: every loop starts at a named point and lists the points in order; consecutive
points (and last -> first for closed loops) are mesh edges. Every LEFT_* loop is the mirror image of
the RIGHT_* loop point for point (checked against MediaPipe's canonical face model).

* FACE_OVAL: from 10 (top of the forehead, on the midline) over the image-right side (subject's
  left) down to 152 (chin) and back up the image-left side.
* LIPS_OUTER / LIPS_INNER: from the image-left mouth corner (61 / 78) along the upper lip to the
  image-right corner (291 / 308), back along the lower lip.
* RIGHT_EYE / LEFT_EYE: from the outer corner (33 / 263) along the upper lid to the inner corner
  (133 / 362), back along the lower lid.
* RIGHT_BROW / LEFT_BROW: closed outline, outer end -> inner end along the upper edge, back along the
  lower edge (the wheel's edge lists hold the two edges as separate chains, without the end links).
* RIGHT_IRIS / LEFT_IRIS: the 4 iris ring points, inner, top, outer, bottom (centres: 468 / 473).
* NOSE: outline of the lower nose (tip, alae, base) starting at 4 (closed);
  NOSE_MIDLINE: nasion 168 down the bridge to the tip (1) and the columella to 2 (open).

**iBUG-68.** ``IBUG68`` gives, for each of the 68 iBUG / Multi-PIE / dlib points (0-based, in that
scheme's order), one MediaPipe index. It is the commonly used single-index correspondence (jaw from
the face-oval points, brows, nose bridge 168/197/5/4, nose base 98/97/2/326/327, eye corners 33/133
and 362/263 with two points on each lid, mouth corners 61/291, ...). It is an approximation: the
MediaPipe oval and iBUG's jaw are not the same curve (iBUG 0/16 lie at ear level, MediaPipe's
127/356 near it), so use it for crops, 68-point metrics and coarse alignment, not as ground truth.
It is mirror-symmetric: ``IBUG68[i]`` and ``IBUG68[IBUG68_MIRROR[i]]`` are mirror points of the mesh.
"""

from __future__ import annotations

NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468

# ---- single points -------------------------------------------------------------------------
NOSE_TIP = 1
NOSE_BRIDGE_TOP = 168  # nasion, between the eyes
CHIN = 152
FOREHEAD_TOP = 10
UPPER_LIP_TOP = 0
LOWER_LIP_BOTTOM = 17
# eye corners (subject's right eye is on the image left)
RIGHT_EYE_OUTER = 33
RIGHT_EYE_INNER = 133
LEFT_EYE_INNER = 362
LEFT_EYE_OUTER = 263
# mouth corners (outer lip contour): 61 on the image left (subject's right), 291 image right
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
# iris centres (only with refine_landmarks=True)
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473

# ---- contours ------------------------------------------------------------------------------
FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
LIPS_OUTER: tuple[int, ...] = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
)
LIPS_INNER: tuple[int, ...] = (
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)
RIGHT_EYE: tuple[int, ...] = (
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
)
LEFT_EYE: tuple[int, ...] = (
    263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249,
)
RIGHT_BROW: tuple[int, ...] = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW: tuple[int, ...] = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
RIGHT_IRIS: tuple[int, ...] = (469, 470, 471, 472)
LEFT_IRIS: tuple[int, ...] = (476, 475, 474, 477)
NOSE: tuple[int, ...] = (4, 45, 220, 115, 48, 64, 98, 97, 2, 326, 327, 294, 278, 344, 440, 275)
NOSE_MIDLINE: tuple[int, ...] = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2)

# name -> (indices, closed)
CONTOURS: dict[str, tuple[tuple[int, ...], bool]] = {
    "face_oval": (FACE_OVAL, True),
    "lips_outer": (LIPS_OUTER, True),
    "lips_inner": (LIPS_INNER, True),
    "right_eye": (RIGHT_EYE, True),
    "left_eye": (LEFT_EYE, True),
    "right_brow": (RIGHT_BROW, True),
    "left_brow": (LEFT_BROW, True),
    "right_iris": (RIGHT_IRIS, True),
    "left_iris": (LEFT_IRIS, True),
    "nose": (NOSE, True),
    "nose_midline": (NOSE_MIDLINE, False),
}

# ---- iBUG 68 -------------------------------------------------------------------------------
IBUG68_JAW = (127, 234, 93, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 323, 454, 356)
IBUG68_RIGHT_BROW = (70, 63, 105, 66, 107)  # iBUG 17-21, image left
IBUG68_LEFT_BROW = (336, 296, 334, 293, 300)  # iBUG 22-26, image right
IBUG68_NOSE_BRIDGE = (168, 197, 5, 4)  # iBUG 27-30
IBUG68_NOSE_BASE = (98, 97, 2, 326, 327)  # iBUG 31-35
IBUG68_RIGHT_EYE = (33, 160, 158, 133, 153, 144)  # iBUG 36-41
IBUG68_LEFT_EYE = (362, 385, 387, 263, 373, 380)  # iBUG 42-47
IBUG68_MOUTH_OUTER = (61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91)  # iBUG 48-59
IBUG68_MOUTH_INNER = (78, 82, 13, 312, 308, 317, 14, 87)  # iBUG 60-67

IBUG68: tuple[int, ...] = (
    IBUG68_JAW + IBUG68_RIGHT_BROW + IBUG68_LEFT_BROW + IBUG68_NOSE_BRIDGE + IBUG68_NOSE_BASE
    + IBUG68_RIGHT_EYE + IBUG68_LEFT_EYE + IBUG68_MOUTH_OUTER + IBUG68_MOUTH_INNER
)

# slices of the 68-point scheme
IBUG68_SLICES: dict[str, slice] = {
    "jaw": slice(0, 17),
    "right_brow": slice(17, 22),
    "left_brow": slice(22, 27),
    "nose_bridge": slice(27, 31),
    "nose_base": slice(31, 36),
    "right_eye": slice(36, 42),
    "left_eye": slice(42, 48),
    "mouth_outer": slice(48, 60),
    "mouth_inner": slice(60, 68),
}

# the mirror of each iBUG-68 point (standard horizontal-flip permutation of the 68 scheme)
IBUG68_MIRROR: tuple[int, ...] = (
    tuple(range(16, -1, -1))
    + tuple(range(26, 16, -1))
    + (27, 28, 29, 30)
    + (35, 34, 33, 32, 31)
    + (45, 44, 43, 42, 47, 46)
    + (39, 38, 37, 36, 41, 40)
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)
    + (64, 63, 62, 61, 60, 67, 66, 65)
)

# 5 points for ArcFace / insightface alignment, in the template's order: eye on the image left
# (subject's right), eye on the image right, nose tip, mouth corner image left, image right.
FIVE_POINTS: tuple[int, ...] = (RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER, NOSE_TIP, MOUTH_RIGHT, MOUTH_LEFT)


def loop_edges(indices: tuple[int, ...], closed: bool = True) -> set[tuple[int, int]]:
    """Undirected edges ``(min, max)`` of an ordered index loop (or open chain)."""
    pairs = list(zip(indices[:-1], indices[1:], strict=True))
    if closed and len(indices) > 2:
        pairs.append((indices[-1], indices[0]))
    return {(min(a, b), max(a, b)) for a, b in pairs}
