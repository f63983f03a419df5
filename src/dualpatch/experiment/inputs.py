"""What feeds a dual run's defect bank: real defects (images, crops or crop folders) and the
synthetic defects of augmentation folders."""

from __future__ import annotations

from pathlib import Path

from dualpatch.errors import ConfigError


def defect_inputs(train, source: str, size: tuple[int, int], augmented=(), crops=()) -> list:
    """What feeds the defect bank: the defective training images (``source="image"``: their mask
    patches, in whole-image context; an image without a mask gives its pseudo-mask,
    ``models.defect_features``) or their crops (``"crop"``: masked images only, one warning
    counts the others), plus synthetic defect folders.

    Crop folders (``crops``, e.g. from ``dualpatch data crops``) replace the training split's own
    defects: such a folder already holds them, and a user's own cut-outs stand in for them."""
    if source not in ("image", "crop"):
        raise ConfigError(f"unknown defect source {source!r} (image or crop)")
    if crops:
        from dualpatch.data.crop_reader import load_crop_folders

        real = load_crop_folders(crops, size)
    elif source == "crop":
        _warn_unmasked(train)
        real = train.defect_crops(size)
    else:
        real = train.defective()
    return real + synthetic_defects(augmented, source, size)


def _warn_unmasked(train) -> None:
    """One warning line: crops are cut around a mask's regions, which an unmasked image lacks."""
    import warnings

    unmasked = [s for s in train.defective() if not s.mask_known]
    if unmasked:
        warnings.warn(
            f"{len(unmasked)} defective training images have no mask (e.g. "
            f"{unmasked[0].image_path.name}): no crops, not in the defect bank (--defects image "
            "uses them by pseudo-masks)",
            stacklevel=3,
        )


def synthetic_defects(dirs, source: str, size: tuple[int, int], limit: int | None = None) -> list:
    """The first ``limit`` images of each augmentation folder, as images or as crops."""
    if not dirs:
        return []
    from dualpatch.augment import augmented_samples, load_augmented

    dirs = [Path(d) for d in dirs]
    if source == "crop":
        return load_augmented(dirs, size, limit=limit)
    return augmented_samples(dirs, limit)
