"""Rule figure: CT, PET, sPET and predicted vs true ABM for one test patient (report)."""

from abmseg.evaluate.figures import overlay_figure
from abmseg.regions import DEFAULT_REGIONS
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    positions = overlay_figure(
        snakemake.input.ct,
        snakemake.input.pet,
        snakemake.input.spet,
        snakemake.input.label,
        snakemake.input.abm,
        snakemake.output[0],
        title=f"{patient} ({snakemake.wildcards.variant})",
        planning_ct=snakemake.input.converted_ct,
        regions=snakemake.config.get("regions", DEFAULT_REGIONS),
    )
    log.info("planes through the centre of the %s", positions["centre_from"])
    for plane in ("axial", "coronal", "sagittal"):
        where = positions[plane]
        log.info(
            "%s plane: %s = %.1f mm, planning CT slice index %s",
            plane,
            where["axis"],
            where["mm"],
            where["planning_ct_index"],
        )
