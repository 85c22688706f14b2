"""Ear-SR (Meishvili et al., CVPR 2020, "Learning to Have an Ear for Face Super-Resolution"): an 8 x 8 face and
4 s of speech -> a 128 x 128 face, through the latent space of a StyleGAN. So far its networks (``networks.py``);
the method (stages ``stylegan``, ``invert``, ``encoders``, ``fuse``) is not registered yet (README "Ear-SR")."""
