"""The validation study (issue 16): baselines fitted on training patients, paired statistics,
leakage checks and the study's tables, beside the Table 5 variants (docs/validation.md)."""
