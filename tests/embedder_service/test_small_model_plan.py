"""The trainer's command line: the default trains the bundled recipe, flags override it."""

from __future__ import annotations

import dataclasses

import pytest

from embedder_service.export import small_model


def _plan(*argv: str) -> small_model.Schedule:
    args = small_model._parse_args(list(argv))
    return small_model._plan(small_model.VARIANTS[args.variant], args)


def test_default_invocation_trains_the_generalising_recipe():
    plan = _plan()
    assert plan == small_model.Schedule(steps=4500, varied=0.6, plain_steps=1350,
                                        by_caption=True, dihedral=True, refresh=16,
                                        bf16=small_model.bf16_supported())


def test_flags_switch_single_parts_off():
    assert not _plan("--no-dihedral").dihedral
    assert not _plan("--no-caption-targets").by_caption
    assert _plan("--aux-weight", "0.5").aux_weight == 0.5
    assert not _plan("--no-bf16").bf16


def test_each_flag_lands_in_its_own_field():
    plan = _plan("--steps", "100", "--lr", "0.002", "--batch", "64", "--low-res-first", "0.5",
                 "--plain-first", "0.2", "--refresh", "4", "--no-bf16")
    assert plan == small_model.Schedule(steps=100, varied=0.6, plain_steps=20, by_caption=True,
                                        dihedral=True, refresh=4, lr=0.002, low_res_steps=50,
                                        batch=64)


def test_the_previous_bundled_recipe_stays_available():
    assert _plan("--variant", "small-vit", "--no-bf16") == small_model.Schedule(steps=4000)


def _destination(*argv: str) -> tuple[str, str]:
    args = small_model._parse_args(list(argv))
    variant = small_model.VARIANTS[args.variant]
    if args.image_size is not None:
        variant = dataclasses.replace(variant, image_size=args.image_size)
    name, out = small_model._destination(args, variant, small_model._plan(variant, args))
    return name, f"{out.parent.name}/{out.name}"


def test_only_the_variants_own_recipe_is_written_over_the_bundle():
    bundled = ("synthetic-clip-small", "bundles/synthetic-clip-small")
    assert _destination() == bundled
    assert _destination("--no-bf16", "--seed", "1", "--image-size", "64") == bundled
    assert _destination("--variant", "wide") == ("synthetic-clip-wide",
                                                 "bundles/synthetic-clip-wide")
    for flags in (["--batch", "64"], ["--low-res-first", "0.5"], ["--steps", "10"],
                  ["--lr", "0.003"], ["--seed", "0"], ["--scenes", "100"], ["--no-dihedral"]):
        assert _destination(*flags) == ("synthetic-clip-small", "models/synthetic-clip-small")
    assert _destination("--image-size", "48") == ("synthetic-clip-small-48px",
                                                  "models/synthetic-clip-small-48px")
    assert _destination("--varied", "0.2")[1] == "models/synthetic-clip-small-varied"
    assert _destination("--batch", "64", "--out", "/tmp/x")[1] == "tmp/x"


@pytest.mark.parametrize("flags", [["--batch", "1"], ["--low-res-first", "1"],
                                   ["--low-res-first", "-0.1"], ["--image-size", "16"]])
def test_values_the_trainer_cannot_use_are_refused_before_any_work(flags, capsys):
    with pytest.raises(SystemExit):
        small_model._parse_args(flags)
    assert f"error: argument {flags[0]}: " in capsys.readouterr().err
