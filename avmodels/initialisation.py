"""Weight initialisations that more than one method's official code applies."""
from __future__ import annotations

from torch import nn


def dcgan_normal(net: nn.Module, layers: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d),
                 std: float = 0.02) -> nn.Module:
    """DCGAN's initialisation: weights of every module of ``layers`` from N(0, ``std``) with zero biases, batch-norm
    scales from N(1, ``std``) with zero shifts (ATVGnet's ``initialize_weights``, with dense layers too; DAVS's
    ``weights_init``, convolutions only)."""
    for module in net.modules():
        if isinstance(module, layers):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, std)
            nn.init.zeros_(module.bias)
    return net
