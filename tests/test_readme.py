"""The Python example in README.md runs as written."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs():
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
        assert namespace["sparse"]["mlp"]["up"]["kernel"].shape == (64, 256)
        kernel = namespace["params"]["mlp"]["up"]["kernel"]
        assert int((kernel == 0).sum()) == 13107  # the training example: floor(0.8 * 64 * 256)
