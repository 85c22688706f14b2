"""Recipes: the data half of a method, read from ``pipelines/<name>.toml`` or any TOML file.

The ``[data]`` table says what one sample holds; ``[split]`` how speakers or videos are divided. Other tables
(the model and training half, the quick start's ``[quickstart]``) are left to avmodels.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Sequence

from avprep.features.mfcc import MFCC_KINDS
from avprep.media.images import LR_FILTERS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

FIELDS = {"frames", "lr", "landmarks", "mfcc", "audio", "audio_features", "nmfc", "reference", "wrong", "mouth"}
CROP_MODES = ("frame", "clip", "video")
SPLIT_BY = ("speaker", "video", "dataset", "speaker+video")
AUDIO_FIELDS = {"mfcc", "audio", "audio_features"}  # a window with one of these needs real audio on every frame

# Recipe crops as squares in the canonical crop, in inter-ocular distances around the eye midpoint (x right,
# y down): (centre x, centre y, side). The canonical crop is levelled by the eyes, so these are affine
# sub-windows of it (avprep.face.align).
CROPS = {
    # Wav2Pix's Haar-cascade boxes: the official dataset/ faces measure 2.86 wide, 0.25 below the eyes (11 faces)
    "tight": (0.0, 0.25, 2.86),
    # ATVGnet's warp of points 27-44 onto basics/base_68.npy, cut [1:129, 1:129]: the template's numbers
    "atvgnet": (0.005, 0.50, 2.53),
    "davs": (-0.025, 0.175, 3.35),  # DAVS's eyes + mouth-centre template: its 268 px window (preprocess/)
    "ffhq": (0.0, 0.115, 4.14),  # FFHQ: side 4 x max(eye distance, 0.9 eye-to-mouth), centred 0.1 towards mouth
    # Ear-SR's official VoxCeleb2 test faces: 1.01 below the eyes, 4.29 wide (std 0.37, 7 faces); 4.0 keeps the
    # window inside the canonical crop, which reaches 3.0 below the eyes
    "voxceleb2": (0.0, 1.0, 4.0),
}


RECIPES = "avprep.recipes"  # the pipelines/ folder, installed as this package (setup.py)


class RecipeError(ValueError):
    """A recipe that cannot be used, or a prep folder that lacks what it needs."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    fields: tuple[str, ...]
    clip_frames: int = 1
    fps: float | None = None  # the rate the model is defined at: every video's frames taken at it (None: its own)
    stride_s: float = 1.0
    window: str = "start"  # windows every stride_s from the start of each run of good frames, or one "centre"d
    window_offset: int = 0  # frames to move the windows by (LRW: "centre" puts 25 of 29 frames at frames 2-26)
    crop: str = "ffhq"
    crop_mode: str = "frame"  # each frame's aligned window, or one fixed square for the "clip" or the "video"
    max_box_motion: float = 0.45  # "video": a track whose windows move more (HeadGAN's rule) is left out
    image_size: int = 128
    reference_from: str = "video"  # the reference frame: from the clip's own video (HeadGAN's official 'previous'
    # sequence of the identity: the same video file), or "speaker": another video of the same speaker, where any
    lr_size: int | None = None
    lr_filter: str = "pil_bicubic"  # or "bicubic" (OpenCV), "area" (avprep.media.images.downsample)
    audio_s: float | None = None
    audio_align: str = "centre"  # the audio slice is centred on the clip's middle frame
    mfcc: str | None = None  # "syncnet", "davs" or "atvgnet" (avprep.features.mfcc.MFCC_KINDS)
    mfcc_rows: int = 20
    mfcc_start_s: float = -0.10  # first MFCC row of a frame's window, relative to the frame's time
    quality: str = "good"  # every frame of a clip must be "good" (frames.parquet) or at least "face"
    apply_av_offset: bool = True  # shift audio by the estimated offset when confident
    min_offset_confidence: float = 0.3
    split_by: str = "speaker"  # open set; "video": closed set; "dataset": the dataset's own; "speaker+video": both
    fractions: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
    closed_splits: tuple[str, ...] = ()  # speaker+video: splits of held-out videos of training speakers
    seed: int = 0

    @property
    def training_splits(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fractions if is_training_split(name))

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "fractions": dict(self.fractions)}

    def audio_shift_s(self, record: dict) -> float:
        """Where the sound of a video's frame really is, relative to the frame: its estimated A/V offset when
        the recipe applies offsets, the estimate is confident and extract did not already shift the audio."""
        trusted = (self.apply_av_offset and "audio_shift_frames" not in record
                   and (record.get("av_offset_confidence") or 0) >= self.min_offset_confidence)
        return record["av_offset_frames"] / record["fps"] if trusted else 0.0


