"""The whole scorer as one graph: ONNX and OpenVINO files that need neither torch nor dualpatch.

``ScorerModule`` wraps a fitted ``PatchCore``/``DualPatchCore`` and reuses the library's own code
for every step (``FeatureExtractor.stage_maps``/``combine``, ``neighbours.knn_distances_chunked``,
``scoring.score_patches``), so an exported file cannot drift from the library's rules:

    images (B, H, W, 3) uint8 RGB at the model's size     [input "images"]
      -> float [0, 1] -> normalisation -> backbone stages -> 3x3 averaging, resize, concat
      -> nearest distance to the normal bank (and the defect bank)   [banks are constants]
      -> the rule (tau, the novelty level, a constant) -> bilinear upsampling + Gaussian blur
      -> image score
    scores (B,) float32                                    [output "scores"]
    maps (B, H, W) float32                                 [output "maps"]

The batch size is free; height and width are the model's ``image_size``. With
``input_format="float"`` the input is (B, 3, H, W) float32 in [0, 1] instead.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualpatch.card import ModelCard
from dualpatch.errors import ConfigError
from dualpatch.fileio import atomic_path
from dualpatch.serving.export_files import (
    FORMATS,
    check_export,
    default_export_path,
    graph_metadata,
    write_export_record,
)

INPUT_FORMATS = ("uint8", "float")
#: opset of the ONNX files (onnxruntime >= 1.17 and OpenVINO >= 2024 read it)
OPSET = 17


class ScorerModule(nn.Module):
    """A fitted model's scorer as a plain ``nn.Module``: images -> (scores, maps)."""

    def __init__(self, model: Any, input_format: str = "uint8"):
        super().__init__()
        check_exportable(model)
        if input_format not in INPUT_FORMATS:
            raise ConfigError(f"unknown input format {input_format!r} (uint8 or float)")
        self.input_format = input_format
        self.extractor = model.extractor_
        self.size = tuple(int(v) for v in model.image_size)
        self.sigma = float(model.blur_sigma)
        self.dual = model.kind == "dual"
        self.rule = getattr(model, "rule", "weighted")
        self.eps = float(getattr(model, "eps", 1e-6))
        # the guarded rule's tau, a constant of the graph like the banks (None: a rule without it)
        level = getattr(model, "novelty_level_", None)
        self.novelty_level = None if level is None else float(level)
        self.k = int(getattr(model, "num_neighbors", 1))
        banks = [("normal", model.memory_)] + (
            [("defect", model.defect_memory_)] if self.dual else []
        )
        patches = int(model.grid_[0]) * int(model.grid_[1])
        #: bank rows per chunk of each bank's search, planned by bytes (``search_plan``)
        self.plan = {name: search_plan(patches, int(m.bank_.shape[0])) for name, m in banks}
        for name, memory in banks:
            self._register_bank(name, memory)
        # the image-level check (bank.coverage): the training summaries and their level and scale
        summaries = getattr(model, "gate_summaries_", None)
        self.gated = getattr(model, "gate_level_", None) is not None
        if self.gated:
            self.register_buffer("gate_summaries", summaries.float().contiguous())
            self.gate_level, self.gate_scale = float(model.gate_level_), float(model.gate_scale_)
            #: summary rows per block of the check, planned by bytes as a bank's search is
            rows = int(summaries.shape[0] * summaries.shape[1])
            self.gate_block = search_plan(patches, rows)["bank_chunk"]
        self.k_normal = min(self.k, int(model.memory_.bank_.shape[0]))
        self.k_defect = min(self.k, int(model.defect_memory_.bank_.shape[0])) if self.dual else 0

    def _register_bank(self, name: str, memory: Any) -> None:
        """The bank as constants of the graph: centred on its mean, as ``knn`` centres it (float32
        cancellation); a float16 bank's rounded values in float32, as ``knn`` searches them; with
        ``search_dim``, its principal axes and the bank projected on them (what ``knn`` ranks)."""
        bank = memory.bank_.float()
        centre = bank.double().mean(0).float()
        centred = (bank - centre).contiguous()
        self.register_buffer(f"{name}_centre", centre)
        self.register_buffer(f"{name}_bank", centred)
        basis = memory.search_basis() if getattr(memory, "knn", "torch") == "torch" else None
        if basis is not None:
            self.register_buffer(f"{name}_basis", basis)
            self.register_buffer(f"{name}_ranked", (centred @ basis).contiguous())

    def _distances(self, flat: torch.Tensor, name: str, k: int) -> torch.Tensor:
        from dualpatch.bank.neighbours import knn_distances_chunked
        from dualpatch.scoring import patch_distances

        centre, bank = getattr(self, f"{name}_centre"), getattr(self, f"{name}_bank")
        query = flat - centre
        rank_query = rank_bank = None
        if hasattr(self, f"{name}_basis"):
            rank_query, rank_bank = (
                query @ getattr(self, f"{name}_basis"),
                getattr(self, f"{name}_ranked"),
            )
        chunk = self.plan[name]["bank_chunk"]
        return patch_distances(knn_distances_chunked(query, bank, k, chunk, rank_query, rank_bank))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from dualpatch.bank.coverage import missing_content
        from dualpatch.scoring import gated_scores, score_patches

        if self.input_format == "uint8":
            images = images.permute(0, 3, 1, 2).float() / 255.0
        feats = self.extractor.combine(self.extractor.stage_maps(images)).features
        b, d, h, w = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, d)
        normal = self._distances(flat, "normal", self.k_normal).reshape(b, h, w)
        if not self.dual:
            maps, scores = score_patches(normal, self.size, self.sigma)
        else:
            defect = self._distances(flat, "defect", self.k_defect).reshape(b, h, w)
            maps, scores = score_patches(
                normal, self.size, self.sigma, defect, self.rule, self.eps,
                novelty_level=self.novelty_level,
            )  # fmt: skip
        if self.gated:
            missing = missing_content(
                flat.reshape(b, h, w, d), self.gate_summaries, self.gate_block
            )
            scores = gated_scores(scores, missing, self.gate_level, self.gate_scale)
        return scores, maps


