"""The engine's speed, as one explicit plan built from a model (``plan``): fused kernels
(``convpool``), the frequency-domain convolution (``fftconv``) and the data-parallel workers,
threads (``parallel``) or processes (``processes``). Nothing in ``mnistcnn.engine`` imports from here."""
