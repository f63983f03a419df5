"""Training the inpainting DDPM: patches cut around the training split's defects and from normal
images under random masks (``PatchSampler``), and the resumable training loop (``train_ddpm``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from ..data import Dataset
from ..errors import ConfigError
from .ddpm_model import (
    CONFIG,
    FORMAT,
    KEPT_ON_RESUME,
    VERSION,
    DDPMConfig,
    auto_scale,
    autocast,
    build_schedulers,
    build_unet,
    flatten_optimizer,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
    use_bf16,
)
from .device import resolve_device
from .sources import (
    data_channels,
    defect_shapes,
    read_pixels,
    thin,
    training_sources,
)

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
    from diffusers.training_utils import EMAModel

    model_dir = Path(model_dir)
    cfg = cfg or DDPMConfig()
    dev = resolve_device(device)
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
    names = [k for k, _ in unet.named_parameters()]
    # diffusers' EMA with its default warm-up: decay min(ema_decay, (1 + s) / (10 + s)), 0 at the
    # first step. Its shadow weights and step count are all of its state, and both are saved, so a
    # resumed run continues it exactly. (The U-Net has no buffers: parameters are the state dict.)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, foreach=False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    if resume is not None:
        unet.load_state_dict({k[6:]: v for k, v in resume.state.items() if k.startswith("model.")})
        ema.shadow_params = [resume.ema[k].float().clone().to(dev) for k in names]
        ema.optimization_step = step
        groups = resume.config["optimizer"]
        opt.load_state_dict(unflatten_optimizer(resume.state, groups, list(unet.parameters())))
        rng.bit_generator.state = resume.config["rng"]
        gen.set_state(resume.state["rng.torch"])
    train_sched, _ = build_schedulers(cfg)
    bf16 = use_bf16(cfg, dev)
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
        tensors, groups = flatten_optimizer(opt)
        state = {f"model.{k}": v for k, v in unet.state_dict().items()} | tensors
        state["rng.torch"] = gen.get_state()
        config = base | {"step": step, "optimizer": groups, "rng": rng.bit_generator.state}
        return save_checkpoint(
            model_dir, config, dict(zip(names, ema.shadow_params, strict=True)), state
        )

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
            with autocast(dev, bf16):
                v = unet(torch.cat([xt, m, x0 * (1 - m)], 1), t, class_labels=cls).sample
            # Inside the mask is what matters; outside the model could almost copy the input.
            loss = ((1 + 3 * m) * (v.float() - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            step += 1
            ema.step(unet.parameters())
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