#: the batch the exported search's chunks are planned for (predict's and the runtimes' default
#: batch): at this batch one chunk's ranking values take at most ``SEARCH_BUDGET`` bytes, and a
#: larger batch takes proportionally more (the graph's batch size is free)
PLAN_BATCH = 8


def search_plan(patches: int, bank_rows: int, batch: int = PLAN_BATCH) -> dict[str, int]:
    """The exported search's chunk plan for a bank: bank rows per chunk, chunks, and the bytes of
    one chunk's float32 ranking values at ``batch`` images of ``patches`` patches each."""
    from dualpatch.bank.neighbours import KNN_BUDGET, graph_bank_chunk

    chunk = graph_bank_chunk(batch * patches, bank_rows, KNN_BUDGET)
    return {
        "bank_chunk": chunk,
        "chunks": -(-bank_rows // chunk),
        "block_bytes": 4 * batch * patches * chunk,
        "budget_bytes": KNN_BUDGET,
    }


def check_exportable(model: Any) -> None:
    """Refuse, in one line, what the exported graph cannot reproduce."""
    if not hasattr(model, "memory_"):
        raise ConfigError("cannot export an unfitted model: fit or load it first")
    if getattr(model, "reweight", False):
        raise ConfigError(
            "cannot export a model fitted with reweight=True: the paper's re-weighting looks up "
            "bank neighbours per image and is not part of the exported graph; refit without it"
        )
    backend = getattr(model, "knn", "torch")
    if backend != "torch":
        raise ConfigError(
            f"cannot export a model whose k-NN backend is {backend!r}: only the exact torch "
            "search is part of the exported graph"
        )


def example_input(model: Any, input_format: str = "uint8", batch: int = 2) -> torch.Tensor:
    h, w = (int(v) for v in model.image_size)
    gen = torch.Generator().manual_seed(0)
    if input_format == "uint8":
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=gen)
    return torch.rand(batch, 3, h, w, generator=gen)


