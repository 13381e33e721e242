"""The engine's speed, as one explicit plan built from a model (``plan``): fused kernels
(``convpool``), the frequency-domain convolution (``fftconv``) and the data-parallel threads
(``parallel``). Nothing in ``mnistcnn.engine`` imports from here."""
