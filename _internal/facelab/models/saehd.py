"""SAEHD (df / liae with the -u -d -t -c modifiers) and Quick96, layer by layer as DFL builds them.

Follows dfl-spec §8.2-8.3 and DFL's DeepFakeArchi:
- convs use symmetric zero padding k//2 (leras "SAME"); Downscale is a 5x5 stride-2 conv, Upscale a
  3x3 conv to 4x channels then depth-to-space in DCR order (TF's order, not PyTorch's
  pixel_shuffle), ResidualBlock conv-act(.2)-conv-act(in + x, .2); activations leaky ReLU 0.1,
  or x*cos(x) with -c;
- flatten / reshape use C,H,W order, so NCHW here needs no transposes;
- Glorot-uniform weights, zero biases;
- module names equal DFL's weight names (`encoder.down1.downs.0.conv1` is DFL's
  `down1/downs_0/conv1` in the encoder file), so DFL models import one to one.

Tensors are NCHW float, BGR in [0, 1]. Outputs are sigmoid outputs in (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _recompute

from facelab.models.registry import register_model


def depth_to_space_dcr(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """TF's depth_to_space (DCR): out[c, h*b+dy, w*b+dx] = in[(dy*b+dx)*C + c, h, w]."""
    n, c4, h, w = x.shape
    c = c4 // (block * block)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):  # stays channels-last
        x = x.permute(0, 2, 3, 1).view(n, h, w, block, block, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, h * block, w * block, c).permute(0, 3, 1, 2)
    x = x.view(n, block, block, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c, h * block, w * block)


