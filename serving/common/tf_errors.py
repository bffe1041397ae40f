"""Turn a TensorFlow runtime error into the one line a person needs.

Graph-mode errors carry node names, stack-trace placeholders and op suffixes; the REST error
body and our exceptions should say only what was wrong with the input (for example
"Unknown image file format. One of JPEG, PNG, GIF, BMP required.").
"""

from __future__ import annotations

import re

_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "{{")


def summarize_tf_error(message: str) -> str:
    """The informative lines of a TF error message, joined, without node and op annotations."""
    lines = [
        line.strip()
        for line in message.splitlines()
        if line.strip() and not line.strip().startswith(_NOISE)
    ]
    text = " ".join(lines) or message.strip()
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    text = re.sub(r"\s*\[\[\{\{node [^\]]*\]\]", "", text)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    # The input policy's refusals (tumorlib.images.graph_policy): only its words, not the assertion.
    policy = re.search(r"assertion failed: \[(.*)\]", text) or re.search(
        r"Summarized data: b'(.*)'", text
    )
    return (policy.group(1) if policy else text).strip()
