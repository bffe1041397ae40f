"""The custom loop computes what ``Model.fit`` with the fit path's callbacks computes.

Same model, same initial weights, the same unshuffled data (a partial last batch included),
unequal class weights, label smoothing, and a patience small enough that ReduceLROnPlateau and
EarlyStopping both fire: the history rows, the learning rates, the epoch training stopped at and
the restored best weights agree. A second call resumes from the checkpoint. In-process, seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tumorlib.contracts.runs import CHECKPOINT_DIR, LOG_DIR
from tumorlib.training import custom_loop
from tumorlib.training import phases as training_phases

WEIGHTS = {0: 0.5, 1: 1.0, 2: 2.0, 3: 1.5}


def _data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = training_phases.one_hot(rng.integers(0, 4, size=40))
    xv = rng.normal(size=(12, 8)).astype(np.float32)
    yv = training_phases.one_hot(rng.integers(0, 4, size=12))
    ds = tf.data.Dataset.from_tensor_slices
    return ds((x, y)).batch(16), ds((xv, yv)).batch(16)


def _model(initial=None):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
    if initial is not None:
        model.set_weights(initial)
    training_phases.compile_model(model, 0.2, label_smoothing=0.1)
    return model


def _dirs(root: Path) -> Path:
    (root / CHECKPOINT_DIR).mkdir(parents=True)
    (root / LOG_DIR).mkdir(parents=True)
    return root


def _phase(run: Path, epochs: int) -> custom_loop.Phase:
    return custom_loop.Phase("head", epochs, 2, 0.1, WEIGHTS, write_dir=run, chief_dir=run)


def test_custom_loop_matches_fit_with_the_fit_paths_callbacks(tmp_path):
    import tensorflow as tf

    train, val = _data()
    fitted = _model()
    initial = fitted.get_weights()
    fit_run = _dirs(tmp_path / "fit")
    fitted.fit(train, validation_data=val, epochs=12, class_weight=WEIGHTS, verbose=0,
               callbacks=training_phases.callbacks(fit_run, "head", patience=2))  # fmt: skip
    looped = _model(initial)
    loop_run = _dirs(tmp_path / "loop")
    custom_loop.fit(looped, train, val, tf.distribute.get_strategy(), _phase(loop_run, 12))

    want = pd.read_csv(fit_run / LOG_DIR / "history_head.csv")
    got = pd.read_csv(loop_run / LOG_DIR / "history_head.csv")
    assert list(got.columns) == list(want.columns)
    assert len(want) < 12 and want["learning_rate"].nunique() > 1  # both callbacks fired
    pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(looped.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same best epoch restored
    assert (loop_run / CHECKPOINT_DIR / "head_best.keras").is_file()


def test_custom_loop_resumes_from_its_checkpoint(tmp_path):
    import tensorflow as tf

    train, val = _data()
    run = _dirs(tmp_path / "run")
    strategy = tf.distribute.get_strategy()
    phase = custom_loop.Phase("head", 2, 50, 0.0, WEIGHTS, write_dir=run, chief_dir=run)
    assert custom_loop.fit(_model(), train, val, strategy, phase) == 0
    phase.epochs = 3  # a fresh process: new model, state restored from the checkpoint
    assert custom_loop.fit(_model(), train, val, strategy, phase) == 2
    history = pd.read_csv(run / LOG_DIR / "history_head.csv")
    assert list(history["epoch"]) == [0, 1, 2]
