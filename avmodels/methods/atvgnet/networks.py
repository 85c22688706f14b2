"""ATVGnet's networks (Chen et al., CVPR 2019; lelechen63/ATVGnet ``code/models.py``), written from the official
architecture. Parameter counts at the defaults (128 px, width 64), asserted by the tests:

    AT-net            30,071,750   landmark PCA + MFCC -> 3-layer LSTM -> 6 PCA coefficients per frame
    VG-net            58,355,781   reference image + landmarks -> frames (attention and colour heads, ConvGRU)
    GL discriminator  20,896,905   per-frame convolutions -> 3-layer LSTM -> real/fake and landmark regression
                                   (the official 21,491,473 include a 594,568-parameter decoder that no forward
                                   pass uses; it is left out)

The official ``conv2d`` helper is a convolution, then batch norm and ReLU; the convolution has a bias only when
there is no norm. AT-net and VG-net start from the official initialisation (``official_init``), the discriminator
from PyTorch's, as the official trainers leave it. ``width`` and ``image_size`` other than 64 and 128 build
smaller copies for tests.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from avmodels.initialisation import dcgan_normal

PCA_COMPONENTS = 6
LANDMARKS = 136  # 68 points, x and y


def conv_block(channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, padding: int = 1,
               norm: bool = True, activation: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """ATVGnet's ``conv2d``: convolution (with a bias only without the norm), batch norm, activation."""
    layers: list[nn.Module] = [nn.Conv2d(channels_in, channels_out, kernel, stride, padding, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(channels_out))
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class ATNet(nn.Module):
    """Audio to landmarks: the example's 6 PCA coefficients and each frame's 28 x 12 MFCC window -> a 3-layer
    LSTM -> 6 coefficients per frame."""

    def __init__(self, mfcc_shape: tuple[int, int] = (28, 12), hidden: int = 256):
        super().__init__()
        self.landmark_encoder = nn.Sequential(nn.Linear(PCA_COMPONENTS, 256), nn.ReLU(True), nn.Linear(256, 512),
                                              nn.ReLU(True))
        self.audio_encoder = nn.Sequential(
            conv_block(1, 64), conv_block(64, 128), nn.MaxPool2d(3, stride=(1, 2)),
            conv_block(128, 256), conv_block(256, 256), conv_block(256, 512), nn.MaxPool2d(3, stride=(2, 2)))
        rows, columns = mfcc_shape
        flat = 512 * ((rows - 2 - 3) // 2 + 1) * (((columns - 3) // 2 + 1 - 3) // 2 + 1)  # 12288 for 28 x 12
        self.audio_fc = nn.Sequential(nn.Linear(flat, 2048), nn.ReLU(True), nn.Linear(2048, 256), nn.ReLU(True))
        self.lstm = nn.LSTM(256 + 512, hidden, 3, batch_first=True)
        self.head = nn.Linear(hidden, PCA_COMPONENTS)
        official_init(self)

    def forward(self, example: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        """``example`` (B, 6), ``mfcc`` (B, T, 28, 12) -> (B, T, 6). The audio frames of all steps go through the
        encoder as one batch (batch-norm statistics over B x T frames; the official loop takes them per step)."""
        batch, steps = mfcc.shape[:2]
        audio = self.audio_fc(self.audio_encoder(mfcc.reshape(batch * steps, 1, *mfcc.shape[2:])).flatten(1))
        landmark = self.landmark_encoder(example).unsqueeze(1).expand(batch, steps, -1)
        out, _ = self.lstm(torch.cat([landmark, audio.view(batch, steps, -1)], dim=2))
        return self.head(out)


def official_init(net: nn.Module) -> nn.Module:
    """The official ``initialize_weights`` that ``atnet.py`` and ``vgnet.py`` apply to AT-net and VG-net (not to
    the discriminator): N(0, 0.02) weights and zero biases for every convolution, transposed convolution and
    dense layer, N(1, 0.02) scales for batch norm; LSTMs keep PyTorch's, and the ConvGRU its library's uniform
    +-1/sqrt(hidden) (``convolutional_rnn``'s ``reset_parameters``: its weights are not named ``weight``)."""
    dcgan_normal(net, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    for module in net.modules():
        if isinstance(module, ConvGRU):
            bound = 1 / math.sqrt(module.hidden)
            for parameter in module.parameters():
                nn.init.uniform_(parameter, -bound, bound)
    return net


class ConvGRU(nn.Module):
    """A one-layer convolutional GRU (the ``convolutional_rnn`` Conv2dGRU ATVGnet uses: 3 x 3 kernels with
    dilation 2, PyTorch's GRU gates). Input and output (B, T, C, H, W)."""

    def __init__(self, channels_in: int, hidden: int, kernel: int = 3, dilation: int = 2):
        super().__init__()
        padding = dilation * (kernel - 1) // 2
        self.hidden = hidden
        self.input_gates = nn.Conv2d(channels_in, 3 * hidden, kernel, padding=padding, dilation=dilation)
        self.hidden_gates = nn.Conv2d(hidden, 3 * hidden, kernel, padding=padding, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _, height, width = x.shape
        state = x.new_zeros(batch, self.hidden, height, width)
        inputs = self.input_gates(x.flatten(0, 1)).view(batch, steps, 3 * self.hidden, height, width)
        outputs = []
        for t in range(steps):
            reset_i, update_i, new_i = inputs[:, t].chunk(3, dim=1)
            reset_h, update_h, new_h = self.hidden_gates(state).chunk(3, dim=1)
            reset, update = torch.sigmoid(reset_i + reset_h), torch.sigmoid(update_i + update_h)
            state = (1 - update) * torch.tanh(new_i + reset * new_h) + update * state
            outputs.append(state)
        return torch.stack(outputs, dim=1)


class ResnetBlock(nn.Module):
    """Two 3 x 3 convolutions without bias, batch norm, ReLU and dropout 0.5 between them, and the skip."""

    def __init__(self, channels: int, dropout: float = 0.5):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True),
            nn.Dropout(dropout), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _up(channels_in: int, channels_out: int, bias: bool, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ConvTranspose2d(channels_in, channels_out, 3, stride=2, padding=1,
                                                  output_padding=1, bias=bias)]
    return layers + [nn.BatchNorm2d(channels_out), nn.ReLU(True)] if norm else layers


class VGNet(nn.Module):
    """Landmarks to video: the reference image's features (at 1/4 and 1/16 of its size), each frame's landmarks
    against the reference landmarks, a ConvGRU over time, nine residual blocks, and two heads, a colour image
    (tanh) and an attention map (sigmoid): frame = attention x colour + (1 - attention) x reference.

    ``recur_over = "batch"`` reproduces the official code, whose ConvGRU reads (B, T, ...) input as time-first
    and so carries its state across the clips of a batch instead of along each clip; "time" (default) is the
    paper's recurrence along the frames.
    """

    def __init__(self, image_size: int = 128, width: int = 64, blocks: int = 9, recur_over: str = "time"):
        super().__init__()
        if recur_over not in ("time", "batch"):
            raise ValueError("recur_over must be 'time' or 'batch'")
        self.recur_over = recur_over
        self.grid = image_size // 16
        w = width
        self.image_encoder1 = nn.Sequential(nn.ReflectionPad2d(3), conv_block(3, w, 7, 1, 0),
                                            conv_block(w, w, 3, 2, 1), conv_block(w, 2 * w, 3, 2, 1))
        self.image_encoder2 = nn.Sequential(conv_block(2 * w, 4 * w, 3, 2, 1), conv_block(4 * w, 8 * w, 3, 2, 1))
        self.landmark_encoder = nn.Sequential(nn.Linear(LANDMARKS, self.grid * self.grid), nn.ReLU(True))
        self.landmark_encoder2 = conv_block(1, 4 * w)
        self.landmark_attention = nn.Sequential(
            *_up(8 * w, 4 * w, bias=True), *_up(4 * w, 2 * w, bias=True),
            conv_block(2 * w, 1, norm=False, activation=nn.Sigmoid))
        self.landmark_feature = conv_block(4 * w, 8 * w)
        self.bottleneck = conv_block(16 * w, 2 * w)
        self.gru = ConvGRU(2 * w, 8 * w)
        self.generator1 = nn.Sequential(*[ResnetBlock(8 * w) for _ in range(blocks)],
                                        *_up(8 * w, 4 * w, bias=False), *_up(4 * w, 2 * w, bias=False))
        self.base = nn.Sequential(*_up(2 * w, w, bias=False), *_up(w, w // 2, bias=False))
        self.colour = nn.Sequential(nn.Conv2d(w // 2, 3, 7, padding=3), nn.Tanh())
        self.attention = nn.Sequential(nn.Conv2d(w // 2, 1, 7, padding=3), nn.Sigmoid())
        official_init(self)

    def _landmark_map(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(N, 136) -> (N, 4w, S/16, S/16): landmarks as a small image, then convolved."""
        return self.landmark_encoder2(self.landmark_encoder(landmarks).view(-1, 1, self.grid, self.grid))

    def forward(self, reference: torch.Tensor, landmarks: torch.Tensor, reference_landmarks: torch.Tensor):
        """``reference`` (B, 3, S, S) in [-1, 1], ``landmarks`` (B, T, 136) and ``reference_landmarks`` (B, 136) in
        [-1, 1] crop coordinates -> (frames, attention, colour, landmark attention), each (B, T, C, ...)."""
        batch, steps = landmarks.shape[:2]
        features1 = self.image_encoder1(reference)
        features = self.image_encoder2(features1)
        reference_map = self._landmark_map(reference_landmarks)
        reference_feature = self.landmark_feature(reference_map)
        frame_maps = self._landmark_map(landmarks.reshape(batch * steps, -1))
        repeat = lambda x: x.unsqueeze(1).expand(batch, steps, *x.shape[1:]).reshape(batch * steps, *x.shape[1:])
        landmark_attention = self.landmark_attention(torch.cat([frame_maps, repeat(reference_map)], dim=1))
        motion = self.landmark_feature(frame_maps) - repeat(reference_feature)
        gru_input = self.bottleneck(torch.cat([repeat(features), motion], dim=1))
        gru_input = gru_input.view(batch, steps, -1, *features.shape[2:])
        if self.recur_over == "batch":
            gru_output = self.gru(gru_input.transpose(0, 1)).transpose(0, 1)
        else:
            gru_output = self.gru(gru_input)
        decoded = self.generator1(gru_output.flatten(0, 1))
        mixed = repeat(features1) * (1 - landmark_attention) + decoded * landmark_attention
        base = self.base(mixed)
        colour, attention = self.colour(base), self.attention(base)
        frames = attention * colour + (1 - attention) * repeat(reference)
        unflat = lambda x: x.view(batch, steps, *x.shape[1:])
        return unflat(frames), unflat(attention), unflat(colour), unflat(landmark_attention)


class GLDiscriminator(nn.Module):
    """Frames and the reference landmarks -> whether the clip is real (a logit, the mean of the per-frame
    decisions, as the official average pooling before its sigmoid) and each frame's landmarks (regressed as an
    offset from the reference landmarks)."""

    def __init__(self, image_size: int = 128, width: int = 64, hidden: int = 256):
        super().__init__()
        w = width
        self.image_encoder = nn.Sequential(conv_block(3, w, 3, 2, 1, norm=False), conv_block(w, 2 * w, 3, 2, 1),
                                           conv_block(2 * w, 4 * w, 3, 2, 1), conv_block(4 * w, 8 * w, 3, 2, 1))
        self.landmark_encoder = nn.Sequential(nn.Linear(LANDMARKS, 256), nn.ReLU(True), nn.Linear(256, 512),
                                              nn.ReLU(True))
        self.image_fc = nn.Sequential(nn.Linear(8 * w * (image_size // 16) ** 2, 512), nn.ReLU(True))
        self.lstm = nn.LSTM(1024, hidden, 3, batch_first=True)
        self.landmark_head = nn.Sequential(nn.Linear(hidden, LANDMARKS), nn.Tanh())
        self.decision = nn.Linear(hidden, 1)

    def forward(self, frames: torch.Tensor, reference_landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` (B, T, 3, S, S) -> (logit (B,), landmarks (B, T, 136))."""
        batch, steps = frames.shape[:2]
        images = self.image_fc(self.image_encoder(frames.flatten(0, 1)).flatten(1)).view(batch, steps, -1)
        landmark = self.landmark_encoder(reference_landmarks).unsqueeze(1).expand(batch, steps, -1)
        out, _ = self.lstm(torch.cat([landmark, images], dim=2))
        return self.decision(out).mean(dim=(1, 2)), self.landmark_head(out) + reference_landmarks.unsqueeze(1)
