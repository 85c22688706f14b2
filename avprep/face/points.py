"""Named indices into MediaPipe's 478-point face mesh, and its mapping to the 68-point iBUG layout.

The 68-point map (iBUG 300-W order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips
60-67) picks, for each iBUG point, the mesh vertex at the same anatomical place; it was checked by drawing both on
real faces (``avprep inspect`` draws it). Jaw ends 0 and 16 sit at the temples beside the eyes, where the mesh ends.
"""
import numpy as np

MESH_POINTS = 478  # 468 face vertices + 10 iris points (refine_landmarks)

IBUG68 = np.array([
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
])  # fmt: skip

LEFT_EYE_RING = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])  # image left
RIGHT_EYE_RING = np.array([362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398])
LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS = np.array([33, 133]), np.array([362, 263])
NOSE_BRIDGE = 168
LEFT_TEMPLE, RIGHT_TEMPLE = 127, 356
MOUTH_LEFT, MOUTH_RIGHT, UPPER_LIP_INNER, LOWER_LIP_INNER = 61, 291, 13, 14
FOREHEAD, CHIN = 10, 152


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left and image-right eye rings (works on (..., 478, d) arrays)."""
    return points[..., LEFT_EYE_RING, :].mean(axis=-2), points[..., RIGHT_EYE_RING, :].mean(axis=-2)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over mouth width: 0 closed, about 0.3-0.5 wide open; scale and rotation free."""
    gap = np.linalg.norm(points[..., UPPER_LIP_INNER, :2] - points[..., LOWER_LIP_INNER, :2], axis=-1)
    width = np.linalg.norm(points[..., MOUTH_LEFT, :2] - points[..., MOUTH_RIGHT, :2], axis=-1)
    return gap / np.maximum(width, 1e-6)
