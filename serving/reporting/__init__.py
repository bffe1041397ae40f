"""A report for the record: one PDF for a case (a slice) or a study, from what was shown.

:mod:`.content` gathers the answer, its reasons, the heatmap, the similar cases, the model and
the audit record into a :class:`~serving.reporting.content.Report` (TensorFlow-free);
:mod:`.pdf` lays it out with reportlab. Patient identifiers appear only when the caller passes
them (the signed-in user asked); file names never do.
"""
