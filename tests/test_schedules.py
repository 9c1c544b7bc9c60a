"""Schedules: closed forms from the papers, monotonicity, jit, and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp


def zhu_gupta(step, initial, final, begin, end, frequency, power):
    """Equation (1) of Zhu & Gupta 2017 in float64, evaluated at the last update step."""
    if step < begin:
        return initial
    if step >= end:
        return final
    last_update = begin + ((step - begin) // frequency) * frequency
    return final + (initial - final) * (1 - (last_update - begin) / (end - begin)) ** power


@given(
    initial=st.sampled_from([0.0, 0.1, 0.3]),
    final=st.sampled_from([0.5, 0.8, 0.95]),
    begin=st.integers(0, 50),
    length=st.integers(1, 200),
    frequency=st.integers(1, 40),
    power=st.sampled_from([1.0, 2.0, 3.0]),
)
def test_polynomial_schedule_matches_closed_form_and_is_monotone(
    initial, final, begin, length, frequency, power
):
    end = begin + length
    schedule = jp.polynomial_schedule(initial, final, begin, end, frequency=frequency, power=power)
    steps = np.arange(0, end + 20)
    values = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))
    expected = [zhu_gupta(int(t), initial, final, begin, end, frequency, power) for t in steps]
    np.testing.assert_allclose(values, expected, rtol=0, atol=2e-6)
    assert values[begin] == pytest.approx(initial, abs=1e-7)
    assert values[end] == pytest.approx(final, abs=1e-7)
    assert np.all(np.diff(values) >= 0)
    assert float(schedule(end + 1000)) == pytest.approx(final, abs=1e-7)


def test_cubic_is_the_default_and_holds_between_updates():
    schedule = jp.polynomial_schedule(0.0, 0.8, 10, 90, frequency=10)
    assert float(schedule(50)) == pytest.approx(0.8 * (1 - 0.5**3), abs=1e-6)
    assert float(schedule(59)) == float(schedule(50))
    assert float(schedule(9)) == 0.0


def test_constant_and_one_shot_schedules():
    constant = jp.constant_schedule(0.7)
    assert float(constant(0)) == pytest.approx(0.7) and float(constant(10**6)) == pytest.approx(0.7)
    one_shot = jp.one_shot_schedule(0.5, step=100)
    values = jax.jit(jax.vmap(one_shot))(jnp.array([0, 99, 100, 5000]))
    np.testing.assert_allclose(values, [0.0, 0.0, 0.5, 0.5])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(begin=50, end=50), ValueError, "end must be after begin, got begin=50, end=50"),
        (dict(begin=60, end=50), ValueError, "end must be after begin"),
        (dict(frequency=0), ValueError, "frequency must be >= 1, got 0"),
        (dict(final=1.0), ValueError, r"final must be in \[0, 1\)"),
        (dict(initial=-0.1), ValueError, r"initial must be in \[0, 1\)"),
        (dict(power=0.0), ValueError, "power must be a number > 0"),
        (dict(begin=-1), ValueError, "begin must be >= 0"),
        (dict(frequency=2.5), TypeError, "frequency must be an integer"),
    ],
)
def test_polynomial_schedule_bad_arguments(kwargs, error, message):
    args = dict(initial=0.0, final=0.8, begin=10, end=90) | kwargs
    with pytest.raises(error, match=message):
        jp.polynomial_schedule(**args)


def test_one_shot_and_constant_bad_arguments():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        jp.constant_schedule(1.2)
    with pytest.raises(ValueError, match="step must be >= 0"):
        jp.one_shot_schedule(0.5, step=-3)
