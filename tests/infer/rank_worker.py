"""Run by ``torchrun`` in test_ranks.py: one process group (gloo), then the ``pseudo-label`` and ``eval``
commands as a user types them; rank 0 leaves the eval report where the test reads it."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from adaptseg.cli.app import app  # noqa: E402
from adaptseg.train.distributed import dist_from_env, init_distributed, shutdown_distributed  # noqa: E402


def main(pseudo_args: str, eval_args: str) -> None:
    torch.set_num_threads(1)
    init_distributed(dist_from_env(), torch.device("cpu"))  # the commands join it (and leave it to us)
    try:
        for args in (pseudo_args, eval_args):
            app(args.split("\x1f"), standalone_mode=False)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
