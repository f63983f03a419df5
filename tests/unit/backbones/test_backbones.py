"""Backbones and patch features: stage shapes, weight files, feature grids, bad weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from dualpatch.errors import ConfigError, WeightsError
from dualpatch.features.backbones import BACKBONE_NAMES, get_spec, load_backbone, read_state_dict
from dualpatch.features.extractor import FeatureExtractor, to_tensor

EXPECTED = {
    # name: (stage modules, channels)
    "efficientnet_lite0": (("_blocks.4", "_blocks.10"), (40, 112)),
    "efficientnet_lite2": (("_blocks.6", "_blocks.14"), (48, 120)),
    "resnet50": (("layer2", "layer3"), (512, 1024)),
    "wide_resnet50_2": (("layer2", "layer3"), (512, 1024)),
}
RESNETS = ("resnet50", "wide_resnet50_2")


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Randomly initialised torchvision ResNets, saved as .pth and .safetensors state_dicts."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name in RESNETS:
        torch.manual_seed(0)
        state = getattr(torchvision.models, name)(weights=None).state_dict()
        out[name, ".pth"] = folder / f"{name}.pth"
        torch.save(state, out[name, ".pth"])
        out[name, ".safetensors"] = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(out[name, ".safetensors"]))
        out[name, "state"] = state
    return out


def stage_outputs(model: torch.nn.Module, stages, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` and return the outputs of the named modules."""
    outputs = {}
    modules = dict(model.named_modules())
    handles = [
        modules[s].register_forward_hook(lambda _m, _i, o, s=s: outputs.__setitem__(s, o))
        for s in stages
    ]
    try:
        with torch.no_grad():
            (model.extract_features if hasattr(model, "extract_features") else model)(x)
    finally:
        for h in handles:
            h.remove()
    return [outputs[s] for s in stages]


