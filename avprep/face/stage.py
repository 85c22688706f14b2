"""The face stage of extract: track, fill short gaps, smooth, align, crop, measure quality and A/V offset.

Frames stream through once. Each frame waits in a short look-ahead queue until the frames after it are known
(``lookahead`` = the smoothing radius or the longest fillable gap, whichever is larger), so smoothing is centred
(no lag) and gaps are interpolated from both sides, while only that many decoded frames are ever held.

Written per video (N = frames, each with its time base ``frame / fps``):

    landmarks_raw.npy   (N, 478, 3) float32  MediaPipe mesh, x y in frame pixels, z depth in pixels; NaN: no mesh
    landmarks.npy       (N, 478, 3) float32  gap-filled and smoothed over time (what the crops follow)
    landmarks68.npy     (N, 68, 2)  float32  iBUG 68-point subset of landmarks.npy (avprep.face.points.IBUG68)
    align.npy           (N, 2, 3)   float32  frame pixels -> canonical crop pixels; NaN without a face
    crops.tar           canonical crops, <frame:06d>.jpg, for frames with a face
    frames.parquet      one row per frame: track, face, interpolated, faces seen, detector score, mesh score,
                        inter-ocular pixels, blur, yaw/pitch/roll, mouth opening, and ``good`` (passes the
                        quality thresholds)
"""
from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.ndimage import correlate1d

from avprep.face import align, quality, sync
from avprep.face.detect import make_detector
from avprep.face.points import IBUG68, MESH_POINTS, mouth_opening
from avprep.face.track import FaceTracker, Observation
from avprep.media.audio import SAMPLE_RATE, write_flac
from avprep.media.ffmpeg import MediaError
from avprep.media.images import jpeg
from avprep.media.video import FrameChunk
from avprep.pipeline.arrays import NpyAppender, TarAppender
from avprep.pipeline.stages import Stage, VideoContext

_NAN_POINTS = np.full((MESH_POINTS, 3), np.nan, dtype=np.float32)


