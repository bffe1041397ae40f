"""Deployment: export a trained run for TF Serving, serve it, ask it, and keep the record.

One folder per job; a folder imports only the folders below it (import-linter keeps it so):

    pacs | audit               the PACS round trip and its DICOM objects | the audit record
    clients | server | export  ask a model (REST or in-process) | a local TF Serving stand-in |
                               a run -> a SavedModel
    common                     version folders on disk, TF error words

``python -m serving.local`` and ``python -m serving.export`` are the two commands. Nothing here
imports TensorFlow at package import time, so ``serving.clients.rest`` stays light. Deployment
manifests (compose, Kubernetes, TF Serving configs) live in ``deploy/``.
"""
