"""``python -m mnistcnn``: the command, where the environment's scripts are not on the PATH."""
from . import command

if __name__ == "__main__":
    command()