class FaceStage(Stage):
    name = "face"
    needs_frames = True

    def open(self, video: VideoContext) -> None:
        config = self.config = video.config.face
        self.size = config.canonical_size
        max_gap = max(1, int(round(config.max_gap_s * video.fps)))
        self.tracker = FaceTracker(make_detector(config.insightface_root, config.min_detection_confidence),
                                   detect_every=max(1, round(config.detect_every_s * video.fps)), max_gap=max_gap)
        self.landmark_kernel = align.gaussian_weights(config.landmark_smoothing_s * video.fps)
        self.centre_kernel = align.gaussian_weights(config.crop_centre_smoothing_s * video.fps)
        self.scale_kernel = align.gaussian_weights(config.crop_scale_smoothing_s * video.fps)
        self.radius = max(len(k) for k in (self.landmark_kernel, self.centre_kernel, self.scale_kernel)) // 2
        self.lookahead = max(self.radius, max_gap + 1)
        self.seen: collections.deque[Observation] = collections.deque()  # frames still needed as context
        self.waiting: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (index, pixels)
        self.filled: dict[int, np.ndarray] = {}  # gap frames interpolated from both sides
        self.poses: dict[int, np.ndarray] = {}  # per-frame crop pose before smoothing
        self.outputs = _FaceOutputs(video, self.size, config.jpeg_quality)

    def frames(self, video: VideoContext, chunk: FrameChunk) -> None:
        for offset, frame in enumerate(chunk.frames):
            observation = self.tracker.step(chunk.start + offset, frame)
            if observation.points is not None:
                self._fill_gap_before(observation)
            self.seen.append(observation)
            self.waiting.append((observation.index, frame))
        newest = chunk.start + len(chunk.frames) - 1
        ready = sum(1 for index, _ in self.waiting if index + self.lookahead <= newest)
        self._finish([self.waiting.popleft() for _ in range(ready)])

    def close(self, video: VideoContext) -> None:
        self._finish(list(self.waiting))
        self.waiting.clear()
        self.tracker.close()
        summary = self.outputs.close()
        if summary["face_frames"] == 0:
            raise MediaError("no face", f"no face found in {summary['frames']} frames")
        tracks = self._offsets(video, summary.pop("tracks"))
        main = max(tracks, key=lambda t: t["n_frames"])
        video.record.update(summary, n_tracks=len(tracks), max_faces=self.tracker.max_faces,
                            av_offset_frames=main["av_offset_frames"],
                            av_offset_confidence=main["av_offset_confidence"], tracks=tracks)
        if self.config.fix_offset and main["av_offset_confidence"] >= self.config.min_offset_confidence:
            video.audio = sync.shift_audio(video.audio, main["av_offset_frames"], SAMPLE_RATE, video.fps)
            write_flac(video.workdir / "audio.flac", video.audio)
            video.record["audio_shift_frames"] = main["av_offset_frames"]
            moved = int(round(main["av_offset_frames"] * SAMPLE_RATE / video.fps))
            video.audio_start, video.audio_end = (int(np.clip(s - moved, 0, len(video.audio)))
                                                  for s in (video.audio_start, video.audio_end))
            video.record["audio_start_s"] = video.audio_start / SAMPLE_RATE
        self.outputs.write_frames(sync.frame_has_audio(SAMPLE_RATE, video.fps, summary["frames"],
                                                       video.audio_start, video.audio_end))
        video.arrays.update(self.outputs.described(video.fps))

    def _fill_gap_before(self, observation: Observation) -> None:
        """Interpolate the frames of this track that the mesh missed since its last success."""
        gap = []
        for earlier in reversed(self.seen):
            if earlier.track != observation.track:
                return
            if earlier.points is not None:
                break
            gap.append(earlier)
        else:
            return
        for missing in gap:
            t = (missing.index - earlier.index) / (observation.index - earlier.index)
            self.filled[missing.index] = (1 - t) * earlier.points + t * observation.points

    def _points(self, observation: Observation) -> np.ndarray | None:
        if observation.points is not None:
            return observation.points
        return self.filled.get(observation.index)

    def _finish(self, ready: list[tuple[int, np.ndarray]]) -> None:
        """Smooth, align, crop and write the ``ready`` frames (consecutive), all their context being known.

        Smoothing is a normalised convolution over each track's frames: a frame's neighbours count only if they
        belong to its own track and have landmarks, so tracks never blend and gaps do not drag crops around.
        """
        if not ready:
            return
        first, last = ready[0][0], ready[-1][0]
        by_index = {o.index: o for o in self.seen}
        span = range(first - self.radius, last + self.radius + 1)
        context = [by_index.get(i) for i in span]
        track = np.array([o.track if o is not None and self._points(o) is not None else -1 for o in context])
        poses = np.stack([self._pose(o) if t >= 0 else np.zeros(4) for o, t in zip(context, track)])
        landmarks = np.stack([self._points(o) if t >= 0 else _NAN_POINTS for o, t in zip(context, track)])
        centre, scale_angle, smooth = np.zeros((len(span), 2)), np.zeros((len(span), 2)), np.zeros(landmarks.shape)
        for t in np.unique(track[track >= 0]):
            member = (track == t).astype(np.float64)
            rows = track == t
            poses[rows, 3] = np.unwrap(poses[rows, 3])  # no jump at +-pi inside the window
            centre[rows] = _convolved(poses[:, :2], member, self.centre_kernel)[rows]
            scale_angle[rows] = _convolved(poses[:, 2:], member, self.scale_kernel)[rows]
            smooth[rows] = _convolved(np.nan_to_num(landmarks), member, self.landmark_kernel)[rows]
        at = self.radius + np.arange(len(ready))  # ready frames are consecutive, from span.start + radius
        face = track[at] >= 0
        smooth[track < 0] = np.nan
        transforms = np.full((len(ready), 2, 3), np.nan)
        for row in np.flatnonzero(face):
            pose = np.concatenate([centre[at[row]], scale_angle[at[row]]])
            transforms[row] = align.transform_from_pose(pose, self.size)
        observations = [context[a] for a in at]
        raw = np.stack([o.points if o.points is not None else _NAN_POINTS for o in observations])
        self.outputs.add(observations, raw, smooth[at].astype(np.float32), transforms, [f for _, f in ready])
        while self.seen and self.seen[0].index < last + 1 - self.radius:
            forgotten = self.seen.popleft().index
            self.filled.pop(forgotten, None)
            self.poses.pop(forgotten, None)

    def _pose(self, observation: Observation) -> np.ndarray:
        if observation.index not in self.poses:
            self.poses[observation.index] = align.crop_pose(self._points(observation), self.size)
        return self.poses[observation.index]

    def _offsets(self, video: VideoContext, tracks: list[dict]) -> list[dict]:
        """A/V offset of every track: its mouth opening against the loudness of the audio at the same frames."""
        mouth = self.outputs.mouth_series()
        loudness = sync.loudness_envelope(video.audio, SAMPLE_RATE, video.fps, len(mouth), video.audio_start)
        for track in tracks:
            span = slice(track["start_frame"], track["end_frame"] + 1)
            offset, confidence = sync.estimate_offset(mouth[span], loudness[span], self.config.max_offset_frames)
            track.update(av_offset_frames=offset, av_offset_confidence=round(confidence, 3))
        return tracks


