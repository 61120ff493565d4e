"""The preamble every bench script shares: `import preamble` among its first imports, then `parser(__doc__)`.

`python bench/<name>.py` puts `bench/` on `sys.path`, not the checkout; importing this module puts the
checkout there (so the toolkit's packages and `bench.common` import as they do in the tests) and turns off
tqdm's progress bars and Hugging Face hub downloads before torch or the toolkit are imported.
`parser(doc)` is the scripts' argument parser (description: the docstring's first paragraph; `--help`
shows the rest), and `existing` an argument type under which a missing file or folder is a usage error
(exit 2) naming the argument, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm reads it at import: no progress bars inside timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm never reaches for the network


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is `doc`'s first paragraph and whose epilog is the rest, as written."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    return argparse.ArgumentParser(description=" ".join(head.split()), epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def existing(value: str) -> Path:
    """argparse type: a path that exists (a missing one is exit 2 naming the argument and the path)."""
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file or folder")
    return path
