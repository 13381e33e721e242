import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Two float32 computations of the same sums in another order (another GEMM shape, another thread
# split, another CPU's BLAS kernel) differ by rounding alone: a sum of n products by about
# sqrt(n) * eps of its terms' size, eps = 1.2e-7 and n <= 1,600 in the shipped nets, compounded
# over a few layers. 1e-4 of the array's largest magnitude bounds that with room to spare and
# is still far below the error of any real mistake (a wrong tap, a lost window, a missing bias).
FLOAT32_RTOL = 1e-4


def assert_float32_close(actual, expected, rtol=FLOAT32_RTOL, what=""):
    """Equal within float32 rounding of the same sums taken in another order: every entry
    within ``rtol`` of the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float32).tiny)
    worst = float(np.max(np.abs(actual - expected), initial=0.0))
    assert worst <= rtol * scale, f"{what}: largest difference {worst:.3g} > {rtol:g} x {scale:.3g}"


@pytest.fixture(scope="session")
def float32_close():
    return assert_float32_close
