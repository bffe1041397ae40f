"""Hyperparameter search for the classification head with KerasTuner.

The head (optional hidden layer, dropout, softmax) is searched on *cached* pooled backbone
features (:mod:`tumorlib.training.features`), so a trial costs seconds instead of a pass of the
backbone over every image. Entry point: ``python -m tuning.search``; its best hyperparameters are
written as JSON that ``python -m tumorlib.train --hparams FILE`` reads.

Nothing heavy is imported here, so ``python -m tuning.search --help`` and flag errors answer
without paying TensorFlow's import time.
"""
