"""The apps layer's command line: the ``tumorlib`` command, the main job and the batch CLI.

Above serving and tuning in the layers (docs/architecture.md): it composes library functions and
serving backends; nothing below imports it.
"""
