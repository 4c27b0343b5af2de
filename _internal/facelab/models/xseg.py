"""DFL's XSeg segmentation network (dfl-spec §7), in PyTorch: 256 x 256 BGR [0, 1] -> face mask logit.

With DFL's base width 32 it has DFL's 17.6 M parameters (the size of its XSeg_256.npy).

- ConvBlock: 3x3 conv (pad 1) -> FRN (x * rsqrt(mean_hw(x^2) + |eps|) * gamma + beta, learnable
  eps from 1e-6) -> TLU (max(x, tau));
- UpConv: 3x3 transposed conv, stride 2, with TF's SAME geometry (PyTorch padding 0, then the
  last row and column dropped: spec §14 item 17) -> FRN -> TLU;
- BlurPool: depthwise binomial filter, stride 2 (4: [1,3,3,1] pad (1,2); 3: [1,2,1] pad (1,1);
  2: [1,1] pad (0,1));
- encoder 2xC32, BP4, 2xC64, BP3, 2xC128, BP2, 3xC256, BP2, 3xC256, BP2, 3xC256, BP2 (256 -> 4 px);
  dense bottleneck 4096 -> 512 -> 4096; decoder of UpConvs with skip connections; 3x3 conv -> 1.
`pretrain=True` zeroes the skips (DFL's pretraining forward). Inference (`predict`) clips to
[0, 1] and zeroes values below 0.1, as DFL's apply does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facelab.models.registry import register_model

RESOLUTION = 256


class FRN(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.eps = nn.Parameter(torch.full((1, ch, 1, 1), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        return x * torch.rsqrt(nu2 + self.eps.abs()) * self.weight + self.bias


class TLU(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(1, ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, self.tau)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.frn, self.tlu = FRN(cout), TLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tlu(self.frn(self.conv(x)))


class UpConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=0)
        self.frn, self.tlu = FRN(cout), TLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)[:, :, :-1, :-1]  # TF SAME: output 2H, the extra row/column dropped at the end
        return self.tlu(self.frn(x))


class BlurPool(nn.Module):
    _TAPS = {4: ([1.0, 3.0, 3.0, 1.0], (1, 2)), 3: ([1.0, 2.0, 1.0], (1, 1)), 2: ([1.0, 1.0], (0, 1))}

    def __init__(self, ch: int, size: int):
        super().__init__()
        taps, self.pad = self._TAPS[size]
        k = torch.tensor(taps)
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum()).expand(ch, 1, size, size).contiguous(), persistent=False)
        self.ch = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad
        return F.conv2d(F.pad(x, (a, b, a, b)), self.kernel, stride=2, groups=self.ch)


class XSegNet(nn.Module):
    def __init__(self, base: int = 32, in_ch: int = 3, resolution: int = RESOLUTION):
        super().__init__()
        for name, value, top in (("base", base, 128), ("resolution", resolution, 1024)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"XSeg {name} {str(value)[:20]!r}: must be a whole number from 1 to {top}")
        if resolution % 64:
            raise ValueError(f"XSeg resolution {resolution} must be a multiple of 64")
        self.lowest = resolution // 64
        c1, c2, c4, c8 = base, base * 2, base * 4, base * 8
        self.enc = nn.ModuleList([
            nn.Sequential(ConvBlock(in_ch, c1), ConvBlock(c1, c1)),
            nn.Sequential(ConvBlock(c1, c2), ConvBlock(c2, c2)),
            nn.Sequential(ConvBlock(c2, c4), ConvBlock(c4, c4)),
            nn.Sequential(ConvBlock(c4, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
            nn.Sequential(ConvBlock(c8, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
            nn.Sequential(ConvBlock(c8, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
        ])  # fmt: skip
        self.pools = nn.ModuleList([BlurPool(c1, 4), BlurPool(c2, 3), BlurPool(c4, 2), BlurPool(c8, 2),
                                    BlurPool(c8, 2), BlurPool(c8, 2)])  # fmt: skip
        flat = c8 * self.lowest * self.lowest
        self.dense1 = nn.Linear(flat, 512)
        self.dense2 = nn.Linear(512, flat)
        self.ups = nn.ModuleList([UpConv(c8, c4), UpConv(c8, c4), UpConv(c8, c4), UpConv(c8, c4), UpConv(c4, c2), UpConv(c2, c1)])
        self.dec = nn.ModuleList([
            nn.Sequential(ConvBlock(c4 + c8, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
            nn.Sequential(ConvBlock(c4 + c8, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
            nn.Sequential(ConvBlock(c4 + c8, c8), ConvBlock(c8, c8), ConvBlock(c8, c8)),
            nn.Sequential(ConvBlock(c4 + c4, c4), ConvBlock(c4, c4)),
            nn.Sequential(ConvBlock(c2 + c2, c2), ConvBlock(c2, c2)),
            nn.Sequential(ConvBlock(c1 + c1, c1), ConvBlock(c1, c1)),
        ])  # fmt: skip
        self.out_conv = nn.Conv2d(c1, 1, 3, padding=1)
        self.c8 = c8

    def forward(self, x: torch.Tensor, pretrain: bool = False) -> torch.Tensor:
        """Mask logits N x 1 x H x W for N x 3 x 256 x 256 BGR [0, 1]."""
        skips = []
        for block, pool in zip(self.enc, self.pools):
            x = block(x)
            skips.append(x)
            x = pool(x)
        n = x.shape[0]
        x = self.dense2(self.dense1(x.flatten(1))).view(n, self.c8, self.lowest, self.lowest)
        for up, block, skip in zip(self.ups, self.dec, reversed(skips)):
            x = up(x)
            x = block(torch.cat([x, torch.zeros_like(skip) if pretrain else skip], 1))
        return self.out_conv(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """DFL's inference mask: sigmoid, clipped to [0, 1], values under 0.1 set to 0."""
        m = torch.sigmoid(self.forward(x)).clamp(0, 1)
        return torch.where(m < 0.1, torch.zeros_like(m), m)


@register_model("xseg")
def create_xseg(base: int = 32, resolution: int = RESOLUTION) -> XSegNet:
    """DFL's XSeg is base 32 at 256 px; smaller ones are for tests and quick experiments."""
    return XSegNet(base=base, resolution=resolution)