def check_stages(name: str, model: torch.nn.Module) -> None:
    stages, channels = EXPECTED[name]
    spec = get_spec(name)
    assert spec.stages == stages
    assert spec.channels == channels
    h, w = 64, 32
    shallow, deep = stage_outputs(model, stages, torch.rand(1, 3, h, w))
    assert shallow.shape == (1, channels[0], h // 8, w // 8)  # stride 8
    assert deep.shape == (1, channels[1], h // 16, w // 16)  # stride 16
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_stage_shapes(name):
    check_stages(name, load_backbone(name))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name", RESNETS)
def test_resnet_stage_shapes_from_weights_file(name, suffix, resnet_weights):
    model = load_backbone(name, weights=resnet_weights[name, suffix])
    check_stages(name, model)
    # the file's weights were really loaded
    saved = resnet_weights[name, "state"]
    for key in ("conv1.weight", "layer3.0.conv2.weight", "layer2.1.bn1.running_var"):
        assert torch.equal(model.state_dict()[key], saved[key])


def test_weights_file_without_classifier_head_is_fine(resnet_weights, tmp_path):
    full = resnet_weights["resnet50", "state"]
    state = {k: v for k, v in full.items() if not k.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save(state, path)
    model = load_backbone("resnet50", weights=path)
    check_stages("resnet50", model)
    # every weight the file holds was loaded (the head is not needed for features)
    loaded = model.state_dict()
    for key in ("conv1.weight", "layer2.1.bn1.running_var", "layer3.5.conv3.weight"):
        assert torch.equal(loaded[key], state[key])


def test_state_dict_wrapped_in_a_checkpoint_dict_is_read(resnet_weights, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": resnet_weights["resnet50", "state"], "epoch": 3}, path)
    state = read_state_dict(path)
    assert torch.equal(state["conv1.weight"], resnet_weights["resnet50", "state"]["conv1.weight"])


def test_backbone_names_and_unknown_name():
    assert set(BACKBONE_NAMES) == set(EXPECTED)
    with pytest.raises(ConfigError, match="resnet18"):
        get_spec("resnet18")


@pytest.mark.parametrize("size", [(320, 128), (250, 96), (64, 32), (120, 40)])
def test_feature_grid_efficientnet(size):
    fe = _lite0()
    feats = fe(torch.rand(2, 3, *size))
    h, w = size
    assert feats.features.shape[:2] == (2, fe.dim)
    assert fe.dim == sum(EXPECTED["efficientnet_lite0"][1]) == 152
    gh, gw = feats.grid
    # one patch per 8x8 pixels; sizes that are not a multiple of 8 round either way
    assert gh in (h // 8, -(-h // 8)) and gw in (w // 8, -(-w // 8))
    if h % 8 == 0 and w % 8 == 0:
        assert (gh, gw) == (h // 8, w // 8)
    assert feats.flat().shape == (2 * gh * gw, fe.dim)
    assert torch.all(torch.isfinite(feats.features))


@pytest.mark.parametrize("size", [(320, 128), (250, 96)])
def test_feature_grid_resnet(size, resnet_weights):
    fe = FeatureExtractor("resnet50", weights=resnet_weights["resnet50", ".safetensors"])
    assert fe.dim == 1536
    feats = fe(torch.rand(1, 3, *size))
    h, w = size
    gh, gw = feats.grid
    assert feats.features.shape[:2] == (1, 1536)
    assert gh in (h // 8, -(-h // 8)) and gw in (w // 8, -(-w // 8))
    if h % 8 == 0 and w % 8 == 0:
        assert (gh, gw) == (h // 8, w // 8)


def test_flat_is_row_major():
    fe = _lite0()
    feats = fe(torch.rand(2, 3, 64, 32))
    flat = feats.flat()
    gh, gw = feats.grid
    b, i, j = 1, 5, 2
    assert torch.equal(flat[b * gh * gw + i * gw + j], feats.features[b, :, i, j])


def test_features_are_local():
    """A change at the top of a tall image leaves the bottom patches' features untouched."""
    fe = _lite0()
    x = torch.rand(1, 3, 640, 32, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[..., :16, :] = 1.0
    fx, fy = fe(x).features, fe(y).features
    assert not torch.allclose(fx[..., 0, :], fy[..., 0, :])
    # beyond the receptive field (and the bilinear alignment of the deep map) nothing changes
    assert torch.equal(fx[..., -20:, :], fy[..., -20:, :])


def test_to_tensor():
    imgs = [np.full((4, 6, 3), 255, np.uint8), np.zeros((4, 6, 3), np.uint8)]
    t = to_tensor(imgs)
    assert t.shape == (2, 3, 4, 6) and t.dtype == torch.float32
    assert t[0].min() == 1.0 and t[1].max() == 0.0
    assert to_tensor(imgs[0]).shape == (1, 3, 4, 6)


def test_unknown_normalization_raises():
    with pytest.raises(ConfigError, match="normalization"):
        FeatureExtractor("efficientnet_lite0", normalization="zscore")


_LITE0 = []


def _lite0() -> FeatureExtractor:
    if not _LITE0:
        _LITE0.append(FeatureExtractor("efficientnet_lite0"))
    return _LITE0[0]


# -- weights that must be refused -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_missing_weights_file(tmp_path, suffix):
    path = tmp_path / f"nothing{suffix}"
    with pytest.raises(WeightsError, match="not found") as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_corrupt_weights_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)


def test_truncated_safetensors(tmp_path, resnet_weights):
    data = resnet_weights["resnet50", ".safetensors"].read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)


def test_state_dict_of_another_architecture(tmp_path):
    r18 = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(r18, path)
    # same key names, other shapes
    with pytest.raises(WeightsError, match="do not fit resnet50") as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)
    # entirely other key names
    with pytest.raises(WeightsError, match="do not fit efficientnet_lite0") as err:
        load_backbone("efficientnet_lite0", weights=path)
    assert str(path) in str(err.value)


def test_state_dict_with_extra_keys_is_refused(tmp_path, resnet_weights):
    state = dict(resnet_weights["resnet50", "state"])
    state["layer5.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="unexpected") as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)


def test_partial_state_dict_is_refused(tmp_path, resnet_weights):
    state = {k: v for k, v in resnet_weights["resnet50", "state"].items() if "layer4" not in k}
    path = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError, match="missing") as err:
        load_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)


def test_resnet_without_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALPATCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(WeightsError, match="--weights") as err:
        load_backbone("resnet50")
    assert "resnet50" in str(err.value)
    assert str(tmp_path / "empty-torch-home") in str(err.value)  # says where it looked
    with pytest.raises(WeightsError, match="--weights"):
        FeatureExtractor("wide_resnet50_2")


class _Payload:
    """Unpickling this would create a file: proof that arbitrary code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_with_arbitrary_object_is_refused(tmp_path, how):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    obj = {"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}
    if how == "pickle":
        with path.open("wb") as f:
            pickle.dump(obj, f, protocol=2)
    else:
        torch.save(obj, path)
    with pytest.raises(WeightsError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_state_dict_of_non_tensors_is_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"conv1.weight": 1.0, "epoch": 3}, path)
    with pytest.raises(WeightsError, match="tensors") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    path2 = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path2)
    with pytest.raises(WeightsError, match="tensors"):
        read_state_dict(path2)


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_weights_found_in_the_torch_cache(name, resnet_weights, tmp_path, monkeypatch):
    """torchvision's weights API file name in $TORCH_HOME/hub/checkpoints is used, offline."""
    monkeypatch.setenv("DUALPATCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet_weights[name, ".pth"].read_bytes())
    model = load_backbone(name)
    expected = resnet_weights[name, "state"]["layer2.0.conv1.weight"]
    assert torch.equal(model.state_dict()["layer2.0.conv1.weight"], expected)
    check_stages(name, model)
