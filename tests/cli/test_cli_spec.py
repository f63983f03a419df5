"""Command-line options derived from the run spec: names, choices from the registries, ranges,
old flags accepted with one warning."""

from __future__ import annotations

import warnings

import pytest
import typer
from typer.testing import CliRunner

from dualpatch import spec
from dualpatch.cli.spec import choice_enum, size_hw, spec_options

FIELDS = (*spec.MODEL_KEYS, "bank", "defects", "cache_dir")


def _app() -> tuple[typer.Typer, list]:
    app = typer.Typer()
    got: list = []

    @app.command()
    @spec_options(*FIELDS)
    def show(out: str = typer.Option("x"), spec: dict = None, flags: dict = None) -> None:  # noqa: RUF013
        got.append((out, spec, flags))

    return app, got


def _invoke(*args: str):
    app, got = _app()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, list(args))
    return result, got, [str(w.message) for w in caught if w.category is FutureWarning]


def test_every_field_is_an_option_named_after_it_with_its_default():
    result, got, caught = _invoke()
    assert result.exit_code == 0, result.output
    (out, values, flags) = got[0]
    assert isinstance(values, spec.ExperimentSpec)
    assert values == spec.ExperimentSpec()  # every option at its spec default
    assert flags["coreset_ratio"] == "--coreset-ratio" and not caught
    assert values.image_size == (320, 128)  # H W


def test_help_shows_new_names_only_and_every_registry_choice():
    from dualpatch.features.backbones import BACKBONE_NAMES, NORMALIZATION_CHOICES
    from dualpatch.scoring import DUAL_RULES

    app, _ = _app()
    params = {p.name: p for p in typer.main.get_command(app).params}
    shown = {o for p in params.values() if not p.hidden for o in p.opts}
    hidden = {o for p in params.values() if p.hidden for o in p.opts}
    assert {spec.option_name(name) for name in FIELDS} <= shown
    # each field's old flags, hidden (the folder dataset's are other commands' options)
    assert hidden == {f for name in FIELDS for f in spec.SETTINGS[name].flags} >= {"--size"}
    for name, registry in [("backbone", BACKBONE_NAMES), ("rule", tuple(DUAL_RULES)),
                           ("normalization", NORMALIZATION_CHOICES)]:  # fmt: skip
        assert [m.value for m in choice_enum(name)] == list(registry)
        for choice in registry:  # every registry name is accepted by the option
            result, got, _ = _invoke(spec.option_name(name), choice)
            assert result.exit_code == 0 and getattr(got[0][1], name) == choice, result.output


@pytest.mark.parametrize(
    "args,field,value,flag",
    [
        (["--coreset", "0.5"], "coreset_ratio", 0.5, "--coreset"),
        (["--size", "64", "32"], "image_size", (64, 32), "--size"),  # fit's --size was H W
        (["--cache", "c"], "cache_dir", "c", "--cache"),
    ],
)
def test_old_flags_still_work_with_one_warning(args, field, value, flag):
    result, got, caught = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert getattr(got[0][1], field) == value and got[0][2][field] == flag
    assert len(caught) == 1 and f"{flag} is renamed {spec.option_name(field)}" in caught[0]


def test_new_flags_and_ranges():
    result, got, caught = _invoke("--coreset-ratio", "0.2", "--image-size", "64", "32",
                                  "--rule", "seed", "--no-reweight")  # fmt: skip
    assert result.exit_code == 0 and not caught
    assert (got[0][1].coreset_ratio, got[0][1].image_size) == (0.2, (64, 32))
    assert got[0][1].rule == "seed"
    bad = [["--coreset-ratio", "1.5"], ["--coreset", "-1"], ["--rule", "ratio"],
           ["--backbone", "vgg"], ["--coreset-min", "0"], ["--normalization", "sepia"]]  # fmt: skip
    for args in bad:
        result, got, _ = _invoke(*args)
        assert result.exit_code == 2 and not got, args
        assert f"'{args[0]}'" in result.output


def test_width_height_sizes_convert_with_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert size_hw((632, 224), None, "--size") == (632, 224)
    with pytest.warns(FutureWarning, match="--size W H is renamed --image-size H W"):
        assert size_hw((632, 224), (224, 600), "--size") == (600, 224)
