"""S3FD detector and 2DFAN-4 landmarker: PyTorch ports with DFL's pre/post-processing (spec §5).

Weights are never downloaded. They come from files the user already has:
- DFL's `S3FD.npy` / `2DFAN.npy`: pickled dicts `{"conv1_1/weight:0": ndarray}` read through the
  allow-list unpickler (numpy arrays only); convs are (kh, kw, in, out) there, (out, in, kh, kw)
  here; list layers are `m_0/...`.
- face-alignment's `s3fd-*.pth` / `2DFAN4-*.pth` state dicts, loaded with `weights_only=True`;
  its hourglass is flat (`m0.b1_4`, `m0.b2_plus_1`) and its downsample a Sequential.
- our own `.safetensors` (same names as the modules here).

Padding follows leras: "SAME" = symmetric k//2 (stride 2 included); fc6 is 3x3 with padding 3.
Both models run batched on `device` (auto | cpu | cuda[:i] | mps).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.detect.base import Detection, FaceDetector, Landmarker, register_detector, register_landmarker
from facelab.errors import UserError
from facelab.io.faceimage import dfl_weights_cap, read_dfl_arrays
from facelab.nn.device import resolve_device
from facelab.types import ImageBGR, Landmarks68


# ---------------------------------------------------------------- S3FD


class L2Norm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int | None = None, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, bias=bias)


class S3FDNet(nn.Module):
    """VGG16-SSD face detector. In: N x 3 x H x W RGB minus (104, 117, 123). Out: 6 (cls, reg)
    pairs, cls softmaxed (N x 2 x h x w), reg N x 4 x h x w, strides 4 .. 128."""

    VGG = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
           ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 256, 512),
           ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
           ("conv5_3", 512, 512)]  # fmt: skip
    HEADS = [("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2), ("fc7", 1024, 2),
             ("conv6_2", 512, 2), ("conv7_2", 256, 2)]  # fmt: skip

    def __init__(self):
        super().__init__()
        for name, cin, cout in self.VGG:
            self.add_module(name, _conv(cin, cout))
        self.fc6 = _conv(512, 1024, 3, pad=3)
        self.fc7 = _conv(1024, 1024, 1)
        self.conv6_1 = _conv(1024, 256, 1)
        self.conv6_2 = _conv(256, 512, 3, stride=2)
        self.conv7_1 = _conv(512, 128, 1)
        self.conv7_2 = _conv(128, 256, 3, stride=2)
        self.conv3_3_norm = L2Norm(256)
        self.conv4_3_norm = L2Norm(512)
        self.conv5_3_norm = L2Norm(512)
        for name, cin, ncls in self.HEADS:
            self.add_module(f"{name}_mbox_conf", _conv(cin, ncls))
            self.add_module(f"{name}_mbox_loc", _conv(cin, 4))
        self.register_buffer("mean_rgb", torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu, pool = F.relu, lambda t: F.max_pool2d(t, 2, 2)
        x = x - self.mean_rgb
        x = pool(relu(self.conv1_2(relu(self.conv1_1(x)))))
        x = pool(relu(self.conv2_2(relu(self.conv2_1(x)))))
        f3 = relu(self.conv3_3(relu(self.conv3_2(relu(self.conv3_1(x))))))
        f4 = relu(self.conv4_3(relu(self.conv4_2(relu(self.conv4_1(pool(f3)))))))
        f5 = relu(self.conv5_3(relu(self.conv5_2(relu(self.conv5_1(pool(f4)))))))
        f7 = relu(self.fc7(relu(self.fc6(pool(f5)))))
        f6_2 = relu(self.conv6_2(relu(self.conv6_1(f7))))
        f7_2 = relu(self.conv7_2(relu(self.conv7_1(f6_2))))
        feats = [self.conv3_3_norm(f3), self.conv4_3_norm(f4), self.conv5_3_norm(f5), f7, f6_2, f7_2]
        out = []
        for (name, _, _), f in zip(self.HEADS, feats):
            cls = getattr(self, f"{name}_mbox_conf")(f)
            if cls.shape[1] == 4:  # max-out background of the first head
                cls = torch.cat([cls[:, :3].amax(1, keepdim=True), cls[:, 3:4]], 1)
            out += [F.softmax(cls, 1), getattr(self, f"{name}_mbox_loc")(f)]
        return out


def s3fd_decode(outputs: list[np.ndarray], min_score: float = 0.5) -> list[tuple[float, float, float, float, float]]:
    """DFL's S3FD decoding for one image: anchors per level, NMS 0.3 (+1 px areas), score >= 0.5."""
    boxes = []
    for i in range(6):
        cls, reg = outputs[2 * i], outputs[2 * i + 1]  # 2 x h x w, 4 x h x w
        stride = 2 ** (i + 2)
        ys, xs = np.nonzero(cls[1] > 0.05)
        if len(ys) == 0:
            continue
        loc = reg[:, ys, xs].T
        centre = np.stack([xs * stride + stride / 2, ys * stride + stride / 2], 1) + loc[:, :2] * 0.1 * stride * 4
        wh = stride * 4 * np.exp(loc[:, 2:] * 0.2)
        boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2, cls[1, ys, xs][:, None]], 1))
    if not boxes:
        return []
    dets = np.concatenate(boxes)
    keep = _nms(dets, 0.3)
    return [tuple(float(v) for v in dets[k]) for k in keep if dets[k, 4] >= min_score]


