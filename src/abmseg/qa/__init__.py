"""Whether a prediction can be trusted: what the input CT looks like against the training CTs,
per-region statistics of the predicted marrow, and the pass / warn / fail flags (issue 18)."""
