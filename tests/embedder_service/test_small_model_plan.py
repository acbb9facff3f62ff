"""The trainer's command line: the default trains the bundled recipe, flags override it."""

from __future__ import annotations

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
