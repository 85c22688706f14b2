"""Sharding: cut recipe samples from a prep folder into WebDataset tars, and check them."""
