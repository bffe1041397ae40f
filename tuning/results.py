"""What a finished search leaves behind: the ranked trials, their plot and the best hparams.

Files in ``<directory>/<project-name>/``: ``best_hparams.json`` (unless ``--output`` names
another), ``search_summary.json`` and ``trials.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FILE = "search_summary.json"
BEST_HPARAMS_FILE = "best_hparams.json"
PLOT_FILE = "trials.png"


def finished_trials(oracle) -> list:
    """Completed trials, best first."""
    from keras_tuner.engine.trial import TrialStatus

    done = [t for t in oracle.trials.values() if t.status == TrialStatus.COMPLETED]
    reverse = oracle.objective.direction == "max"
    return sorted(done, key=lambda t: t.score, reverse=reverse)


def trials_table(oracle, top: int = 10) -> str:
    """The best ``top`` trials as a text table (rank, trial, score, best epoch, hyperparameters)."""
    import pandas as pd

    from tumorlib.training.train_config import HPARAM_KEYS

    rows = []
    for rank, trial in enumerate(finished_trials(oracle)[:top], start=1):
        values = trial.hyperparameters.values
        row = {"rank": rank, "trial": trial.trial_id, oracle.objective.name: trial.score}
        row["best_epoch"] = (trial.best_step or 0) + 1
        if "tuner/epochs" in values:  # Hyperband: the epoch budget of this trial
            row["epochs"] = values["tuner/epochs"]
        row.update({k: values.get(k) for k in HPARAM_KEYS})
        rows.append(row)
    if not rows:
        return "(no completed trials)"
    table = pd.DataFrame(rows)
    return table.to_string(
        index=False,
        formatters={
            oracle.objective.name: "{:.4f}".format,
            "learning_rate": "{:.2e}".format,
            "dropout": "{:.2f}".format,
            "label_smoothing": "{:.2f}".format,
        },
    )


def plot_trials(oracle, path: Path) -> None:
    """Objective of every finished trial in the order they ended, and the best so far (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from keras_tuner.engine.trial import TrialStatus

    ended = [oracle.trials[i] for i in oracle.end_order if i in oracle.trials]
    ended = [t for t in ended if t.status == TrialStatus.COMPLETED and t.score is not None]
    scores = np.array([t.score for t in ended], dtype=float)
    best = (
        (
            np.maximum.accumulate(scores)
            if oracle.objective.direction == "max"
            else np.minimum.accumulate(scores)
        )
        if len(scores)
        else scores
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(scores) + 1)
    ax.scatter(x, scores, s=18, label="trial", color="tab:blue")
    ax.plot(x, best, color="tab:orange", label="best so far")
    ax.set_xlabel("finished trial")
    ax.set_ylabel(f"{oracle.objective.name} (clean/validation)")
    ax.set_title("Head hyperparameter search")
    ax.grid(alpha=0.3)
    ax.legend()
    from tumorlib.evaluation.plots import save_figure

    save_figure(fig, path, dpi=100)


def write_results(
    tuner, args: argparse.Namespace, settings: dict[str, Any], elapsed_s: float
) -> dict[str, Any]:
    """Write the best-hyperparameters JSON, the summary JSON and the PNG; return the summary."""
    from keras_tuner.engine.trial import TrialStatus

    from tumorlib.contracts.runs import write_json
    from tumorlib.data.pipeline import DATASET_NAME
    from tuning.hypermodel import hparams_dict

    project_dir = Path(tuner.project_dir)
    ranked = finished_trials(tuner.oracle)
    if not ranked:
        raise RuntimeError(f"no trial of {project_dir} finished; nothing to write")
    best = ranked[0]
    best_hparams = hparams_dict(best.hyperparameters)
    output = args.output or project_dir / BEST_HPARAMS_FILE
    write_json(Path(output), best_hparams)
    statuses: dict[str, int] = {}
    for trial in tuner.oracle.trials.values():
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    summary = {
        "best_hparams": best_hparams,
        "best_hparams_file": str(output),
        "best_trial": best.trial_id,
        "best_score": float(best.score),
        "objective": tuner.oracle.objective.name,
        "scored_on": f"{DATASET_NAME}/clean validation split",
        "trials_completed": statuses.get(TrialStatus.COMPLETED, 0),
        "trials_by_status": statuses,
        "elapsed_s_this_run": round(elapsed_s, 1),
        "settings": settings,
    }
    write_json(project_dir / SUMMARY_FILE, summary)
    plot_trials(tuner.oracle, project_dir / PLOT_FILE)
    return summary


def print_report(oracle, summary: dict[str, Any], elapsed_s: float, top: int) -> None:
    """The command's result on stdout: the best trials and where their hyperparameters went."""
    print()
    print(f"Best trials ({oracle.objective.name} on clean/validation):")
    print(trials_table(oracle, top))
    print()
    print(
        f"{summary['trials_completed']} trial(s) completed; this run took {elapsed_s:.1f} s. "
        f"Best {summary['objective']} = {summary['best_score']:.4f} "
        f"(trial {summary['best_trial']})."
    )
    print(f"Best hyperparameters -> {summary['best_hparams_file']}")
    print(f"Use them: python -m tumorlib.train --hparams {summary['best_hparams_file']}")
