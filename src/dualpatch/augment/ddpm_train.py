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

from dualpatch import events
from dualpatch.augment.ddpm_model import (
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
    normalise_window,
    save_checkpoint,
    unflatten_optimizer,
    use_bf16,
)
from dualpatch.augment.device import resolve_device
from dualpatch.augment.sources import (
    data_channels,
    defect_shapes,
    read_pixels,
    thin,
    training_sources,
)
from dualpatch.data import Dataset
from dualpatch.errors import ConfigError

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
        images = [read_pixels(s, self.channels) for s in events.track(todo, "load", None, progress)]
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
        # the draws are made either way, so cfg.flip changes nothing else
        if rng.random() < 0.5 and self.cfg.flip:
            patch, out_mask = patch[:, ::-1], None if out_mask is None else out_mask[:, ::-1]
        if rng.random() < 0.5 and self.cfg.flip:
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
            x = np.clip(x, 0, 1) * 2 - 1
            if self.cfg.normalise:
                x = normalise_window(x, ~m)[0]
            xs.append(x.transpose(2, 0, 1))
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
    Progress goes to the event channel (``dualpatch.events``): stages ``load`` and ``train``, the
    latter with the loss as its note.
    """
    model_dir = Path(model_dir)
    cfg = cfg or DDPMConfig()
    dev = resolve_device(device)
    resume = load_checkpoint(model_dir, with_state=True) if (model_dir / CONFIG).exists() else None
    if resume is not None:
        seed = _resumed_settings(resume, cfg, dataset, model_dir)
        if steps is not None and resume.config["step"] >= steps:
            if log:
                log(f"ddpm: model at {model_dir} already has {resume.config['step']} steps; "
                    "no training needed")  # fmt: skip
            return resume.config
    run = _Training(dataset, model_dir, cfg, seed, dev, resume, progress)
    if log:
        log(run.describe())
    deadline = time.monotonic() + minutes * 60 if minutes is not None else math.inf
    todo = None if steps is None else steps - run.step
    with events.staged("train", todo, "step", progress=progress) as advance:
        try:
            while (steps is None or run.step < steps) and time.monotonic() < deadline:
                loss = run.one_step()
                advance(1, note=f"loss={loss:.4f}")
                if run.step % cfg.save_every == 0:
                    run.save()
        except KeyboardInterrupt:
            run.save()  # so that a rerun resumes from here
            raise
    config = run.save()
    if log:
        log(f"ddpm: saved step {run.step} to {model_dir}")
    return config


def _resumed_settings(resume, cfg: DDPMConfig, dataset: Dataset, model_dir: Path) -> int:
    """Give ``cfg`` the saved model's kept settings (refusing a conflicting ask) and return its
    seed; a model trained on other data is refused."""
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
    if resume.config["data_fingerprint"] != dataset.fingerprint():
        raise ConfigError(
            f"{model_dir}: saved model was trained on other data; "
            "use another model folder to train on this dataset"
        )
    return resume.config["seed"]


class _Training:
    """One training run's state: data, U-Net, EMA, optimizer and both random generators, fresh
    or restored from ``resume`` (in the same order either way, so resuming is exact)."""

    def __init__(self, dataset: Dataset, model_dir: Path, cfg: DDPMConfig, seed: int,
                 dev: torch.device, resume, progress: bool):  # fmt: skip
        from diffusers.training_utils import EMAModel

        self.model_dir, self.cfg, self.dev = model_dir, cfg, dev
        self.step = resume.config["step"] if resume else 0
        self.sampler = PatchSampler(dataset, cfg, seed, progress)
        cfg.scale = self.sampler.scale
        torch.manual_seed(seed)
        self.unet = build_unet(cfg, self.sampler.channels).to(dev)
        self.names = [k for k, _ in self.unet.named_parameters()]
        # diffusers' EMA with its default warm-up: decay min(ema_decay, (1 + s) / (10 + s)), 0 at
        # the first step. Its shadow weights and step count are all of its state, and both are
        # saved, so a resumed run continues it exactly. (The U-Net has no buffers.)
        self.ema = EMAModel(self.unet.parameters(), decay=cfg.ema_decay, foreach=False)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        if resume is not None:
            self._restore(resume)
        self.sched, _ = build_schedulers(cfg)
        self.bf16 = use_bf16(cfg, dev)
        self.alphas = self.sched.alphas_cumprod.to(dev)
        self.base = {
            "format": FORMAT, "version": VERSION, "channels": self.sampler.channels,
            "seed": seed, "dataset": dataset.name, "data_fingerprint": dataset.fingerprint(),
            "train": cfg.to_json(), "unet": dict(self.unet.config),
            "scheduler": dict(self.sched.config),
        }  # fmt: skip
        self.unet.train()

    def _restore(self, resume) -> None:
        state = resume.state
        self.unet.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        self.ema.shadow_params = [resume.ema[k].float().clone().to(self.dev) for k in self.names]
        self.ema.optimization_step = self.step
        groups = resume.config["optimizer"]
        self.opt.load_state_dict(unflatten_optimizer(state, groups, list(self.unet.parameters())))
        self.rng.bit_generator.state = resume.config["rng"]
        self.gen.set_state(state["rng.torch"])

    def describe(self) -> str:
        s = self.sampler
        return (
            f"ddpm: training from step {self.step} on {self.dev} "
            f"({'bf16' if self.bf16 else 'fp32'}), {s.channels} channel(s), scale {s.scale:.2f}, "
            f"{len(s.defects)} defect / {len(s.normals)} normal images"
        )

    def one_step(self) -> float:
        """One optimizer step on a fresh batch (v-prediction); returns the loss."""
        cfg, dev = self.cfg, self.dev
        x0, m, cls = self.sampler.batch(self.rng)
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, cfg.train_timesteps, (x0.shape[0],), generator=self.gen)
        x0, m, cls, noise, t = (v.to(dev) for v in (x0, m, cls, noise, t))
        a = self.alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        with autocast(dev, self.bf16):
            v = self.unet(torch.cat([xt, m, x0 * (1 - m)], 1), t, class_labels=cls).sample
        # Inside the mask is what matters; outside the model could almost copy the input.
        loss = ((1 + 3 * m) * (v.float() - target) ** 2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        self.ema.step(self.unet.parameters())
        return loss.item()

    def save(self) -> dict:
        tensors, groups = flatten_optimizer(self.opt)
        state = {f"model.{k}": v for k, v in self.unet.state_dict().items()} | tensors
        state["rng.torch"] = self.gen.get_state()
        config = self.base | {"step": self.step, "optimizer": groups,
                              "rng": self.rng.bit_generator.state}  # fmt: skip
        ema = dict(zip(self.names, self.ema.shadow_params, strict=True))
        return save_checkpoint(self.model_dir, config, ema, state)
