"""README's engine examples, exactly as printed there: they run and print what it says."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(marker: str) -> str:
    """The one ```python block of the README that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [block for block in blocks if marker in block]
    return block


def test_readme_s_plain_training_loop_lowers_the_loss(capsys):
    exec(compile(readme_block("optimizer.step(model.params(), grads"), str(README), "exec"), {})
    losses = [float(loss) for loss in re.findall(r"loss (\d+\.\d+)", capsys.readouterr().out)]
    assert len(losses) == 20
    assert losses[-1] < 0.75 * losses[0]


def test_readme_s_notebook_kernels_run_and_print_the_shapes_it_shows(capsys):
    """The block with the notebook's import path runs on its own and prints the line shown in
    the comment under its ``print``."""
    block = readme_block("from mnistcnn.functional import")
    names = {}
    exec(compile(block, str(README), "exec"), names)
    shown = re.search(r"^print\(.*\n# (.*)$", block, re.M)
    assert shown, "the block shows what it prints in a comment under its print"
    assert capsys.readouterr().out.strip() == shown.group(1)
    # and the shapes its comments give (``# Z: (10, 28, 28, 8)``) are the arrays' own
    commented = re.findall(r"#.*\b(\w+): (\([\d, ]+\))", block)
    assert len(commented) >= 2
    for name, shape in commented:
        assert str(names[name].shape) == shape, name
