"""The engine a learner reads: kernels (``functional``), layers, losses, optimisers and the
``Sequential`` model, each forward and backward pass written out plainly. ``reference`` holds
the seed notebook's loop algorithms, and ``notebook`` its helpers. Everything done for speed is
in ``fast``, built from these and tested equal to them.

A training loop needs nothing else: ``Sequential.from_config`` builds a model,
``model.loss_and_gradients(x, y, rng)`` gives a batch's loss and gradients, a ``Schedule`` the
step's learning rate and ``optimizer.step(model.params(), grads, lr)`` the update (README, "How it
works: the engine", prints one that runs)."""
