"""What feeds a dual run's defect bank from a dataset whose defects are masked or not."""

from __future__ import annotations

import warnings

import pytest

from dualpatch.data import ImageFolder
from dualpatch.experiment.inputs import defect_inputs
from tests.unit.data.test_folder import own_photos


def test_image_source_takes_unmasked_defects_and_crops_count_them_out(tmp_path):
    train = ImageFolder(own_photos(tmp_path / "photos", masked=4, unmasked=3), "train")
    unmasked = [s for s in train.defective() if not s.mask_known]
    assert unmasked  # the split keeps at least one unmasked defect for training
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images: no warning, the unmasked go in (pseudo-masks)
        images = defect_inputs(train, "image", (64, 32))
    assert images == train.defective()
    with pytest.warns(UserWarning) as caught:
        crops = defect_inputs(train, "crop", (64, 32))
    (line,) = [str(w.message) for w in caught]
    assert line.startswith(f"{len(unmasked)} defective training images have no mask (e.g. ")
    assert "no crops, not in the defect bank (--defects image uses them" in line
    masked_ids = {s.id for s in train.masked_defective()}
    assert crops and {c.source for c in crops} <= masked_ids
