"""Face analysis stages: detection, tracking, MediaPipe landmarks, alignment and crops, quality, A/V offset."""