def is_training_split(name: str) -> bool:
    """The splits models train on: ``train``, or halves such as ``train_a`` and ``train_b`` (Ear-SR's)."""
    return name == "train" or name.startswith("train_")


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe by name (``wav2pix``, shipped in ``pipelines/``) or by the path of a TOML file, with ``key=value``
    overrides (``apply_override``)."""
    name, document = read_recipe(name_or_path)
    for override in overrides:
        apply_override(document, override)
    return parse_recipe(name, document)


def read_recipe(name_or_path: str) -> tuple[str, dict]:
    """(name, whole TOML document) of a shipped recipe or a recipe file: both halves, data and model."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():  # a folder named like a recipe (shards/wav2pix) is not one
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        resource = shipped_recipe(name_or_path)
        if not resource.is_file():
            raise RecipeError(f"no recipe named {name_or_path!r}; shipped: {', '.join(shipped_recipes())}")
        text, name = resource.read_text(encoding="utf-8"), name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"recipe {name}: not valid TOML: {error}") from None


def apply_override(document: dict, override: str) -> None:
    """``a.b.c=value`` (the value read as TOML, else a bare string) into a recipe document, e.g.
    ``split.by=dataset`` or ``train.batch_size=8``; inside ``train.stages`` the next part names a stage."""
    path, separator, text = override.partition("=")
    if not separator or not path:
        raise RecipeError(f"override {override!r}: write key=value, e.g. train.batch_size=8")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word: a string
    keys = path.strip().split(".")
    node = document
    for key in keys[:-1]:
        if isinstance(node, list):
            matches = [item for item in node if item.get("name") == key]
            if not matches:
                raise RecipeError(f"override {override!r}: no stage named {key!r}")
            node = matches[0]
        else:
            node = node.setdefault(key, {})
    node[keys[-1]] = value
    if keys[-1] in ("steps", "epochs") and "name" in node:  # a stage's length: the one given replaces the other
        node.pop("epochs" if keys[-1] == "steps" else "steps", None)


def shipped_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in importlib.resources.files(RECIPES).iterdir() if p.name.endswith(".toml"))


def shipped_recipe(name: str):
    """Where the shipped recipe ``name`` is (``pipelines/<name>.toml`` in the source tree)."""
    return importlib.resources.files(RECIPES) / f"{name}.toml"


def parse_recipe(name: str, document: dict) -> Recipe:
    data, split = dict(document.get("data", {})), dict(document.get("split", {}))
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = (set(data) | {f"split.{k}" for k in split if k not in ("by", "fractions", "seed", "closed")}) - known
    if unknown:
        raise RecipeError(f"recipe {name}: unknown keys {sorted(unknown)}")
    if "by" in split:
        data["split_by"] = split["by"]
    if "fractions" in split:
        data["fractions"] = tuple(split["fractions"].items())
    if "seed" in split:
        data["seed"] = split["seed"]
    if data.get("split_by") == "speaker+video":  # closed-set splits: as named, or every split named "...closed..."
        names = [name for name, _ in data.get("fractions", Recipe.fractions)]
        data["closed_splits"] = tuple(split.get("closed", [name for name in names if "closed" in name]))
    data["fields"] = tuple(data.get("fields", ()))
    recipe = Recipe(name=name, **data)
    _check(recipe)
    return recipe


def _check(recipe: Recipe) -> None:
    problems = []
    if not recipe.fields or set(recipe.fields) - FIELDS:
        problems.append(f"fields must be some of {sorted(FIELDS)}")
    if recipe.crop not in CROPS or recipe.crop_mode not in CROP_MODES:
        problems.append(f"crop must be one of {sorted(CROPS)} and crop_mode one of {', '.join(CROP_MODES)}")
    if recipe.reference_from not in ("video", "speaker"):
        problems.append("reference_from must be 'video' or 'speaker'")
    if "mfcc" in recipe.fields and recipe.mfcc not in MFCC_KINDS:
        problems.append(f"mfcc must be one of {', '.join(MFCC_KINDS)}")
    if "audio" in recipe.fields and not recipe.audio_s:
        problems.append("the audio field needs audio_s")
    if "lr" in recipe.fields and not recipe.lr_size:
        problems.append("the lr field needs lr_size")
    if recipe.lr_filter not in LR_FILTERS:
        problems.append(f"lr_filter must be one of {', '.join(LR_FILTERS)}")
    if recipe.split_by not in SPLIT_BY or abs(sum(f for _, f in recipe.fractions) - 1) > 1e-6:
        problems.append(f"split.by must be one of {', '.join(SPLIT_BY)} and split.fractions must sum to 1")
    if recipe.split_by == "speaker+video" and (not recipe.training_splits or not recipe.closed_splits
                                               or set(recipe.closed_splits) - set(dict(recipe.fractions))):
        problems.append("split.by = 'speaker+video' needs a training split ('train' or 'train_...') and closed-set "
                        "splits among the fractions (named '...closed...' or listed in split.closed)")
    if recipe.window not in ("start", "centre"):
        problems.append("window must be 'start' or 'centre'")
    if recipe.quality not in ("good", "face") or recipe.clip_frames < 1 or recipe.stride_s <= 0:
        problems.append("quality must be 'good' or 'face', clip_frames >= 1 and stride_s > 0")
    if recipe.fps is not None and not recipe.fps > 0:
        problems.append("fps must be a rate in frames per second (or left out: each video's own)")
    if problems:
        raise RecipeError(f"recipe {recipe.name}: " + "; ".join(problems))
