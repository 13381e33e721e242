"""mnistcnn: a CNN engine and trainer for MNIST written in NumPy alone."""
__version__ = "0.2.0"


def command() -> None:
    """The mnistcnn command. A Ctrl-C while NumPy and the rest load ends it as one during the work
    does, with a line and the shell's code, not a traceback from inside an import."""
    import sys

    try:
        from .cli import main
    except KeyboardInterrupt:
        from .errors import INTERRUPTED

        sys.stderr.write("error: interrupted\n")
        sys.exit(INTERRUPTED)
    main()