def _nms(dets: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[np.nonzero(ovr <= thresh)[0] + 1]
    return keep


# ---------------------------------------------------------------- FAN


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout // 2, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), _conv(cout // 2, cout // 4, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), _conv(cout // 4, cout // 4, bias=False)
        self.down_bn1 = nn.BatchNorm2d(cin) if cin != cout else None
        self.down_conv1 = _conv(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        skip = x if self.down_conv1 is None else self.down_conv1(F.relu(self.down_bn1(x)))
        return torch.cat([o1, o2, o3], 1) + skip


class HourGlass(nn.Module):
    def __init__(self, cin: int, depth: int):
        super().__init__()
        self.b1, self.b2 = ConvBlock(cin, 256), ConvBlock(cin, 256)
        self.b2_plus = HourGlass(256, depth - 1) if depth > 1 else ConvBlock(256, 256)
        self.b3 = ConvBlock(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.b3(self.b2_plus(self.b2(F.avg_pool2d(x, 2, 2))))
        return self.b1(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class FANNet(nn.Module):
    """2DFAN-4: in N x 3 x 256 x 256 RGB [0, 1], out N x 68 x 64 x 64 heatmaps (last stack)."""

    def __init__(self, stacks: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        self.m = nn.ModuleList(HourGlass(256, 4) for _ in range(stacks))
        self.top_m = nn.ModuleList(ConvBlock(256, 256) for _ in range(stacks))
        self.conv_last = nn.ModuleList(_conv(256, 256, 1) for _ in range(stacks))
        self.bn_end = nn.ModuleList(nn.BatchNorm2d(256) for _ in range(stacks))
        self.l = nn.ModuleList(_conv(256, 68, 1) for _ in range(stacks))  # noqa: E741 - DFL's name
        self.bl = nn.ModuleList(_conv(256, 256, 1) for _ in range(stacks - 1))
        self.al = nn.ModuleList(_conv(68, 256, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, 2)))
        previous, out = x, x
        for i in range(len(self.m)):
            ll = F.relu(self.bn_end[i](self.conv_last[i](self.top_m[i](self.m[i](previous)))))
            out = self.l[i](ll)
            if i < len(self.m) - 1:
                previous = previous + self.bl[i](ll) + self.al[i](out)
        return out


def fan_crop_matrix(centre: np.ndarray, scale: float, resolution: float = 256.0) -> np.ndarray:
    """FAN's crop: a square of 200*scale px around `centre` -> resolution x resolution (2x3)."""
    h = 200.0 * scale
    return np.array([[resolution / h, 0, resolution * (-centre[0] / h + 0.5)],
                     [0, resolution / h, resolution * (-centre[1] / h + 0.5)]])  # fmt: skip


def fan_decode(heatmaps: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """DFL's heatmap decoding: argmax, quarter-pixel shift toward the larger neighbour, +0.5."""
    n, h, w = heatmaps.shape
    idx = heatmaps.reshape(n, -1).argmax(1)
    pts = np.stack([idx % w, idx // w], 1).astype(np.float64)
    for i in range(n):
        x, y = int(pts[i, 0]), int(pts[i, 1])
        if 0 < x < w - 1 and 0 < y < h - 1:
            diff = np.array([heatmaps[i, y, x + 1] - heatmaps[i, y, x - 1], heatmaps[i, y + 1, x] - heatmaps[i, y - 1, x]])
            pts[i] += np.sign(diff) * 0.25
    pts += 0.5
    inv = cv2.invertAffineTransform(fan_crop_matrix(centre, scale, w))
    return (pts @ inv[:, :2].T + inv[:, 2]).astype(np.float32)


# ---------------------------------------------------------------- weights

_LIST_ATTRS = ("top_m", "conv_last", "bn_end", "bl", "al", "m", "l")


def _dfl_key(key: str, model: str) -> str:
    key = key.split(":")[0]
    if key.startswith(model + "/"):
        key = key[len(model) + 1 :]
    parts = []
    for part in key.split("/"):
        m = re.fullmatch(rf"({'|'.join(_LIST_ATTRS)})_(\d+)", part)
        parts.extend([m.group(1), m.group(2)] if m else [part])
    return ".".join(parts)


def _fa_key(key: str) -> str:
    """face-alignment's names -> ours (hourglass levels, downsample Sequential, stack suffixes)."""
    key = key.replace("downsample.0.", "down_bn1.").replace("downsample.2.", "down_conv1.")
    m = re.match(r"m(\d+)\.(b1|b2|b3|b2_plus)_(\d)\.(.*)", key)
    if m:
        stack, block, level, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        return f"m.{stack}." + "b2_plus." * (4 - level) + f"{block}.{rest}"
    m = re.match(r"(top_m|conv_last|bn_end|bl|al|l)_?(\d+)\.(.*)", key)
    if m and not key.startswith(("conv1_", "conv2_", "conv3_", "conv4_", "conv5_", "conv6_", "conv7_")):
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return key


def read_weights(path: Path, model: str, max_bytes: int = 1 << 30) -> dict[str, torch.Tensor]:
    """A weights file as our state-dict names (DFL .npy, face-alignment .pth, or .safetensors);
    a file past `max_bytes` is refused before it is read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    if path.stat().st_size > max_bytes:
        raise UserError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, more than {model}'s weights take: not the right file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".pth", ".pt", ".tar"):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            return {_fa_key(k.removeprefix("module.")): v for k, v in state.items()}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's wrong file
        raise UserError(f"{path} is not a weights file FaceLab can read ({type(exc).__name__}: {exc})") from None
    out = {}
    for key, arr in read_dfl_arrays(path, max_bytes).items():
        if arr.ndim == 4:  # conv (kh, kw, in, out) -> (out, in, kh, kw)
            arr = arr.transpose(3, 2, 0, 1)
        out[_dfl_key(key, model)] = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
    return out


def load_into(net: nn.Module, weights: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Copy weights into `net`, refusing a file that does not fit (wrong model, wrong file)."""
    state = net.state_dict()
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"{path} does not hold {what} weights ({len(missing)} of {len(state)} tensors missing, "
            f"e.g. {missing[0]}): give the {what} file"
        )
    for key, target in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not torch.is_tensor(weights[key]) or not weights[key].is_floating_point():
            raise UserError(f"{path}: {key} is not a table of numbers: give the {what} file")
        value = weights[key].reshape(target.shape) if weights[key].numel() == target.numel() else None
        if value is None:
            raise UserError(f"{path}: {key} has shape {tuple(weights[key].shape)}, {what} needs {tuple(target.shape)}")
        target.copy_(value)


def build_net(net: nn.Module, weights: str | None, device: str, model: str, what: str, flag: str) -> tuple[nn.Module, torch.device]:
    """`net` in eval mode with the user's weights file loaded, on the resolved device."""
    if not weights:
        raise UserError(
            f"the {what} needs its weights file, which FaceLab does not download: pass {flag} PATH "
            f"(DFL's {model if model != 'FAN' else '2DFAN'}.npy from a DeepFaceLab install, or face-alignment's .pth)"
        )
    dev = resolve_device(device)
    net = net.eval()
    with torch.no_grad():
        cap = dfl_weights_cap(sum(t.numel() for t in net.state_dict().values()))
        load_into(net, read_weights(Path(weights), model, cap), Path(weights), "2DFAN" if model == "FAN" else model)
    return net.to(dev), dev


@register_detector("s3fd")
class S3FDDetector(FaceDetector):
    """DFL's default detector. Weights from `--detector-weights` (S3FD.npy or s3fd .pth)."""

    def __init__(self, weights: str | None = None, device: str = "auto", min_score: float = 0.5, **_ignored):  # noqa: ANN003
        self.net, self.device = build_net(S3FDNet(), weights, device, "S3FD", "s3fd detector", "--detector-weights")
        self.min_score = min_score

    @staticmethod
    def input_scale(h: int, w: int) -> float:
        d = max(w, h)
        return d / max(64, 640 if d >= 1280 else d / 2)

    def detect(self, frame_bgr: ImageBGR) -> list[Detection]:
        return self.detect_batch([frame_bgr])[0]

    @torch.no_grad()
    def detect_batch(self, frames_bgr: Sequence[ImageBGR]) -> list[list[Detection]]:
        if not frames_bgr:
            return []
        h, w = frames_bgr[0].shape[:2]
        if any(f.shape[:2] != (h, w) for f in frames_bgr):  # only same-size frames batch
            return [self.detect_batch([f])[0] for f in frames_bgr]
        s = self.input_scale(h, w)
        rgb = [cv2.resize(f[:, :, ::-1], (int(w / s), int(h / s)), interpolation=cv2.INTER_LINEAR) for f in frames_bgr]
        x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float().to(self.device)
        outs = [o.float().cpu().numpy() for o in self.net(x)]
        results = []
        for b in range(len(frames_bgr)):
            dets = []
            for l, t, r, bt, score in s3fd_decode([o[b] for o in outs], self.min_score):
                l, t, r, bt = l * s, t * s, r * s, bt * s
                if min(r - l, bt - t) < 40:
                    continue
                bt += (bt - t) * 0.1  # extend to the chin, as DFL does for 2DFAN
                dets.append(Detection((l, t, r, bt), score))
            results.append(sorted(dets, key=lambda d: -d.area))
        return results


@register_landmarker("fan")
class FANLandmarker(Landmarker):
    """2DFAN-4 landmarks (DFL's default). Weights from `--landmarker-weights`."""

    def __init__(self, weights: str | None = None, device: str = "auto", **_ignored):  # noqa: ANN003
        self.net, self.device = build_net(FANNet(), weights, device, "FAN", "fan landmarker", "--landmarker-weights")

    @torch.no_grad()
    def landmarks(self, frame_bgr: ImageBGR, detections: Sequence[Detection]) -> list[Landmarks68 | None]:
        if not detections:
            return []
        crops, params = [], []
        for det in detections:
            l, t, r, b = det.rect
            scale = (r - l + b - t) / 195.0
            centre = np.array([(l + r) / 2, (t + b) / 2])
            mat = fan_crop_matrix(centre, scale)
            crops.append(cv2.warpAffine(frame_bgr, mat, (256, 256), flags=cv2.INTER_LINEAR)[:, :, ::-1])
            params.append((centre, scale))
        x = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(self.device)
        heat = self.net(x).float().cpu().numpy()
        return [fan_decode(hm, c, s) for hm, (c, s) in zip(heat, params)]
