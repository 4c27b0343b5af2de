"""Detector/landmarker plugins: one contract test over the registries, plus the S3FD/FAN ports'
weight formats (DFL pickled .npy and face-alignment .pth) with random weights, and real weights
when `../shared/weights/` has them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from facelab.detect import base
from facelab.detect.base import Detection, create_detector, create_landmarker, list_detectors, list_landmarkers
from facelab.errors import UserError
from facelab.io.frames import read_image
from media import REPO

SHARED_WEIGHTS = REPO.parent / "shared" / "weights"
_LISTS = ("m", "top_m", "conv_last", "bn_end", "l", "bl", "al")


def _dfl_name(key: str, model: str) -> str:
    parts, out, i = key.split("."), [], 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i + 1].isdigit() and parts[i] in _LISTS:
            out.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return f"{model}/" + "/".join(out) + ":0"


def _fa_name(key: str) -> str:
    """Our FAN names -> face-alignment's (flat hourglass levels, Sequential downsample)."""
    key = key.replace("down_bn1.", "downsample.0.").replace("down_conv1.", "downsample.2.")
    parts = key.split(".")
    if parts[0] == "m":
        depth = 0
        i = 2
        while parts[i] == "b2_plus" and parts[i + 1] in ("b1", "b2", "b3", "b2_plus"):
            depth += 1
            i += 1
        return f"m{parts[1]}.{parts[i]}_{4 - depth}." + ".".join(parts[i + 1 :])
    if parts[0] == "top_m":
        return f"top_m_{parts[1]}." + ".".join(parts[2:])
    if parts[0] in ("conv_last", "bn_end", "l", "bl", "al") and parts[1].isdigit():
        return f"{parts[0]}{parts[1]}." + ".".join(parts[2:])
    return key


def _random_net(kind: str):
    from facelab.detect.s3fd_fan import FANNet, S3FDNet

    torch.manual_seed({"S3FD": 1, "FAN": 2}[kind])
    net = (S3FDNet if kind == "S3FD" else FANNet)().eval()
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return net


def _write_dfl(net, kind: str, path):
    d = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        a = v.numpy()
        d[_dfl_name(k, kind)] = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a
    path.write_bytes(pickle.dumps(d, protocol=4))
    return path


