"""Synthetic test media: talking-head videos made from real face photos, with ground truth.

Everything here is built from files that ship inside installed dependencies (scikit-image and
insightface sample photos) and the ffmpeg binary, so tests and demos need no downloads.
"""
from avprep.synth.catalogue import make_bad_catalogue, make_demo_corpus
from avprep.synth.faces import IDENTITIES, LANDMARK_NAMES, Face, load_face
from avprep.synth.speech import synth_speech
from avprep.synth.talking_head import make_talking_head

__all__ = [
    "IDENTITIES",
    "LANDMARK_NAMES",
    "Face",
    "load_face",
    "make_bad_catalogue",
    "make_demo_corpus",
    "make_talking_head",
    "synth_speech",
]
