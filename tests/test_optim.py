import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.core.optim import SCHEDULES, check_optimizer, make_optimizer, make_schedule
from jaxpipe.errors import SpecError
from jaxpipe.spec.experiment import parse_spec


def _opt(text: str):
    return parse_spec(text).optimizer


def _step(tx, grads):
    params = {"w": jnp.zeros_like(grads["w"])}
    updates, _ = tx.update(grads, tx.init(params), params)
    return np.asarray(updates["w"])


def test_any_optax_optimizer_with_its_keywords():
    cfg = _opt('[optimizer]\nname = "adamw"\nlearning_rate = 0.1\nweight_decay = 0.5\nb1 = 0.8\n')
    assert dict(cfg.options) == {"weight_decay": 0.5, "b1": 0.8}
    grads = {"w": jnp.array([1.0, -2.0])}
    np.testing.assert_allclose(
        _step(make_optimizer(cfg), grads), _step(optax.adamw(0.1, weight_decay=0.5, b1=0.8), grads)
    )
    for name in ("sgd", "lion", "rmsprop", "lamb", "adagrad"):
        check_optimizer(_opt(f'[optimizer]\nname = "{name}"\n'))


def test_clip_norm_clips_the_global_gradient_norm():
    cfg = _opt('[optimizer]\nname = "sgd"\nlearning_rate = 1.0\nclip_norm = 1.0\n')
    update = _step(make_optimizer(cfg), {"w": jnp.array([3.0, 4.0])})
    np.testing.assert_allclose(update, [-0.6, -0.8], rtol=1e-6)  # norm 5 → 1, then -lr × g


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_starts_at_most_at_the_peak_and_stays_finite(name):
    sched = make_schedule(
        _opt(f'[optimizer.schedule]\nname = "{name}"\n').schedule, lr=0.1, total_steps=100
    )
    values = np.array([float(sched(i)) for i in range(0, 101, 10)])
    assert np.all(np.isfinite(values)) and values.max() <= 0.1 * (
        1 + 1e-6
    )  # float32 0.1 and values.min() >= 0


@given(st.integers(10, 1000))
def test_cosine_decays_from_the_peak_to_zero_over_the_run(total):
    sched = make_schedule(
        _opt('[optimizer.schedule]\nname = "cosine"\n').schedule, lr=0.1, total_steps=total
    )
    assert float(sched(0)) == pytest.approx(0.1) and float(sched(total)) == pytest.approx(0.0)
    assert float(sched(total // 2)) < 0.1


def test_schedule_options_are_checked_and_passed():
    cfg = _opt(
        '[optimizer.schedule]\nname = "exponential"\ntransition_steps = 1\ndecay_rate = 0.5\n'
    )
    sched = make_schedule(cfg.schedule, lr=1.0, total_steps=10)
    assert float(sched(2)) == pytest.approx(0.25)
    with pytest.raises(SpecError) as e:
        make_optimizer(_opt('[optimizer.schedule]\nname = "cosine"\ndecay_step = 5\n'))
    assert e.value.key == "optimizer.schedule.decay_step" and "decay_steps" in str(e.value)


@pytest.mark.parametrize(
    "text, key, needle",
    [
        ('[optimizer]\nname = "adamm"\n', "optimizer.name", "did you mean 'adam'"),
        ('[optimizer]\nname = "chain"\n', "optimizer.name", "unknown optax optimizer"),
        ("[optimizer]\nbeta1 = 0.9\n", "optimizer.beta1", "no argument 'beta1'"),
        ('[optimizer.schedule]\nname = "cosin"\n', "optimizer.schedule.name", "'cosine'"),
        ('[optimizer]\nb1 = "high"\n', "optimizer", "b1 = 'high'"),
        ("[optimizer]\neps = [1]\n", "optimizer", "eps = [1]"),
    ],
)
def test_bad_optimizer_sections(text, key, needle):
    with pytest.raises(SpecError) as e:
        check_optimizer(_opt(text))
    assert e.value.key == key and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("total", [1, 2, 7, 100, 10_000])
def test_defect_02_every_schedule_builds_and_checks_at_realistic_lengths(name, total):
    """warmup_cosine (README's example) failed for every spec: the dry-run built it over
    one step, leaving the cosine none. Every schedule now checks and builds, over the
    dry-run's length and over runs of any length from one step up."""
    cfg = _opt(f'[optimizer]\nlearning_rate = 0.1\n[optimizer.schedule]\nname = "{name}"\n')
    check_optimizer(cfg)
    check_optimizer(cfg, total_steps=total)
    sched = make_schedule(cfg.schedule, lr=0.1, total_steps=total)
    values = np.array([float(sched(i)) for i in range(0, total + 1, max(1, total // 10))])
    assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 0.1 * (1 + 1e-6)


def test_defect_02_schedule_step_counts_longer_than_the_dry_run():
    cfg = _opt('[optimizer.schedule]\nname = "warmup_cosine"\nwarmup_steps = 5000\n')
    check_optimizer(cfg)  # the dry run is long enough for the user's own step counts
    with pytest.raises(SpecError) as e:
        check_optimizer(cfg, total_steps=100)  # but a 100-step run cannot warm up for 5000
    assert e.value.key == "optimizer.schedule" and "100 steps" in str(e.value)


@pytest.mark.parametrize("name", ["nadam", "nadamw"])
def test_issue24_optax_partials_are_optimizers(name):
    # optax defines nadam and nadamw as functools.partial(adam(w), nesterov=True); README
    # promises any optax optimizer, so they build and step like optax's own.
    cfg = _opt(f'[optimizer]\nname = "{name}"\nlearning_rate = 0.1\n')
    check_optimizer(cfg)
    grads = {"w": jnp.array([1.0, -2.0])}
    np.testing.assert_allclose(
        _step(make_optimizer(cfg), grads), _step(getattr(optax, name)(0.1), grads)
    )
