"""mnistcnn: a CNN engine and trainer for MNIST written in NumPy alone."""
__version__ = "0.2.0"
