"""HeadGAN (Doukas et al., ICCV 2021, "HeadGAN: One-shot Neural Head Synthesis and Editing"; michaildoukas/headGAN):
a reference face re-rendered under a driver's 3DMM expression and pose (NMFC renders), with the driver's audio.

``networks.py`` holds the generator (flow and rendering networks), the image and mouth discriminators and the
frozen VGG19 of the perceptual loss, at the official parameter counts; the training stages, sampling and
evaluation build on them (README, "HeadGAN").
"""
