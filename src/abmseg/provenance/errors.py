"""The one error type of the provenance tools: a readable message, never a traceback."""


class ProvenanceError(Exception):
    """A record is missing, unreadable or inconsistent; the message names the file and the fix."""
