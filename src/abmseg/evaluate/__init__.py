"""Per-patient scores and cohort tables shaped like the paper's Tables 1 and 2."""
