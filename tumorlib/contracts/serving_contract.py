"""The serving contract: signature names, input/output keys and model defaults, defined once.

Export writes these names into the SavedModel; the REST client, the local server, the in-process
model, the page and the batch CLI read them back. TensorFlow-free, so light clients can import it.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "brain_mri"
MODEL_BASE_PATH = Path("models") / MODEL_NAME  # TF Serving's layout: <base>/<version>/

SERVING_SIGNATURE = "serving_default"
EXPLAIN_SIGNATURE = "explain"  # Grad-CAM
METADATA_SIGNATURE = "metadata"

INPUT_KEY = "image_bytes"  # tf.string [None]: encoded JPEG/PNG bytes

PROBABILITIES_KEY = "probabilities"
CLASS_INDEX_KEY = "class_index"
CLASS_NAME_KEY = "class_name"
CONFIDENCE_KEY = "confidence"
ABSTAIN_KEY = "abstain"
IN_DISTRIBUTION_KEY = "in_distribution"
GATE_SCORE_KEY = "gate_score"
FAMILIAR_KEY = "familiar"  # False: a brain MRI unlike the training data (flagged, still classified)
FAMILIARITY_SCORE_KEY = "familiarity_score"  # familiar when <= 1
HEATMAP_KEY = "heatmap"

OUTPUT_KEYS = (PROBABILITIES_KEY, CLASS_INDEX_KEY, CLASS_NAME_KEY)  # always present
ABSTENTION_OUTPUT_KEYS = (ABSTAIN_KEY,)  # when the run measured an abstention threshold
GATE_OUTPUT_KEYS = (IN_DISTRIBUTION_KEY, GATE_SCORE_KEY)  # when the run fitted an input gate
FAMILIARITY_OUTPUT_KEYS = (FAMILIAR_KEY, FAMILIARITY_SCORE_KEY)  # when it fitted familiarity
EXPLAIN_OUTPUT_KEYS = (PROBABILITIES_KEY, CLASS_INDEX_KEY, HEATMAP_KEY)

# Similar confirmed cases (the export's training slices nearest in the model's own features).
SIMILAR_SIGNATURE = "similar_cases"
EMBEDDING_KEY = "embedding"  # float32 [N, D], unit norm: the query, for an external vector index
NEIGHBOR_INDEX_KEY = "neighbor_index"  # int64 [N, K]: rows of the stored index, nearest first
NEIGHBOR_SIMILARITY_KEY = "neighbor_similarity"  # float32 [N, K]: cosine similarity
NEIGHBOR_LABEL_KEY = "neighbor_label"  # string [N, K]: the confirmed class
NEIGHBOR_SOURCE_KEY = "neighbor_source"  # string [N, K]: the collection it came from
NEIGHBOR_LICENCE_KEY = "neighbor_licence"  # string [N, K]: that collection's terms
NEIGHBOR_THUMBNAIL_KEY = "neighbor_thumbnail_bytes"  # PNG; "_bytes": base64 over REST
SIMILAR_OUTPUT_KEYS = (
    PROBABILITIES_KEY,
    CLASS_INDEX_KEY,
    CLASS_NAME_KEY,
    EMBEDDING_KEY,
    NEIGHBOR_INDEX_KEY,
    NEIGHBOR_SIMILARITY_KEY,
    NEIGHBOR_LABEL_KEY,
    NEIGHBOR_SOURCE_KEY,
    NEIGHBOR_LICENCE_KEY,
    NEIGHBOR_THUMBNAIL_KEY,
)
MAX_SIMILAR = 10  # K the signature returns; clients keep the first k <= K
SIMILAR_CASES_ASSET_DIR = "similar_cases"  # under assets/: the index, items and thumbnails

METADATA_INPUT_KEY = "request"
METADATA_OUTPUT_KEY = "metadata_json"
METADATA_ASSET = "metadata.json"  # under the version's assets/

# What the user reads when a safety check withholds an answer; every surface uses these words.
UNCERTAIN_MESSAGE = "Uncertain — refer to a radiologist"
# A study whose slices show a tumour but do not support one type (too few confident slices agree).
TUMOUR_TYPE_UNCERTAIN_MESSAGE = "Tumour — type uncertain, refer to a radiologist"
NOT_BRAIN_MRI_MESSAGE = "This does not look like a brain MRI slice — not classified"
UNFAMILIAR_MESSAGE = (
    "Unfamiliar acquisition — a brain MRI unlike the training data (sequence, contrast, scanner "
    "or annotations); read the result with extra care"
)
DISCLAIMER = "Decision support only — not a diagnosis."
