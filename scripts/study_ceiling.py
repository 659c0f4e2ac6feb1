"""Rule ceiling: the phantom's CT-visible ceiling (ceiling_prob >= 0.5) on the cropped grid."""

from abmseg.infer.patient import read_roi_box
from abmseg.io.volume import read_nifti, write_nifti
from abmseg.step import rule_step
from abmseg.study.ceiling import ceiling_on_cropped_grid

patient = snakemake.wildcards.patient
with rule_step(snakemake):
    box = read_roi_box(snakemake.input.roi, patient)
    cropped_label = read_nifti(snakemake.input.cropped_label, patient, made_by="crop")
    image = ceiling_on_cropped_grid(patient, snakemake.input.label, box, cropped_label)
    write_nifti(image, snakemake.output.abm)