def _write_pth(net, kind: str, path):
    state = {(_fa_name(k) if kind == "FAN" else k): v for k, v in net.state_dict().items()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for kind in ("S3FD", "FAN"):
        net = _random_net(kind)
        files[kind] = {"net": net, "npy": _write_dfl(net, kind, folder / f"{kind}.npy"),
                       "pth": _write_pth(net, kind, folder / f"{kind}.pth")}  # fmt: skip
    return files


def _plugin_args(name: str, weight_files) -> dict:
    if name == "s3fd":
        return {"weights": str(weight_files["S3FD"]["npy"]), "device": "cpu"}
    if name == "fan":
        return {"weights": str(weight_files["FAN"]["npy"]), "device": "cpu"}
    if name == "dlib68":
        pytest.importorskip("dlib")
    return {}


@pytest.mark.parametrize("name", list_detectors())
def test_detector_contract(name, weight_files, media):
    frame = read_image(media("obama2.jpg"))
    # random S3FD weights find no face at the usual threshold: take every candidate box instead,
    # so the checks below always run on real decoded outputs
    extra = {"min_score": 0.0} if name == "s3fd" else {}
    dets = create_detector(name, **_plugin_args(name, weight_files), **extra).detect(frame)
    h, w = frame.shape[:2]
    assert isinstance(dets, list) and dets, f"{name} returned no candidates"
    for d in dets:
        assert isinstance(d, Detection) and 0 <= d.score <= 1
        l, t, r, b = d.rect
        assert np.isfinite(d.rect).all() and l < r and t < b
    assert [d.area for d in dets] == sorted((d.area for d in dets), reverse=True)
    if name == "blazeface":  # the embedded model is real: obama2 has one face, inside the frame
        assert len(dets) == 1
        l, t, r, b = dets[0].rect
        assert 0 <= l < r <= w and 0 <= t < b <= h


@pytest.mark.parametrize("name", list_landmarkers())
def test_landmarker_contract(name, weight_files, media):
    frame = read_image(media("obama2.jpg"))
    dets = create_detector("blazeface").detect(frame)
    result = create_landmarker(name, **_plugin_args(name, weight_files)).landmarks(frame, dets)
    assert len(result) == len(dets) == 1
    lm = result[0]
    assert lm is not None and lm.shape == (68, 2) and lm.dtype == np.float32
    h, w = frame.shape[:2]
    assert (lm[:, 0] > -0.5 * w).all() and (lm[:, 0] < 1.5 * w).all()


@pytest.mark.parametrize("name", base.list_identities())
def test_identity_contract(name, media):
    """An embedding per face, float32 of the model's length, finite; the same face in the same
    frame is the same embedding; a key that names model and version."""
    frame = read_image(media("t1.jpg"))
    dets = create_detector("blazeface").detect(frame)
    marks = [m for m in create_landmarker("facemesh68").landmarks(frame, dets) if m is not None]
    model = base.create_identity(name)
    out = model.embed(frame, marks)
    assert len(out) == len(marks) == 6 and model.embed(frame, []) == []
    assert all(e.shape == (model.dims,) and e.dtype == np.float32 and np.isfinite(e).all() for e in out)
    assert np.allclose(model.embed(frame, marks[2:3])[0], out[2], atol=1e-5)  # batching changes nothing
    assert model.key == f"{name}/{model.version}" and 0 < model.threshold


def test_every_listed_plugin_is_registered_by_its_module():
    import importlib

    for registry in (base.DETECTORS, base.LANDMARKERS, base.IDENTITIES):
        for name, module in registry.lazy.items():
            importlib.import_module(module)
            assert name in registry.registered(), name
    with pytest.raises(ValueError, match="registered twice"):
        base.register_detector("blazeface")(object)
    with pytest.raises(ValueError, match="unknown detector 'retina'"):
        create_detector("retina")


@pytest.mark.parametrize("kind", ["S3FD", "FAN"])
def test_dfl_npy_and_face_alignment_pth_load_to_the_same_network(kind, weight_files):
    from facelab.detect.s3fd_fan import FANNet, S3FDNet, load_into, read_weights

    ref = weight_files[kind]["net"]
    x = torch.rand(1, 3, 128, 128) * (255 if kind == "S3FD" else 1)
    with torch.no_grad():
        want = ref(x)
        for fmt in ("npy", "pth"):
            net = (S3FDNet if kind == "S3FD" else FANNet)().eval()
            path = weight_files[kind][fmt]
            load_into(net, read_weights(path, kind), path, kind)
            got = net(x)
            pairs = zip(got, want) if isinstance(got, list) else [(got, want)]
            assert all(torch.equal(a, b) for a, b in pairs), fmt


def test_wrong_missing_and_malicious_weight_files_are_clear_errors(weight_files, tmp_path):
    with pytest.raises(UserError, match=r"does not hold S3FD weights .* give the S3FD file"):
        create_detector("s3fd", weights=str(weight_files["FAN"]["npy"]), device="cpu")
    with pytest.raises(UserError, match="--detector-weights"):
        create_detector("s3fd")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not torch at all")
    with pytest.raises(UserError, match="not a weights file FaceLab can read"):
        create_landmarker("fan", weights=str(junk), device="cpu")
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "S3FD.npy"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR.")
    with pytest.raises(UserError, match=r"refused .*os\.system"):
        create_detector("s3fd", weights=str(evil), device="cpu")
    assert not sentinel.exists()


def test_dlib_models_without_dlib_say_how_to_install(monkeypatch):
    import sys

    from facelab.detect.base import create_identity

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if setup had not installed it
    for make in (lambda: create_landmarker("dlib68"), create_identity):
        with pytest.raises(UserError, match="run setup again .*dlib-bin"):
            make()


def test_s3fd_decoding_places_the_box_on_its_anchor():
    from facelab.detect.s3fd_fan import s3fd_decode

    outs = []
    for i in range(6):
        size = 64 // 2**i
        cls = np.zeros((2, size, size), np.float32)
        cls[0] = 1
        reg = np.zeros((4, size, size), np.float32)
        if i == 2:  # stride 16: anchor (5, 3) -> centre (88, 56), size 64
            cls[:, 3, 5] = (0.1, 0.9)
        outs += [cls, reg]
    (l, t, r, b, score), = s3fd_decode(outs)
    assert (l, t, r, b) == pytest.approx((56, 24, 120, 88)) and score == pytest.approx(0.9)


def test_fan_decoding_maps_a_heatmap_peak_back_to_the_frame():
    from facelab.detect.s3fd_fan import fan_decode

    heat = np.zeros((68, 64, 64), np.float32)
    heat[:, 20, 30] = 1.0
    heat[:, 20, 31] = 0.5  # right neighbour larger: +0.25 in x
    centre, scale = np.array([400.0, 300.0]), 2.0  # crop = 400 px square -> 64 px heatmap
    pts = fan_decode(heat, centre, scale)
    expected_x = (30 + 0.25 + 0.5) / 64 * 400 + 400 - 200
    expected_y = (20 + 0.5) / 64 * 400 + 300 - 200
    np.testing.assert_allclose(pts[0], [expected_x, expected_y], atol=1e-4)


@pytest.mark.skipif(not (SHARED_WEIGHTS / "S3FD.npy").exists(), reason="no real S3FD.npy in ../shared/weights")
def test_real_s3fd_and_fan_find_and_place_the_face(media):  # pragma: no cover - needs real weights
    frame = read_image(media("obama.jpg"))
    dets = create_detector("s3fd", weights=str(SHARED_WEIGHTS / "S3FD.npy"), device="cpu").detect(frame)
    assert len(dets) == 1
    fan = SHARED_WEIGHTS / "2DFAN.npy"
    if fan.exists():
        lm = create_landmarker("fan", weights=str(fan), device="cpu").landmarks(frame, dets)[0]
        l, t, r, b = dets[0].rect
        assert (lm[36:48, 0] > l).all() and (lm[36:48, 0] < r).all()
