"""Best-on-validation model selection: the one opt-in place where a run picks a model by its val mIoU.

The releases of ATP, UMMA and DecoupleNet export the checkpoint with the best target-val mIoU
(mmseg's ``save_best='mIoU'`` and its equivalents). That reads target labels, which the fidelity policy
(shared/methods/README.md, 3) forbids by default, so it is a recipe switch (``eval.select_best``) that
every method gets from the Trainer, never a method's own code. The Trainer's evaluation hook feeds each
evaluation's mIoU — the figure it logs — to :meth:`BestOnVal.consider`; the kept weights are checkpointed
with the run (a resumed run keeps its best) and exported as the stage's main file, with the choice
written to ``best_on_val.json`` so the run says it selected with target labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from adaptseg.io import write_json_atomic

RECORD_FILE = "best_on_val.json"


class BestOnVal:
    """The best evaluated weights of one model so far, with every evaluation's mIoU."""

    def __init__(self) -> None:
        self.miou: float | None = None
        self.iteration: int | None = None
        self.history: list[tuple[int, float]] = []
        self.weights: dict[str, Tensor] | None = None

    def consider(self, iteration: int, miou: float, model: nn.Module) -> bool:
        """Record an evaluation; keep a CPU copy of ``model``'s weights when it beats the best (ties keep the first)."""
        self.history.append((iteration, float(miou)))
        if self.miou is not None and miou <= self.miou:
            return False
        self.miou, self.iteration = float(miou), iteration
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "miou": self.miou,
            "iteration": self.iteration,
            "history": [list(h) for h in self.history],
            "weights": self.weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.miou, self.iteration = state.get("miou"), state.get("iteration")
        self.history = [(int(i), float(m)) for i, m in state.get("history", [])]
        self.weights = state.get("weights")

    def write_record(self, out_dir: Path, *, model: str, exported: str, eval_section: Any) -> str:
        """``best_on_val.json``: what was selected, on which data, and that target labels were used."""
        write_json_atomic(
            out_dir / RECORD_FILE,
            {
                "selected_with_target_labels": True,
                "model": model,
                "dataset": eval_section.dataset.model_dump(mode="json") if eval_section.dataset else None,
                "protocol": eval_section.protocol,
                "test_time_prior": eval_section.test_time_prior,
                "best_iteration": self.iteration,
                "best_mIoU": self.miou,
                "history": [{"iteration": i, "mIoU": m} for i, m in self.history],
                f"{exported}.safetensors": "best on val",
                f"{exported}-last.safetensors": "last iteration",
            },
        )
        return RECORD_FILE
