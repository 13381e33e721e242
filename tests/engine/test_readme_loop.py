"""README's plain training loop, exactly as printed there: it runs, and the loss falls."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_training_loop() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (loop,) = [block for block in blocks if "optimizer.step(model.params(), grads" in block]
    return loop


def test_readme_s_plain_training_loop_lowers_the_loss(capsys):
    exec(compile(readme_training_loop(), str(README), "exec"), {})
    losses = [float(loss) for loss in re.findall(r"loss (\d+\.\d+)", capsys.readouterr().out)]
    assert len(losses) == 20
    assert losses[-1] < 0.75 * losses[0]
