"""The papers' measures, each by its paper's protocol (docs/evaluation.md): image and clip measures
(``images``), face measures with real pretrained models (``faces``) and audio-visual sync (``sync``).

Every method's ``evaluate`` reports a measure beside its value on the real data of the same split (the ceiling).
"""
from avmodels.metrics.faces import (
                                    MissingModels,
                                    SpeakerProbe,
                                    aed,
                                    akd,
                                    dlib_detectability,
                                    face_descriptors,
                                    face_detectability,
                                    face_meshes,
                                    identity_accuracy,
                                    identity_similarity,
                                    landmarks68,
                                    lmd,
                                    speaker_identification,
)
from avmodels.metrics.images import cpbd, psnr, psnr_release, ssim
from avmodels.metrics.sync import sync_offset

__all__ = ["MissingModels", "SpeakerProbe", "aed", "akd", "cpbd", "dlib_detectability", "face_descriptors",
           "face_detectability", "face_meshes", "identity_accuracy", "identity_similarity", "landmarks68", "lmd",
           "psnr", "psnr_release", "speaker_identification", "ssim", "sync_offset"]
