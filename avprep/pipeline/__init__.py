"""The per-video extract pipeline: inputs, stages, the runner and the manifest."""
