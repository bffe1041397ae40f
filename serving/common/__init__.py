"""What the server, the clients and the export share: version folders on disk, TF error words,
and the one client policy for outbound calls (deadlines, size caps, idempotent retries)."""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "list_versions": "versions",
    "find_latest_version": "versions",
    "next_version": "versions",
    "summarize_tf_error": "tf_errors",
    "Deadline": "deadline",
    "DeadlineExceeded": "deadline",
    "ClientPolicy": "http_policy",
    "ResponseTooLarge": "http_policy",
    "make_session": "http_policy",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
