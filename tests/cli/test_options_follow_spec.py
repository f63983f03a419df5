"""Every command-line option named after a run-spec setting is that setting: the same flag, help,
default, range and choices as ``dualpatch.spec`` says (one vocabulary, written once). A hand-written
option that drifted from the spec (another default, a stale choice list, its own help) fails here.
"""

from __future__ import annotations

import typing
import warnings
from unittest import mock

import pytest
import typer

from dualpatch import spec
from dualpatch.cli.main import app
from dualpatch.cli.spec import spec_default

#: options that share a setting's name but are another setting, each for a stated reason
OTHER_SETTINGS = {
    ("data download", "dataset"): "an argument naming the download (ksdd2 only)",
    ("data prepare", "dataset"): "an argument naming the dataset to prepare (ksdd2 only)",
    ("data prepare", "image_size"): "the prepared dataset's size, not the model's input",
    ("augment sdxl", "image_size"): "the generated images' size, not the model's input",
    ("augment sdxl", "weights"): "the SDXL pipeline's weights, not the backbone's",
    ("augment ddpm", "seed"): "the generator's seed (output i uses seed+i)",
    ("augment sdxl", "seed"): "the generator's seed (output i uses seed+i)",
    ("augment paste", "seed"): "the generator's seed (output i uses seed+i)",
    ("serve", "threshold"): "the verdict threshold, a number, not the report's threshold rule",
    ("predict", "threshold"): "the verdict threshold, a number, not the report's threshold rule",
    **{
        (command, "out"): "a file or folder of this command's own outputs"
        for command in (
            "data download",
            "data prepare",
            "data crops",
            "augment ddpm",
            "augment sdxl",
            "augment paste",
            "export",
        )
    },  # fmt: skip
}
#: options with no default: the command cannot guess them
REQUIRED = {
    ("fit", "out"),
    ("evaluate", "out"),
    ("predict", "out"),
    *[(c, n) for c in ("data crops", "augment ddpm", "augment sdxl", "augment paste")
      for n in ("dataset", "data")],
}  # fmt: skip
#: commands whose options default to "not given": the config's value stands
GIVEN_ONLY = {"run"}
#: a command's own default for a setting
OWN_DEFAULTS = {
    ("demo", "out"): "runs/demo",
    # not given: a folder dataset in the working folder when --good names the good images
    **{(c, n): None for c in ("fit", "evaluate") for n in ("dataset", "data")},
}


def _commands(command=None, path: tuple[str, ...] = ()):
    command = command or typer.main.get_command(app)
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _spec_params():
    for name, command in _commands():
        for param in command.params:
            if param.name in spec.SETTINGS and (name, param.name) not in OTHER_SETTINGS:
                yield name, param


def _choices(param) -> list[str] | None:
    annotation = param.type_descriptor.annotation
    kinds = [k for k in (annotation, *typing.get_args(annotation)) if isinstance(k, type)]
    enums = [k for k in kinds if issubclass(k, str) and hasattr(k, "__members__")]
    return [m.value for m in enums[0]] if enums else None


def _plain(value):
    return value.value if hasattr(value, "value") else value


PARAMS = [pytest.param(c, p, id=f"{c}--{p.name}") for c, p in _spec_params()]


def test_the_commands_take_the_settings_they_should():
    taken = {(c, p.name) for c, p in _spec_params()}
    for name in [n for n in spec.TOP_KEYS if spec.SETTINGS[n].cli]:  # run: every config key
        assert ("run", name) in taken, name
    for name in (*spec.MODEL_KEYS, "bank", "defects", "augmented", "crops", "cache_dir"):
        assert ("fit", name) in taken, name
    for command in ("evaluate", "predict", "export"):
        assert (command, "weights") in taken
    assert ("demo", "out") in taken


@pytest.mark.parametrize("command,param", PARAMS)
def test_option_is_the_spec_setting(command, param):
    """Same flag, help, range and choices as the spec's field."""
    setting = spec.SETTINGS[param.name]
    assert param.opts == [spec.option_name(param.name)]
    if isinstance(spec_default(param.name), bool):
        assert param.secondary_opts == ["--no-" + param.name.replace("_", "-")]
    assert param.help.startswith(setting.help) and setting.help, param.help
    assert (param.min, param.max) == (setting.minimum, setting.maximum)
    registry = list(setting.choices()) if setting.choices else None
    assert _choices(param) == registry


@pytest.mark.parametrize("command,param", PARAMS)
def test_option_default_is_the_spec_default(command, param):
    """The spec's default, unless the command says otherwise for a stated reason."""
    key = (command, param.name)
    if key in REQUIRED:
        assert param.required
    elif command in GIVEN_ONLY:
        assert param.default is None and not param.required
    elif key in OWN_DEFAULTS:
        assert param.default == OWN_DEFAULTS[key]
    else:
        assert not param.required
        default = _plain(param.default)
        assert default == spec_default(param.name), (default, spec_default(param.name))


def test_old_flags_are_hidden_and_named_in_the_spec():
    for _, command in _commands():
        for param in command.params:
            if param.name.startswith("renamed_") and param.name != "renamed":
                assert param.hidden and set(param.opts) <= set(spec.FLAG_ALIASES), param.opts


# ----------------------------------------------------------------------------- run's options
def _run_overrides(*args) -> list[str]:
    """The ``key=value`` list that ``dualpatch run ARGS`` hands to load_config."""
    from typer.testing import CliRunner

    seen: list = []

    def capture(config, overrides=()):
        seen.append(list(overrides))
        raise typer.Exit(0)

    with mock.patch("dualpatch.experiment.config.load_config", capture):
        result = CliRunner().invoke(app, ["run", *map(str, args)])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize(
    "args,assignment",
    [
        (["--seeds", "0,1,2"], "seeds=[0,1,2]"),
        (["--defect-shots", "1,2,all"], "defect_shots=[1,2,all]"),
        (["--coreset-ratio", "0.2"], "coreset_ratio=0.2"),
        (["--rule", "seed"], "rule=seed"),
        (["--image-size", "64", "32"], "image_size=[64,32]"),
        (["--inline-images"], "inline_images=true"),
        (["--crops", "a", "--crops", "b"], "crops=[a,b]"),
        (["--train-items", "1-33"], "train_items=1-33"),
        (["--cache", "c"], "cache_dir=c"),  # the old flag, with a warning
    ],
)
def test_a_run_option_is_its_set_assignment(args, assignment, tmp_path):
    """``run --KEY VALUE`` configures what ``--set key=value`` does, and wins over it."""
    from dualpatch.experiment.config import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overrides = _run_overrides(*args)
    renamed = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(renamed) == (1 if "--cache" in args else 0)
    key = assignment.partition("=")[0]
    by_option = load_config(None, overrides)
    by_set = load_config(None, [assignment])
    assert by_option[key] == by_set[key] and by_set[key] != spec.defaults()[key]
    both = load_config(None, [f"{key}={_other(key)}", *overrides])
    assert both[key] == by_set[key]  # the option after --set, as ``run`` orders them


def _other(key: str) -> str:
    return {"seeds": "[5]", "defect_shots": "[3]", "image_size": "[96,48]", "crops": "[z]",
            "train_items": "2-3", "inline_images": "false", "rule": "weighted",
            "coreset_ratio": "0.7", "cache_dir": "elsewhere"}[key]  # fmt: skip


def test_run_without_options_changes_nothing_in_the_config(tmp_path):
    assert _run_overrides("--set", "folds=3") == ["folds=3"]
    out = tmp_path / "o u t"
    assert _run_overrides("--out", out) == [f'out="{out}"']
