"""Fuzzing the preprocessing with hypothesis: any array shape, dtype and value range either
gives a valid model input or raises InputError (a user message) — never anything else."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convscope.preprocess import PREPROCESSORS, InputError

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
SHAPES = st.one_of(
    st.tuples(st.integers(1, 64), st.integers(1, 64)),
    st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([1, 2, 3, 4, 5])),
    st.tuples(st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None)
@given(arrays(DTYPES, SHAPES), st.sampled_from(sorted(PREPROCESSORS)))
def test_preprocessors_never_crash(a, name):
    try:
        out = PREPROCESSORS[name](a)
    except InputError:
        return
    assert out.dtype == np.uint8 and out.ndim in (2, 3)
    assert out.shape[:2] in ((28, 28), (32, 32), (224, 224))
