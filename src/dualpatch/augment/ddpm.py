"""A small conditional inpainting diffusion model trained on the data's own defects.

Recipe (known good on a 2-core CPU): a ``UNet2DModel`` without attention on 64x64 patches taking
(noisy patch, mask, masked patch), v-prediction with the ``squaredcos_cap_v2`` schedule, AdamW 3e-4,
batch 16, bf16 autocast, EMA weights for sampling, DDIM sampling. Training patches are cut around
the training split's defects (class 1) and from normal images under random masks (class 0, so the
model also knows the plain surface); sampling asks for class 1 inside a real defect mask moved onto
a normal image and keeps every pixel outside the mask.

The model is convolutional, so it samples a window of any size around the mask at the scale it was
trained at: long cracks come out in one pass, with neither tiling nor distortion.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage
from tqdm import tqdm

from ..data import Dataset
from ..errors import ConfigError, ModelFileError
from ..fileio import atomic_path, sha256_file, write_json
from .manifest import ManifestRow, open_output
from .sources import (
    DefectShape,
    data_channels,
    defect_shapes,
    place,
    read_pixels,
    thin,
    training_sources,
)

FORMAT = "dualpatch-ddpm-inpaint"
VERSION = 1
WEIGHTS = "unet.safetensors"  # EMA weights: what sampling uses
STATE = "train_state.safetensors"  # raw weights, optimizer moments, noise generator state
CONFIG = "config.json"  # written last: names the step and the hashes of the two files above


@dataclass
class DDPMConfig:
    """Model and training settings; the defaults are the recipe above."""

    patch: int = 64
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    batch: int = 16
    lr: float = 3e-4
    ema_decay: float = 0.999
    #: share of each batch cut around real defects; the rest is normal surface under random masks
    defect_fraction: float = 0.625
    #: model pixels per image pixel; None: chosen from the defects' sizes (see ``auto_scale``)
    scale: float | None = None
    sample_steps: int = 50
    #: bf16 autocast; None: on CUDA and on CPUs with bf16 instructions (AMX/AVX512-BF16)
    bf16: bool | None = None
    save_every: int = 200
    #: normal images held in memory for training (a random subset of larger sets)
    max_normals: int = 256
    train_timesteps: int = 1000

    @classmethod
    def from_json(cls, d: dict) -> DDPMConfig:
        return cls(**{k: tuple(v) if k == "channels" else v for k, v in d.items()})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: settings a resumed model keeps whatever is asked; the others may change between runs
KEPT_ON_RESUME = ("patch", "channels", "layers_per_block", "batch", "lr", "ema_decay",
                  "defect_fraction", "scale", "max_normals", "train_timesteps")  # fmt: skip


# ----------------------------------------------------------------------------- model


def build_unet(cfg: DDPMConfig, channels: int):
    """``in = 2C+1`` (noisy patch, mask, masked patch), ``out = C``, two classes (normal/defect)."""
    from diffusers import UNet2DModel

    n = len(cfg.channels)
    return UNet2DModel(
        sample_size=cfg.patch,
        in_channels=2 * channels + 1,
        out_channels=channels,
        block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        add_attention=False,
        norm_num_groups=min(32, cfg.channels[0]),
        num_class_embeds=2,
    )


def build_schedulers(cfg: DDPMConfig):
    """DDPM schedule for training, DDIM (same betas, trailing steps) for sampling."""
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
    )
    sample = DDIMScheduler.from_config(train.config, timestep_spacing="trailing", clip_sample=True)
    return train, sample


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def cpu_has_bf16() -> bool:
    """True where the CPU runs bf16 matrix maths natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _use_bf16(cfg: DDPMConfig, device: torch.device) -> bool:
    if cfg.bf16 is not None:
        return cfg.bf16
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def auto_scale(shapes: Sequence[DefectShape], patch: int) -> float:
    """Scale at which a typical defect's short side takes half a patch (at most 1, at least 1/4).

    Thick defects are seen whole with some surface around them; thin ones keep full resolution.
    """
    short = float(np.median([min(s.mask.shape) for s in shapes]))
    return float(np.clip(patch / (2.0 * short), 0.25, 1.0))


# ----------------------------------------------------------------------------- training data