def _convolved(values: np.ndarray, weights: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Weighted moving average along axis 0: sum(k w v) / sum(k w), with rows of zero weight ignored."""
    numerator = correlate1d(values * weights.reshape(-1, *[1] * (values.ndim - 1)), kernel, axis=0, mode="constant")
    denominator = correlate1d(weights, kernel, mode="constant")
    return numerator / np.maximum(denominator, 1e-12).reshape(-1, *[1] * (values.ndim - 1))


class _FaceOutputs:
    """Everything the face stage writes for one video, appended frame by frame."""

    def __init__(self, video: VideoContext, size: int, jpeg_quality: int):
        self.config = video.config.face
        self.size = size
        self.jpeg_quality = jpeg_quality
        workdir = video.workdir
        self.raw = NpyAppender(workdir / "landmarks_raw.npy", np.float32, (MESH_POINTS, 3))
        self.smooth = NpyAppender(workdir / "landmarks.npy", np.float32, (MESH_POINTS, 3))
        self.ibug = NpyAppender(workdir / "landmarks68.npy", np.float32, (68, 2))
        self.align = NpyAppender(workdir / "align.npy", np.float32, (2, 3))
        self.tar = TarAppender(workdir / "crops.tar")
        self.frames_path = workdir / "frames.parquet"
        self.rows: dict[str, list] = collections.defaultdict(list)
        self.fps = video.fps

    def add(self, observations: list[Observation], raw: np.ndarray, smooth: np.ndarray, transforms: np.ndarray,
            frames: list[np.ndarray]) -> None:
        """Append consecutive frames: raw and smoothed landmarks (n, 478, 3), frame -> crop transforms (n, 2, 3),
        all NaN on frames without a face. Quality is measured for the whole block at once."""
        face = ~np.isnan(transforms[:, 0, 0])
        self.raw.append(raw)
        self.smooth.append(smooth)
        self.ibug.append(smooth[:, IBUG68, :2])
        self.align.append(transforms)
        blur = np.full(len(frames), np.nan)
        for row in np.flatnonzero(face):
            crop = align.cut(frames[row], transforms[row], self.size)
            self._write_crop(observations[row].index, crop)
            blur[row] = quality.blur_score(crop)
        yaw, pitch, roll = quality.head_pose(smooth).T
        iod = quality.inter_ocular_px(smooth)
        c = self.config
        mesh_score = np.array([o.mesh_score for o in observations])
        interpolated = face & np.isnan(raw[:, 0, 0])
        with np.errstate(invalid="ignore"):  # NaN (no face) compares false
            good = ((iod >= c.min_iod_px) & (blur >= c.min_blur) & (np.abs(yaw) <= c.max_yaw_deg)
                    & (np.abs(pitch) <= c.max_pitch_deg) & (interpolated | (mesh_score >= c.min_mesh_score)))
        index = np.array([o.index for o in observations])
        columns = dict(frame=index, time_s=index / self.fps,
                       track=np.where(face, [o.track for o in observations], -1), face=face,
                       interpolated=interpolated, n_faces=[o.n_faces for o in observations],
                       det_score=np.where(face, [o.det_score for o in observations], np.nan), mesh_score=mesh_score,
                       iod_px=iod, blur=blur, yaw=yaw, pitch=pitch, roll=roll, mouth_open=mouth_opening(smooth),
                       good=good)
        for key, values in columns.items():
            self.rows[key].extend(np.asarray(values).tolist())

    def _write_crop(self, index: int, crop: np.ndarray) -> None:
        self.tar.add(f"{index:06d}.jpg", jpeg(crop, self.jpeg_quality))  # fixed metadata: same inputs, same bytes

    def mouth_series(self) -> np.ndarray:
        return np.asarray(self.rows["mouth_open"], dtype=np.float64)

    def close(self) -> dict:
        """Finish the array files and the crops; sum up the frames and tracks."""
        for appender in (self.raw, self.smooth, self.ibug, self.align):
            appender.close()
        self.tar.close()
        track = np.asarray(self.rows["track"], dtype=np.int64)
        good = np.asarray(self.rows["good"], dtype=bool)
        tracks = []
        for t in np.unique(track[track >= 0]):
            frames = np.flatnonzero(track == t)
            tracks.append(dict(track=int(t), start_frame=int(frames[0]), end_frame=int(frames[-1]),
                               n_frames=int(len(frames)), good_frames=int(good[frames].sum())))
        return dict(frames=len(track), face_frames=int((track >= 0).sum()), good_frames=int(good.sum()),
                    tracks=tracks)

    def write_frames(self, has_audio: np.ndarray) -> None:
        """frames.parquet: the per-frame columns, and ``has_audio`` (known once the audio is final)."""
        pq.write_table(pa.table({**self.rows, "has_audio": has_audio.tolist()}), self.frames_path)

    def described(self, fps: float) -> dict:
        base = {"fps": fps, "start_s": 0.0}
        return {
            "landmarks_raw": {"file": "landmarks_raw.npy", **base, "units": "frame pixels; z depth in pixels"},
            "landmarks": {"file": "landmarks.npy", **base, "units": "frame pixels; gap-filled, smoothed"},
            "landmarks68": {"file": "landmarks68.npy", **base, "units": "frame pixels; iBUG 68 order"},
            "align": {"file": "align.npy", **base, "units": "2x3 affine, frame pixels -> crop pixels"},
            "crops": {"file": "crops.tar", **base, "member": "{frame:06d}.jpg", "size": self.size,
                      "frames": "those with a face"},
            "frames": {"file": "frames.parquet", **base},
        }
