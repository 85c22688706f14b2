"""DAVS (Zhou et al., AAAI 2019; Hangz-nju-cuhk/Talking-Face-Generation-DAVS): talking faces from disentangled
person-id and word-id spaces, driven by audio or by video.

``networks.py`` holds its eight networks with the official parameter counts (or the reason they differ); the
stages (word pretraining, disentangling), sampling and evaluation build on them (README, "DAVS").
"""