def export_onnx(
    model: Any,
    out: str | os.PathLike[str],
    input_format: str = "uint8",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the scorer as one self-contained ONNX file (banks and weights inside)."""
    import onnx

    module = ScorerModule(model, input_format).eval()
    out = Path(out)
    with torch.no_grad(), atomic_path(out) as tmp, warnings.catch_warnings():
        # the TorchScript exporter warns about constant folding of slices it leaves alone
        warnings.simplefilter("ignore", UserWarning)
        # the map's matrices are built for the patch grid's size, a Python int while tracing: the
        # graph's height and width are the model's, fixed, so the constant is right
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch deprecates the TorchScript exporter chosen here on purpose (below), in two raw
        # DeprecationWarnings that tell a user nothing about their export
        warnings.simplefilter("ignore", DeprecationWarning)
        # The TorchScript exporter: the dynamo exporter (torch.export) traces the same module too,
        # but writes larger graphs with external-data files by default; one file is what users want.
        torch.onnx.export(
            module,
            (example_input(model, input_format),),
            str(tmp),
            input_names=["images"],
            output_names=["scores", "maps"],
            dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {"input_format": input_format, **(metadata or {})}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, str(tmp))
    return out


def export_openvino(
    model: Any,
    out: str | os.PathLike[str],
    input_format: str = "uint8",
    metadata: dict[str, str] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the scorer as OpenVINO IR (``out`` .xml plus its .bin), converted from ONNX, FP32.

    ``onnx_path``: an ONNX file already exported from this model (else one is exported first).
    """
    import openvino as ov

    out = Path(out).with_suffix(".xml")
    with tempfile.TemporaryDirectory() as tmp_dir:
        if onnx_path is None:
            onnx_path = export_onnx(model, Path(tmp_dir) / "scorer.onnx", input_format, metadata)
        ov_model = ov.convert_model(str(onnx_path))
        for key, value in {"input_format": input_format, **(metadata or {})}.items():
            ov_model.set_rt_info(str(value), ["dualpatch", key])
        with atomic_path(out.with_suffix(".bin")) as tmp_bin, atomic_path(out) as tmp_xml:
            # the pair is written under temporary names, then renamed: .bin first, .xml last
            staging = Path(tmp_dir) / "model.xml"
            # FP32 weights: FP16 compression would break parity with the torch scorer
            ov.save_model(ov_model, str(staging), compress_to_fp16=False)
            os.replace(staging.with_suffix(".bin"), tmp_bin)
            os.replace(staging, tmp_xml)
    return out


def export_model(
    model_dir: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    input_format: str = "uint8",
    weights: str | None = None,
) -> Path:
    """Load the model in ``model_dir`` and write it as ``fmt`` (onnx or openvino) to ``out``,
    with its record (files' SHA-256, settings; ``export_files.write_export_record``) beside it."""
    from dualpatch.models import PatchCore

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (onnx or openvino)")
    check_export_target(model_dir, fmt, out)
    model = PatchCore.load(model_dir, weights)
    check_exportable(model)
    card = ModelCard.read(model_dir)
    metadata = graph_metadata(card)
    if fmt == "onnx":
        path = export_onnx(model, out, input_format, metadata)
    else:
        onnx_path = default_export_path(model_dir, "onnx")
        if not (onnx_path.is_file() and _onnx_matches(onnx_path, card, metadata, input_format)):
            onnx_path = None
        path = export_openvino(model, out, input_format, metadata, onnx_path)
    write_export_record(card, path)
    return path


def _onnx_matches(path: Path, card: ModelCard, metadata: dict[str, str], input_format: str) -> bool:
    """Whether ``path`` is an intact export of these tensors with these settings (then reuse it)."""
    import onnx

    try:
        check_export(card, path)
        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
    except Exception:
        return False
    wanted = {"input_format": input_format, **metadata}
    return all(props.get(k) == str(v) for k, v in wanted.items())


# ----------------------------------------------------------------------------- the --out file
def _target_files(fmt: str, out: str | os.PathLike[str]) -> list[Path]:
    """The files an export to ``out`` writes: the .onnx, or the .xml and its .bin."""
    if fmt == "onnx":
        return [Path(out)]
    xml = Path(out).with_suffix(".xml")
    return [xml, xml.with_suffix(".bin")]


def check_export_target(model_dir: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str]):
    """Refuse, in one line naming the file, an ``out`` that would replace a folder, a file of the
    model being exported, or a file that no export wrote (the user's own)."""
    from dualpatch.fileio import MARKER

    model_files = {(Path(model_dir) / n).resolve() for n in ("model.safetensors", "model.json")}
    model_files.add((Path(model_dir) / MARKER).resolve())
    files = _target_files(fmt, out)
    for path in files:
        if path.is_dir():
            raise ConfigError(
                f"{path}: is a folder; give --out a file name, e.g. "
                f"{path / ('model.onnx' if fmt == 'onnx' else 'model.xml')}"
            )
        if path.resolve() in model_files:
            raise ConfigError(f"{path}: is part of the model being exported; choose another --out")
    for path in files:
        if (path.exists() or path.is_symlink()) and not _written_by_export(files[0]):
            raise ConfigError(
                f"{path}: exists and was not written by 'dualpatch export'; choose another "
                "--out or move it away"
            )


#: a metadata key every exported file carries (ONNX metadata, OpenVINO rt_info)
_EXPORT_KEY = b"dualpatch_model_digest"


def _written_by_export(path: Path) -> bool:
    """Whether ``path`` (an .onnx or .xml, the file that names its pair's .bin) holds the metadata
    an export writes; then replacing it loses nothing of the user's."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.suffix.lower() == ".xml":
        return _EXPORT_KEY in path.read_bytes()
    import onnx

    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:  # not an ONNX file at all: the user's
        return False
    return any(p.key == _EXPORT_KEY.decode() for p in props)
