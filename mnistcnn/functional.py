"""The seed notebook's import path: ``from mnistcnn.functional import conv_forward`` and its
helpers keep working. The kernels live in ``mnistcnn.engine.functional``, the notebook's
one-window helpers in ``mnistcnn.engine.notebook``."""
from .engine.functional import conv_backward, conv_forward, pool_backward, pool_forward, zero_pad
from .engine.notebook import conv_single_step, create_mask_from_window, distribute_value

__all__ = ["conv_backward", "conv_forward", "conv_single_step", "create_mask_from_window", "distribute_value",
           "pool_backward", "pool_forward", "zero_pad"]
