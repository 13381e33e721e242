"""The engine a learner reads: kernels (``functional``), layers, losses, optimisers and the
``Sequential`` model, each forward and backward pass written out plainly. ``reference`` holds
the seed notebook's loop algorithms, and ``notebook`` its helpers. Everything done for speed is
in ``fast``, built from these and tested equal to them."""
