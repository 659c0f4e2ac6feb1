"""Rule figure: CT, PET, sPET and predicted vs true ABM for one test patient (report)."""

from abmseg.evaluate.figures import overlay_figure
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake):
    overlay_figure(
        snakemake.input.ct,
        snakemake.input.pet,
        snakemake.input.spet,
        snakemake.input.label,
        snakemake.input.abm,
        snakemake.output[0],
        title=f"{patient} ({snakemake.wildcards.variant})",
    )