class PatchSampler:
    """Draws training batches: augmented patches around defects and of normal surface."""

    def __init__(self, dataset: Dataset, cfg: DDPMConfig, seed: int, progress: bool = True):
        normals, defects = training_sources(dataset)
        self.cfg = cfg
        self.channels = data_channels(normals + defects)
        self.shapes = defect_shapes(defects)
        self.scale = cfg.scale or auto_scale(self.shapes, cfg.patch)
        pick = sorted(np.random.default_rng(seed).permutation(len(normals))[: cfg.max_normals])
        todo = defects + [normals[i] for i in pick]
        bar = tqdm(todo, desc="load", unit="img", leave=False, disable=not progress)
        images = [read_pixels(s, self.channels) for s in bar]
        self.defects = [(img, s.mask()) for img, s in zip(images, defects, strict=False)]
        self.normals = images[len(defects) :]
        # Pixels on a mask, per defect image: patch centres are drawn from these.
        self.defect_points = [np.argwhere(m) for _, m in self.defects]

    def _warp(self, rng, img, mask, cy, cx) -> tuple[np.ndarray, np.ndarray | None]:
        """Cut a patch centred near (cy, cx): random scale jitter, rotation, flips, shift."""
        p = self.cfg.patch
        s = self.scale * rng.uniform(0.8, 1.25)
        cy += rng.uniform(-0.25, 0.25) * p / s
        cx += rng.uniform(-0.25, 0.25) * p / s
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(-10, 10)), s)
        m[:, 2] += (p / 2 - cx, p / 2 - cy)
        border = cv2.BORDER_REFLECT_101
        patch = cv2.warpAffine(img, m, (p, p), flags=cv2.INTER_LINEAR, borderMode=border)
        patch = patch.reshape(p, p, -1)
        out_mask = None
        if mask is not None:
            warped = cv2.warpAffine(mask.astype(np.uint8) * 255, m, (p, p), flags=cv2.INTER_LINEAR)
            out_mask = warped > 64  # a low threshold keeps thin cracks after downscaling
        if rng.random() < 0.5:
            patch, out_mask = patch[:, ::-1], None if out_mask is None else out_mask[:, ::-1]
        if rng.random() < 0.5:
            patch, out_mask = patch[::-1], None if out_mask is None else out_mask[::-1]
        return patch, out_mask

    def _defect_patch(self, rng) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(10):
            k = int(rng.integers(len(self.defects)))
            img, mask = self.defects[k]
            cy, cx = self.defect_points[k][int(rng.integers(len(self.defect_points[k])))]
            patch, pmask = self._warp(rng, img, mask, float(cy), float(cx))
            if pmask.any():
                return patch, pmask
        return patch, pmask

    def _random_mask(self, rng) -> np.ndarray:
        """Half the time a real defect's mask (so defect-shaped holes can hold plain surface too),
        otherwise random strokes and blobs."""
        p = self.cfg.patch
        if rng.random() < 0.5:
            return self._defect_patch(rng)[1]
        mask = np.zeros((p, p), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                pts = rng.integers(0, p, size=(2, 2))
                cv2.line(mask, tuple(map(int, pts[0])), tuple(map(int, pts[1])), 1,
                         int(rng.integers(2, max(3, p // 6))))  # fmt: skip
            else:
                c = tuple(int(v) for v in rng.integers(p // 8, p - p // 8, size=2))
                axes = tuple(int(v) for v in rng.integers(2, p // 4, size=2))
                cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return mask > 0

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0 in [-1, 1] as BxCxPxP, mask Bx1xPxP, class B: 1 = defect inside the mask)."""
        xs, ms, cs = [], [], []
        for _ in range(self.cfg.batch):
            if rng.random() < self.cfg.defect_fraction:
                x, m = self._defect_patch(rng)
                m = _jitter_mask(rng, m)
                cls = 1
            else:
                img = self.normals[int(rng.integers(len(self.normals)))]
                x = self._warp(rng, img, None, *_random_point(rng, img.shape[:2]))[0]
                m, cls = self._random_mask(rng), 0
            x = x.astype(np.float32) / 255.0
            # Intensity jitter: contrast about the patch mean, then brightness.
            mean = x.mean()
            x = (x - mean) * rng.uniform(0.85, 1.15) + mean + rng.uniform(-0.06, 0.06)
            x = np.clip(x, 0, 1)
            xs.append(x.transpose(2, 0, 1) * 2 - 1)
            ms.append(m[None].astype(np.float32))
            cs.append(cls)
        return (torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms)),
                torch.tensor(cs, dtype=torch.long))  # fmt: skip


def _random_point(rng, shape) -> tuple[float, float]:
    return float(rng.uniform(0, shape[0])), float(rng.uniform(0, shape[1]))


def _jitter_mask(rng, mask: np.ndarray) -> np.ndarray:
    """Thin the (coarse) label at random, or now and then grow it by a pixel or two."""
    if rng.random() < 0.2:
        return ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 3)))
    return thin(rng, mask)


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A model folder's content, in memory."""

    config: dict
    ema: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor] | None = None


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {
        f"opt.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
        for i, st in sd["state"].items()
        for k, v in st.items()
    }
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list, params: list) -> dict:
    """Rebuild an optimizer state dict; moments take their parameter's shape back."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            shape = params[int(i)].shape
            fits = k != "step" and v.numel() == shape.numel()
            state.setdefault(int(i), {})[k] = v.reshape(shape) if fits else v
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: Path, config: dict, ema: dict, state: dict) -> dict:
    """Write weights, training state, then the config naming both files' SHA-256 (all atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, tensors in ((WEIGHTS, ema), (STATE, state)):
        with atomic_path(folder / name) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        hashes[name] = sha256_file(folder / name)
    config = config | {"files": hashes}
    write_json(folder / CONFIG, config)
    return config


def load_checkpoint(folder: str | Path, with_state: bool = False) -> Checkpoint:
    """Read a model folder, checking its format and the files' hashes; ModelFileError otherwise."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise ModelFileError(f"{path}: not found (train a model with 'dualpatch augment ddpm')")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from exc
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ModelFileError(f"{path}: not a {FORMAT} v{VERSION} model")
    loaded = {}
    for name in (WEIGHTS, STATE) if with_state else (WEIGHTS,):
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{file}: missing")
        if sha256_file(file) != config.get("files", {}).get(name):
            raise ModelFileError(f"{file}: SHA-256 differs from {CONFIG} (truncated or altered)")
        try:
            loaded[name] = load_file(str(file))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"{file}: unreadable ({str(exc).splitlines()[0]})") from exc
    return Checkpoint(config, loaded[WEIGHTS], loaded.get(STATE))


# ----------------------------------------------------------------------------- training


def train_ddpm(
    dataset: Dataset,
    model_dir: str | Path,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    cfg: DDPMConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train (or resume training) the inpainting model in ``model_dir``; returns its config.

    Training stops at ``steps`` in total (counting earlier runs) or after ``minutes`` of this run,
    whichever comes first. A folder that already holds a model continues from its saved step with
    its saved settings, optimizer and random state, so 100 + 100 steps equal 200 in one go.
    """
    model_dir = Path(model_dir)
    cfg = cfg or DDPMConfig()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    resume = load_checkpoint(model_dir, with_state=True) if (model_dir / CONFIG).exists() else None
    if resume is not None:
        saved = DDPMConfig.from_json(resume.config["train"])
        default = DDPMConfig()
        for key in KEPT_ON_RESUME:
            asked = getattr(cfg, key)
            if key != "scale" and asked != getattr(default, key) and asked != getattr(saved, key):
                raise ConfigError(
                    f"{model_dir}: saved model has {key}={getattr(saved, key)}, not {asked}; "
                    "use another model folder to start afresh"
                )
            setattr(cfg, key, getattr(saved, key))
        seed = resume.config["seed"]
        if resume.config["data_fingerprint"] != dataset.fingerprint():
            raise ConfigError(
                f"{model_dir}: saved model was trained on other data; "
                "use another model folder to train on this dataset"
            )
    step = resume.config["step"] if resume else 0
    if steps is not None and step >= steps:
        if log:
            log(f"ddpm: model at {model_dir} already has {step} steps; no training needed")
        return resume.config
    sampler = PatchSampler(dataset, cfg, seed, progress)
    cfg.scale = sampler.scale
    torch.manual_seed(seed)
    unet = build_unet(cfg, sampler.channels).to(dev)
    ema = {k: v.detach().clone().float() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    if resume is not None:
        unet.load_state_dict({k[6:]: v for k, v in resume.state.items() if k.startswith("model.")})
        ema = {k: v.float() for k, v in resume.ema.items()}
        groups = resume.config["optimizer"]
        opt.load_state_dict(_unflatten_optimizer(resume.state, groups, list(unet.parameters())))
        rng.bit_generator.state = resume.config["rng"]
        gen.set_state(resume.state["rng.torch"])
    train_sched, _ = build_schedulers(cfg)
    bf16 = _use_bf16(cfg, dev)
    base = {
        "format": FORMAT,
        "version": VERSION,
        "channels": sampler.channels,
        "seed": seed,
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint(),
        "train": cfg.to_json(),
        "unet": dict(unet.config),
        "scheduler": dict(train_sched.config),
    }

    def save() -> dict:
        tensors, groups = _flatten_optimizer(opt)
        state = {f"model.{k}": v for k, v in unet.state_dict().items()} | tensors
        state["rng.torch"] = gen.get_state()
        config = base | {"step": step, "optimizer": groups, "rng": rng.bit_generator.state}
        return save_checkpoint(model_dir, config, ema, state)

    if log:
        log(
            f"ddpm: training from step {step} on {dev} ({'bf16' if bf16 else 'fp32'}), "
            f"{sampler.channels} channel(s), scale {sampler.scale:.2f}, "
            f"{len(sampler.defects)} defect / {len(sampler.normals)} normal images"
        )
    deadline = time.monotonic() + minutes * 60 if minutes is not None else math.inf
    alphas = train_sched.alphas_cumprod
    unet.train()
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", disable=not progress)
    config = None
    try:
        while (steps is None or step < steps) and time.monotonic() < deadline:
            x0, m, cls = sampler.batch(rng)
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, cfg.train_timesteps, (x0.shape[0],), generator=gen)
            x0, m, cls, noise, t = (v.to(dev) for v in (x0, m, cls, noise, t))
            a = alphas.to(dev)[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
            with _autocast(dev, bf16):
                v = unet(torch.cat([xt, m, x0 * (1 - m)], 1), t, class_labels=cls).sample
            # Inside the mask is what matters; outside the model could almost copy the input.
            loss = ((1 + 3 * m) * (v.float() - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            step += 1
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, p in unet.state_dict().items():
                    ema[k].mul_(decay).add_(p.float(), alpha=1 - decay)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % cfg.save_every == 0:
                config = save()
    except KeyboardInterrupt:
        save()  # so that a rerun resumes from here
        raise
    finally:
        bar.close()
    config = save()
    if log:
        log(f"ddpm: saved step {step} to {model_dir}")
    return config


# ----------------------------------------------------------------------------- sampling


class Inpainter:
    """A trained model ready to fill masks: EMA weights, DDIM, RePaint-style known-region reset."""

    def __init__(self, model_dir: str | Path, device: str | None = None, steps: int | None = None,
                 bf16: bool | None = None):  # fmt: skip
        ck = load_checkpoint(model_dir)
        self.config = ck.config
        self.sha256 = ck.config["files"][WEIGHTS]
        self.cfg = DDPMConfig.from_json(ck.config["train"])
        if steps:
            self.cfg.sample_steps = steps
        if bf16 is not None:
            self.cfg.bf16 = bf16
        self.channels = ck.config["channels"]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.unet = build_unet(self.cfg, self.channels)
        self.unet.load_state_dict(ck.ema)
        self.unet.to(self.device).eval()
        _, self.scheduler = build_schedulers(self.cfg)
        self.bf16 = _use_bf16(self.cfg, self.device)

    def window(self, mask: np.ndarray) -> tuple[int, int, int, int]:
        """Image box around the mask with half a patch (at model scale) of context each side."""
        ys, xs = np.nonzero(mask)
        margin = int(math.ceil(self.cfg.patch / 2 / self.cfg.scale))
        h, w = mask.shape
        return (max(ys.min() - margin, 0), max(xs.min() - margin, 0),
                min(ys.max() + 1 + margin, h), min(xs.max() + 1 + margin, w))  # fmt: skip

    @torch.no_grad()
    def inpaint(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        """Fill ``mask`` of ``image`` (HxWxC uint8) with a defect; pixels outside stay identical."""
        y0, x0, y1, x1 = self.window(mask)
        crop, cmask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        # Model-scale size, a multiple of 8 so the U-Net's down/up-sampling lines up.
        h = max(8, int(round((y1 - y0) * self.cfg.scale / 8)) * 8)
        w = max(8, int(round((x1 - x0) * self.cfg.scale / 8)) * 8)
        small = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1)
        # Area-resized and thresholded at > 0: every pixel touched by the mask is regenerated.
        msmall = cv2.resize(cmask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
        dev = self.device
        x_known = torch.from_numpy(small.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)[None]
        m = torch.from_numpy(msmall.astype(np.float32))[None, None]
        gen = torch.Generator().manual_seed(int(seed))
        x_known, m = x_known.to(dev), m.to(dev)
        sched = self.scheduler
        sched.set_timesteps(self.cfg.sample_steps)
        alphas = sched.alphas_cumprod.to(dev)
        x = torch.randn(x_known.shape, generator=gen).to(dev)
        cond = torch.cat([m, x_known * (1 - m)], 1)
        cls = torch.ones(1, dtype=torch.long, device=dev)
        stride = sched.config.num_train_timesteps // sched.num_inference_steps
        for t in sched.timesteps:
            with _autocast(dev, self.bf16):
                v = self.unet(torch.cat([x, cond], 1), t.to(dev), class_labels=cls).sample
            x = sched.step(v.float(), t, x).prev_sample
            # RePaint: outside the mask, reset the sample to the original noised to this level.
            prev = int(t) - stride
            if prev >= 0:
                noise = torch.randn(x.shape, generator=gen).to(dev)
                known = alphas[prev].sqrt() * x_known + (1 - alphas[prev]).sqrt() * noise
            else:
                known = x_known
            x = m * x + (1 - m) * known
        gen_small = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        up = cv2.resize(gen_small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        out = image.copy()
        out[y0:y1, x0:x1][cmask] = up.reshape(y1 - y0, x1 - x0, -1)[cmask]
        return out


def sample_ddpm(
    model_dir: str | Path,
    dataset: Dataset,
    n: int,
    out: str | Path,
    seed: int = 0,
    device: str | None = None,
    sample_steps: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[ManifestRow]:
    """Write ``n`` synthetic defect images to ``out`` (imgs/, masks/, manifest.csv).

    Output ``i`` (seed ``seed + i``) puts a real training defect mask, moved, flipped, scaled and
    randomly thinned, on a random normal training image and inpaints inside it only.
    """
    model = Inpainter(model_dir, device, sample_steps)
    normals, defects = training_sources(dataset)
    shapes = defect_shapes(defects)
    if log:
        log(f"ddpm: sampling {n} images with {model.cfg.sample_steps} DDIM steps on {model.device}")
    with open_output(out) as writer:
        for i in tqdm(range(n), desc="sample", unit="img", disable=not progress):
            rng = np.random.default_rng(seed + i)
            normal = normals[int(rng.integers(len(normals)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            image = read_pixels(normal, model.channels)
            where = place(rng, shape, image.shape[:2])
            mask = where.put(thin(rng, where.apply(shape.mask, nearest=True)), image.shape[:2])
            result = model.inpaint(image, mask, seed + i)
            writer.add(result, mask, normal.image_path, shape.sample.mask_path, seed + i,
                       model.sha256)  # fmt: skip
    return writer.rows


def generate_ddpm(
    dataset: Dataset,
    n: int,
    out: str | Path,
    model_dir: str | Path | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    cfg: DDPMConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[ManifestRow]:
    """Train (or resume) the model in ``model_dir`` (default ``out/model``), then sample ``n``."""
    model_dir = Path(model_dir) if model_dir else Path(out) / "model"
    train_ddpm(dataset, model_dir, steps, minutes, seed, cfg, device, progress, log)
    sample_steps = cfg.sample_steps if cfg else None
    return sample_ddpm(model_dir, dataset, n, out, seed, device, sample_steps, progress, log)