def _run(recompute: bool, block, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """`block(x)`; with gradient checkpointing on (and autograd recording), only `x` is kept and the
    block's inner activations are computed again in the backward pass."""
    if recompute and torch.is_grad_enabled():
        return _recompute(block, x, use_reentrant=False)
    return block(x)


class Act(nn.Module):
    def __init__(self, alpha: float, cos: bool):
        super().__init__()
        self.alpha, self.cos = alpha, cos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.cos(x) if self.cos else F.leaky_relu(x, self.alpha)


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, k, stride, padding=k // 2)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def dense(cin: int, cout: int) -> nn.Linear:
    layer = nn.Linear(cin, cout)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Downscale(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5, cos: bool = False):
        super().__init__()
        self.conv1 = conv(cin, cout, k, 2)
        self.act = Act(0.1, cos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1(x))


class DownscaleBlock(nn.Module):
    def __init__(self, cin: int, ch: int, n: int, k: int, cos: bool):
        super().__init__()
        chans = [ch * min(2**i, 8) for i in range(n)]
        self.downs = nn.ModuleList(Downscale(a, b, k, cos) for a, b in zip([cin, *chans[:-1]], chans))

    def forward(self, x: torch.Tensor, recompute: bool = False) -> torch.Tensor:
        for down in self.downs:
            x = _run(recompute, down, x)
        return x


class Upscale(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, cos: bool = False):
        super().__init__()
        self.conv1 = conv(cin, cout * 4, k)
        self.act = Act(0.1, cos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space_dcr(self.act(self.conv1(x)))


class ResidualBlock(nn.Module):
    def __init__(self, ch: int, k: int = 3, cos: bool = False):
        super().__init__()
        self.conv1, self.conv2 = conv(ch, ch, k), conv(ch, ch, k)
        self.act = Act(0.2, cos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class Encoder(nn.Module):
    def __init__(self, cin: int, e_ch: int, opts: str):
        super().__init__()
        cos, self.t, self.u = "c" in opts, "t" in opts, "u" in opts
        self.recompute = False  # gradient checkpointing, see SAEHD.set_gradient_checkpointing
        if self.t:
            self.down1 = Downscale(cin, e_ch, 5, cos)
            self.res1 = ResidualBlock(e_ch, cos=cos)
            self.down2 = Downscale(e_ch, e_ch * 2, 5, cos)
            self.down3 = Downscale(e_ch * 2, e_ch * 4, 5, cos)
            self.down4 = Downscale(e_ch * 4, e_ch * 8, 5, cos)
            self.down5 = Downscale(e_ch * 8, e_ch * 8, 5, cos)
            self.res5 = ResidualBlock(e_ch * 8, cos=cos)
        else:
            self.down1 = DownscaleBlock(cin, e_ch, 4, 5, cos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.recompute
        if self.t:
            for block in (self.down1, self.res1, self.down2, self.down3, self.down4, self.down5, self.res5):
                x = _run(r, block, x)
        else:
            x = self.down1(x, r)
        x = x.flatten(1)
        if self.u:  # pixel norm
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x


class Inter(nn.Module):
    def __init__(self, cin: int, ae_ch: int, ae_out_ch: int, lowest: int, opts: str):
        super().__init__()
        self.lowest, self.ae_out_ch, self.t = lowest, ae_out_ch, "t" in opts
        self.dense1 = dense(cin, ae_ch)
        self.dense2 = dense(ae_ch, lowest * lowest * ae_out_ch)
        if not self.t:
            self.upscale1 = Upscale(ae_out_ch, ae_out_ch, cos="c" in opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(x)).view(-1, self.ae_out_ch, self.lowest, self.lowest)
        return x if self.t else self.upscale1(x)


class Decoder(nn.Module):
    def __init__(self, cin: int, d_ch: int, m_ch: int, opts: str):
        super().__init__()
        cos, self.t, self.d = "c" in opts, "t" in opts, "d" in opts
        self.recompute = False
        if self.t:
            chans, mchans = [d_ch * 8, d_ch * 8, d_ch * 4, d_ch * 2], [m_ch * 8, m_ch * 8, m_ch * 4, m_ch * 2]
        else:
            chans, mchans = [d_ch * 8, d_ch * 4, d_ch * 2], [m_ch * 8, m_ch * 4, m_ch * 2]
        for i, (a, b) in enumerate(zip([cin, *chans[:-1]], chans)):
            self.add_module(f"upscale{i}", Upscale(a, b, 3, cos))
            self.add_module(f"res{i}", ResidualBlock(b, cos=cos))
        for i, (a, b) in enumerate(zip([cin, *mchans[:-1]], mchans)):
            self.add_module(f"upscalem{i}", Upscale(a, b, 3, cos))
        self.n_up, self.n_upm = len(chans), len(mchans)
        self.out_conv = conv(d_ch * 2, 3, 1)
        if self.d:
            self.out_conv1, self.out_conv2, self.out_conv3 = (conv(d_ch * 2, 3, 3) for _ in range(3))
            self.add_module(f"upscalem{self.n_upm}", Upscale(m_ch * 2, m_ch, 3, cos))
            self.n_upm += 1
            self.out_convm = conv(m_ch, 1, 1)
        else:
            self.out_convm = conv(m_ch * 2, 1, 1)

    def logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-sigmoid face (N x 3 x R x R) and mask (N x 1 x R x R)."""
        x, r = z, self.recompute
        for i in range(self.n_up):
            up, res = getattr(self, f"upscale{i}"), getattr(self, f"res{i}")
            x = _run(r, lambda t, up=up, res=res: res(up(t)), x)
        if self.d:
            x = depth_to_space_dcr(torch.cat([self.out_conv(x), self.out_conv1(x), self.out_conv2(x), self.out_conv3(x)], 1))
        else:
            x = self.out_conv(x)
        return x, self._mask_logits(z)

    def _mask_logits(self, z: torch.Tensor) -> torch.Tensor:
        m = z
        for i in range(self.n_upm):
            m = _run(self.recompute, getattr(self, f"upscalem{i}"), m)
        return self.out_convm(m)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = self.logits(z)
        return torch.sigmoid(x), torch.sigmoid(m)

    def mask(self, z: torch.Tensor) -> torch.Tensor:
        """The mask branch alone (sigmoid), for when the face is not needed."""
        return torch.sigmoid(self._mask_logits(z))


MAXIMA = {"resolution": 640, "ae_dims": 1024, "e_dims": 256, "d_dims": 256, "d_mask_dims": 256}  # DFL's, spec §8.1


@dataclass(frozen=True)
class Architecture:
    """What fixes a network's shape (DFL's options marked † in spec §8.1)."""

    resolution: int = 128
    archi: str = "liae-ud"
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22

    @property
    def kind(self) -> str:
        return self.archi.split("-")[0]

    @property
    def opts(self) -> str:
        return self.archi.split("-")[1] if "-" in self.archi else ""

    def check(self) -> None:
        """ValueError unless this is a network DFL could build (a shared model's options are
        untrusted input: a resolution of a million would be gigabytes before the first step)."""
        for name, top in MAXIMA.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"{name} {str(value)[:20]!r}: must be a whole number from 1 to {top}")
        if not isinstance(self.archi, str):
            raise ValueError(f"archi {str(self.archi)[:20]!r}: must be text such as liae-ud")
        if self.kind not in ("df", "liae"):
            raise ValueError(f"archi {self.archi!r}: must start with df or liae")
        if set(self.opts) - set("udtc"):
            raise ValueError(f"archi {self.archi!r}: modifiers are u, d, t, c")
        step = 32 if "d" in self.opts else 16
        if self.resolution % step:
            raise ValueError(f"resolution {self.resolution} must be a multiple of {step} for {self.archi}")


class SAEHD(nn.Module):
    """Autoencoder pair. `forward(src, dst)` gives the four training predictions; `swap(dst)` the
    merger's three outputs (swapped face, its mask from the src path, dst mask from the dst path)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        arch.check()
        self.arch = arch
        opts = arch.opts
        res = arch.resolution
        self.encoder = Encoder(3, arch.e_dims, opts)
        enc_res = res // (32 if "t" in opts else 16)
        flat = arch.e_dims * 8 * enc_res * enc_res
        lowest = res // (32 if "d" in opts else 16)
        if arch.kind == "df":
            self.inter = Inter(flat, arch.ae_dims, arch.ae_dims, lowest, opts)
            self.decoder_src = Decoder(arch.ae_dims, arch.d_dims, arch.d_mask_dims, opts)
            self.decoder_dst = Decoder(arch.ae_dims, arch.d_dims, arch.d_mask_dims, opts)
        else:
            self.inter_AB = Inter(flat, arch.ae_dims, arch.ae_dims * 2, lowest, opts)
            self.inter_B = Inter(flat, arch.ae_dims, arch.ae_dims * 2, lowest, opts)
            self.decoder = Decoder(arch.ae_dims * 4, arch.d_dims, arch.d_mask_dims, opts)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute the encoder's and decoders' activations in the backward pass instead of keeping
        them: much less memory for the same numbers, about a third slower. Changes no weight, so it
        can be switched on or off for any model at any time."""
        for m in self.modules():
            if isinstance(m, (Encoder, Decoder)):
                m.recompute = on

    # codes -----------------------------------------------------------------
    def codes(self, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs for src->src and dst->dst (and the df true-face discriminator's codes).

        src and dst go through the encoder (and the shared inter) as one batch: larger matrix
        products for the same numbers (no layer mixes the samples of a batch)."""
        n = src.shape[0]
        code = self.encoder(torch.cat([src, dst]))
        if self.arch.kind == "df":
            z = self.inter(code)
            return z[:n], z[n:]
        ab = self.inter_AB(code)
        return torch.cat([ab[:n], ab[:n]], 1), torch.cat([self.inter_B(code[n:]), ab[n:]], 1)

    def decode_src(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.decoder_src if self.arch.kind == "df" else self.decoder)(z)

    def decode_dst(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.decoder_dst if self.arch.kind == "df" else self.decoder)(z)

    def swap_code(self, dst: torch.Tensor) -> torch.Tensor:
        """The dst face's code as the src decoder wants it (df: same; liae: [AB, AB])."""
        if self.arch.kind == "df":
            return self.inter(self.encoder(dst))
        ab = self.inter_AB(self.encoder(dst))
        return torch.cat([ab, ab], 1)

    # outputs ---------------------------------------------------------------
    def forward(self, src: torch.Tensor, dst: torch.Tensor) -> dict[str, torch.Tensor]:
        z_src, z_dst = self.codes(src, dst)
        if self.arch.kind == "df":
            pred_src, pred_src_mask = self.decode_src(z_src)
            pred_dst, pred_dst_mask = self.decode_dst(z_dst)
        else:  # liae: one decoder for both sides, one batch
            n = z_src.shape[0]
            pred, mask = self.decoder(torch.cat([z_src, z_dst]))
            pred_src, pred_dst, pred_src_mask, pred_dst_mask = pred[:n], pred[n:], mask[:n], mask[n:]
        return {"pred_src": pred_src, "pred_src_mask": pred_src_mask, "pred_dst": pred_dst,
                "pred_dst_mask": pred_dst_mask, "code_src": z_src, "code_dst": z_dst}  # fmt: skip

    def swap(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(swapped face, its mask from the src decoder, the dst decoder's mask) for dst crops.

        The encoder runs once, and the dst path runs only its (small) mask branch."""
        code = self.encoder(dst)
        if self.arch.kind == "df":
            z = self.inter(code)
            face, face_mask = self.decoder_src(z)
            return face, face_mask, self.decoder_dst.mask(z)
        ab = self.inter_AB(code)
        face, face_mask = self.decoder(torch.cat([ab, ab], 1))
        return face, face_mask, self.decoder.mask(torch.cat([self.inter_B(code), ab], 1))

    def gflop_per_sample(self) -> float:
        """Forward GFLOP (multiply-add = 2) of one sample through encoder, inter and one decoder."""
        flops = 0
        res = self.arch.resolution

        def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            nonlocal flops
            if isinstance(module, nn.Conv2d):
                flops += 2 * out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            elif isinstance(module, nn.Linear):
                flops += 2 * out.numel() * module.in_features

        handles = [m.register_forward_hook(hook) for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, res, res)
                self.forward(x, x)
        finally:
            for h in handles:
                h.remove()
        return flops / 2 / 1e9  # forward() runs both sides; per sample = half


@register_model("saehd")
def create_saehd(arch: Architecture) -> SAEHD:
    return SAEHD(arch)


QUICK96 = Architecture(resolution=96, archi="df-ud", ae_dims=128, e_dims=64, d_dims=64, d_mask_dims=16)


@register_model("quick96")
def create_quick96(arch: Architecture | None = None) -> SAEHD:
    """Quick96: fixed 96 px full-face df-ud (spec §8.7); any architecture passed is ignored."""
    return SAEHD(QUICK96)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

