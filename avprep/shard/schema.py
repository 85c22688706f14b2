"""What every sample of a recipe holds: member name -> dtype, shape and time base (written to dataset.json)."""
from __future__ import annotations

from avprep.media.audio import SAMPLE_RATE
from avprep.shard.recipe import Recipe
from avprep.shard.sample import frame_names

SCHEMA_VERSION = 1


def member_schema(recipe: Recipe) -> dict[str, dict]:
    t, size = recipe.clip_frames, recipe.image_size
    image = {"dtype": "uint8", "shape": [size, size, 3]}
    clip = "frame i of the sample is video frame start_frame + i, at (start_frame + i) / fps s"
    schema = {"meta.json": {"dtype": "json", "shape": [], "time_base": "see its fps, start_frame, audio_start_s"}}
    if "frames" in recipe.fields:
        schema.update({name: {**image, "time_base": clip} for name in frame_names(recipe)})
    if "lr" in recipe.fields:
        schema["lr.png"] = {"dtype": "uint8", "shape": [recipe.lr_size, recipe.lr_size, 3],
                            "time_base": "the first frame, downsampled " + recipe.lr_filter}
    if "landmarks" in recipe.fields:
        schema["landmarks.npy"] = {"dtype": "float32", "shape": [t, 68, 2], "time_base": clip + "; crop pixels"}
    if "mfcc" in recipe.fields:
        schema["mfcc.npy"] = {"dtype": "float32", "shape": [t, recipe.mfcc_rows, 12],
                              "time_base": f"{recipe.mfcc} MFCC at 100 Hz; frame i's rows start "
                                           f"{recipe.mfcc_start_s} s after its time (plus the A/V shift)"}
    if "audio" in recipe.fields:
        schema["audio.flac"] = {"dtype": "float32", "shape": [int(round(recipe.audio_s * SAMPLE_RATE))],
                                "time_base": f"{SAMPLE_RATE} Hz mono; first sample at meta audio_start_s "
                                             "relative to the first frame"}
    if "audio_features" in recipe.fields:
        schema["audio_features.npy"] = {"dtype": "float32", "shape": [t, 300],
                                        "time_base": clip + "; 84 HeadGAN statistics + 8 x 27 characters"}
    if "nmfc" in recipe.fields:
        schema.update({f"nmfc{i:03d}.png": {**image, "time_base": clip} for i in range(t)})
    if "mouth" in recipe.fields:
        schema["mouth.npy"] = {"dtype": "float32", "shape": [t, 2],
                               "time_base": clip + "; crop pixels, median of the lip points 48-67"}
    if "reference" in recipe.fields:
        schema["ref.jpg"] = {**image, "time_base": "meta reference_video_id's frame reference_frame: one outside "
                                                   "the clip, or (reference_from = speaker) of another video of "
                                                   "the same speaker"}
        if "nmfc" in recipe.fields:
            schema["ref_nmfc.png"] = {**image, "time_base": "the reference frame's NMFC render"}
    if "wrong" in recipe.fields:
        schema["wrong.jpg"] = {**image, "time_base": "a frame of another speaker"}
    return schema
