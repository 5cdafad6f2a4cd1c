"""Run by ``torchrun`` in test_distributed.py: train a recipe's first stage with DDP, then save every
rank's parameters (gathered to rank 0) next to the run, so the test can compare them."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import tests.train.tiny  # noqa: E402,F401  (registers the test methods)
from adaptseg.config import load_recipe  # noqa: E402
from adaptseg.train.config import Recipe, stage_recipe  # noqa: E402
from adaptseg.train.context import StageContext  # noqa: E402
from adaptseg.train.distributed import (  # noqa: E402
    all_gather_object,
    barrier,
    dist_from_env,
    init_distributed,
    shutdown_distributed,
)
from adaptseg.train.pipeline import build_stage_method  # noqa: E402
from adaptseg.train.trainer import Trainer  # noqa: E402


def main(recipe_path: str, out: str) -> None:
    info = dist_from_env()
    device = torch.device("cpu")
    init_distributed(info, device)
    recipe = load_recipe(Recipe, recipe_path)
    stage = recipe.stages[0]
    ctx = StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=Path(out),
        device=device,
        dist=info,
        stage_names=(stage.name,),
    )
    trainer = Trainer(ctx, build_stage_method(recipe, stage, ctx, None))
    trainer.train()
    trainer.export()
    student = trainer.handles["student"]
    params = torch.cat([p.detach().flatten() for p in student.module.parameters()])
    gathered = all_gather_object({"params": params, "ddp": type(student._wrapped).__name__}, info)
    if info.is_main:
        torch.save(gathered, Path(out) / "ranks.pt")
    barrier(info)  # tearing the group down while a peer still uses it aborts gloo
    shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:3])
    # Everything is written and the group is destroyed. Leave without the interpreter's teardown: gloo's
    # C++ threads, destroyed there, now and then abort a rank at exit ("terminate called without an active
    # exception"), which torchrun reports as a failed run after the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
