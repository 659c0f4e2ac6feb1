"""Rule registration_figure: one patient's PET on the CT before and after registration, with the
QC figures against their limits (report, results page)."""

from abmseg.evaluate.registration_figure import registration_figure
from abmseg.step import rule_step

with rule_step(snakemake) as log:
    drawn = registration_figure(
        snakemake.input.ct,
        snakemake.input.pet,
        snakemake.input.registered,
        snakemake.input.qc,
        snakemake.output[0],
        patient=snakemake.wildcards.patient,
    )
    positions = drawn["positions"]
    log.info(
        "planes through the %s at x, y, z = %s mm",
        positions["centre_from"],
        ", ".join(f"{v:.1f}" for v in positions["point_mm"]),
    )
    log.info(
        "QC: %s", ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in drawn["checks"].items())
    )
