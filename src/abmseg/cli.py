"""`abmseg` command line: every pipeline stage runs on its own, outside Snakemake."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abmseg import __version__
from abmseg.errors import PatientDataError, SheetError
from abmseg.provenance.errors import ProvenanceError


def _synth(args: argparse.Namespace) -> None:
    from abmseg.synth import generate_cohort

    sheet = generate_cohort(
        args.out,
        n_patients=args.patients,
        seed=args.seed,
        preset=args.preset,
        label_format=args.label_format,
    )
    print(f"wrote {args.patients} synthetic patients; cohort sheet: {sheet}")


def _synth_report(args: argparse.Namespace) -> int:
    from abmseg.synth.report import format_summary, synth_report

    report = synth_report(args.cohort, args.out, figures=args.figures)
    print(format_summary(report))
    folder = args.out or args.cohort
    print(f"wrote synth_report.tsv, synth_summary.tsv and synth_summary.json in {folder}")
    return 1 if args.check and report.failed_gates else 0


def _convert(args: argparse.Namespace) -> None:
    from abmseg.io.convert import ConvertedPaths, convert_patient

    out = Path(args.out)
    convert_patient(
        patient=args.patient,
        ct_dir=args.ct,
        pet_dir=args.pet,
        label_path=args.label,
        out=ConvertedPaths(
            ct=out / "ct.nii.gz",
            pet_suv=out / "pet_suv.nii.gz",
            label=out / "label.nii.gz",
            meta=out / "meta.json",
        ),
        allowed_labels=[0, 1, 2, 3],
    )
    print(f"converted {args.patient} into {out}")


def _register(args: argparse.Namespace) -> None:
    from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct

    out = Path(args.out)
    qc = register_pet_to_ct(
        args.ct,
        args.pet,
        out / "pet_suv.nii.gz",
        out / "pet_to_ct.mat",
        out / "qc.json",
        RegistrationSettings(seed=args.seed, threads=args.threads),
        patient=args.patient,
    )
    print(
        f"registered {args.patient}: MI {qc['mutual_information_before']:.4f} -> "
        f"{qc['mutual_information_after']:.4f}"
    )


def _crop(args: argparse.Namespace) -> None:
    from abmseg.preprocess.roi import CropSettings, crop_patient

    out = Path(args.out)
    roi = crop_patient(
        args.ct,
        args.pet,
        args.label,
        out / "ct.nii.gz",
        out / "pet_suv.nii.gz",
        out / "label.nii.gz",
        out / "roi.json",
        CropSettings(margin_mm=tuple(args.margin_mm)),
        patient=args.patient,
    )
    print(f"cropped {args.patient}: box {roi['box_ct_index']}")


def _normalise(args: argparse.Namespace) -> None:
    from abmseg.preprocess.normalise import NormaliseSettings, normalise_patient

    out = Path(args.out)
    normalise_patient(
        args.ct,
        args.pet,
        args.label,
        out / "ct.nii.gz",
        out / "pet.nii.gz",
        out / "label.nii.gz",
        NormaliseSettings(args.ct_level, args.ct_width, args.suv_ceiling),
        patient=args.patient,
    )
    print(f"normalised {args.patient} into {out}")


def _predict(args: argparse.Namespace) -> None:
    import logging
    import time

    import torch

    from abmseg.cohort.sheet import check_patient_id
    from abmseg.infer.ct_only import SliceProgress, predict_into_folder
    from abmseg.infer.model_bundle import load_model_bundle

    begin = time.perf_counter()
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    patient = args.patient or Path(args.out).resolve().name
    why = check_patient_id(patient)
    if why:
        raise PatientDataError(
            patient, args.out, f"the patient name {why}", "pass --patient with a pseudonym"
        )
    device = torch.device(args.device) if args.device else None
    bundle = load_model_bundle(args.bundle, device=device, threads=args.threads, patient=patient)
    logging.getLogger(__name__).info(
        "%s: bundle %s verified and loaded in %.1f s", patient, bundle.variant,
        time.perf_counter() - begin,
    )  # fmt: skip
    progress = SliceProgress(f"{patient}: inference", 1, enabled=not args.quiet)
    try:
        summary = predict_into_folder(
            patient, args.ct, bundle, args.out, dicom=not args.no_dicom, progress=progress
        )
    finally:
        progress.close()
    seconds = time.perf_counter() - begin
    by_value = sorted(bundle.regions, key=bundle.regions.get)
    voxels = ", ".join(f"{name} {summary['voxels_per_region'][name]}" for name in by_value)
    print(f"{patient}: ABM voxels {voxels}; {args.out} in {seconds:.1f} s on {bundle.device}")


def _split(args: argparse.Namespace) -> None:
    from abmseg.cohort.sheet import load_sheet, scored_patients
    from abmseg.cohort.split import assign_split, write_split

    sheet = load_sheet(args.sheet)
    overrides = {p: s for p, s in sheet["split"].items() if s}
    assignment = assign_split(scored_patients(sheet), args.train_fraction, args.salt, overrides)
    write_split(assignment, args.out)
    print(f"wrote {args.out}")


def _provenance(args: argparse.Namespace) -> None:
    import json

    from abmseg.provenance.lineage import trace_file
    from abmseg.provenance.render import render_tree

    lineage = trace_file(args.file)
    print(json.dumps(lineage.to_dict(), indent=2) if args.json else render_tree(lineage))


def _audit(args: argparse.Namespace) -> int:
    from abmseg.provenance.audit import audit

    report = audit(args.paths)
    for problem in report.problems:
        print(problem.line())
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _export_prov(args: argparse.Namespace) -> None:
    from prov.model import ProvActivity, ProvEntity

    from abmseg.provenance.export import export_prov

    document = export_prov(args.results, args.out)
    jobs = len(list(document.get_records(ProvActivity)))
    files = len(list(document.get_records(ProvEntity)))
    print(f"wrote {args.out}: {jobs} jobs, {files} files (PROV-JSON, read back and verified)")


def _phi_scan(args: argparse.Namespace) -> int:
    from abmseg.privacy.identifiers import identifiers_in
    from abmseg.privacy.scan import scan

    identifiers = identifiers_in(args.dicom)
    if not identifiers:
        print("abmseg: error: no DICOM identifiers found under --dicom folders", file=sys.stderr)
        return 2
    findings, files = scan(args.paths, identifiers, args.exclude)
    for finding in findings:
        print(finding.line())
    verdict = f"{len(findings)} finding(s) in {files} file(s), {len(identifiers)} identifiers"
    print(verdict, file=sys.stderr if findings else sys.stdout)
    return 1 if findings else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abmseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"abmseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic pelvic PET-CT cohort as real DICOM")
    synth.add_argument("out", help="output folder (gets one folder per patient and patients.tsv)")
    synth.add_argument("--patients", type=int, default=6, help="number of patients")
    synth.add_argument("--seed", type=int, default=0, help="seed; same seed, same bytes")
    synth.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    synth.add_argument(
        "--label-format",
        choices=["nifti", "rtstruct"],
        default="nifti",
        help="labels as NIfTI, or as an RTSTRUCT of the CT (as a planning system exports them)",
    )
    synth.set_defaults(func=_synth)

    synth_report = sub.add_parser(
        "synth-report",
        help="realism figures and trivial baselines of a synthetic cohort, against design gates",
    )
    synth_report.add_argument("cohort", help="a cohort folder written by `abmseg synth`")
    synth_report.add_argument(
        "--out", help="folder for synth_report.tsv and synth_summary.tsv/.json (default: COHORT)"
    )
    synth_report.add_argument(
        "--check", action="store_true", help="exit 1 when any design gate fails"
    )
    synth_report.add_argument(
        "--figures",
        type=int,
        default=0,
        metavar="N",
        help="also draw axial/coronal/sagittal CT, PET and label of the first N patients "
        "(figures/<patient>.png)",
    )
    synth_report.set_defaults(func=_synth_report)

    convert = sub.add_parser("convert", help="one patient's DICOM CT/PET and label to NIfTI")
    convert.add_argument("--patient", required=True)
    convert.add_argument("--ct", required=True, help="CT series folder")
    convert.add_argument("--pet", required=True, help="PET series folder")
    convert.add_argument("--label", required=True, help="label NIfTI on the CT, or an RTSTRUCT")
    convert.add_argument("--out", required=True, help="output folder")
    convert.set_defaults(func=_convert)

    register = sub.add_parser("register", help="register a converted PET onto its CT (ANTs)")
    register.add_argument("--patient", required=True)
    register.add_argument("--ct", required=True, help="converted ct.nii.gz")
    register.add_argument("--pet", required=True, help="converted pet_suv.nii.gz")
    register.add_argument("--out", required=True, help="output folder")
    register.add_argument("--seed", type=int, default=42)
    register.add_argument("--threads", type=int, default=1)
    register.set_defaults(func=_register)

    crop = sub.add_parser("crop", help="Otsu body mask, bed removal, pelvic box on CT/PET/label")
    crop.add_argument("--patient", required=True)
    crop.add_argument("--ct", required=True, help="converted ct.nii.gz")
    crop.add_argument("--pet", required=True, help="registered pet_suv.nii.gz (on the CT grid)")
    crop.add_argument("--label", required=True, help="converted label.nii.gz")
    crop.add_argument("--out", required=True, help="output folder")
    crop.add_argument("--margin-mm", type=float, nargs=3, default=[10.0, 10.0, 0.0])
    crop.set_defaults(func=_crop)

    normalise = sub.add_parser("normalise", help="CT window and SUV ceiling to [-1, 1]")
    normalise.add_argument("--patient", required=True)
    normalise.add_argument("--ct", required=True, help="cropped ct.nii.gz")
    normalise.add_argument("--pet", required=True, help="cropped pet_suv.nii.gz")
    normalise.add_argument("--label", required=True, help="cropped label.nii.gz")
    normalise.add_argument("--out", required=True, help="output folder")
    normalise.add_argument("--ct-level", type=float, default=100.0)
    normalise.add_argument("--ct-width", type=float, default=1200.0)
    normalise.add_argument("--suv-ceiling", type=float, default=10.0)
    normalise.set_defaults(func=_normalise)

    sub.add_parser("train", help="train one stage of one variant (see: abmseg train --help)")

    predict = sub.add_parser(
        "predict", help="ABM of one patient from its planning CT alone, with a model bundle"
    )
    predict.add_argument("--bundle", required=True, help="model bundle folder (or its bundle.json)")
    predict.add_argument("--ct", required=True, help="the patient's CT DICOM series folder")
    predict.add_argument(
        "--out",
        required=True,
        help="output folder: spet/abm/abm_ct.nii.gz, prediction.json, abm_seg.dcm, "
        "abm_rtstruct.dcm (the DICOM files carry the CT's patient identity)",
    )
    predict.add_argument(
        "--patient",
        help="pseudonym for messages and prediction.json (default: the --out folder's name)",
    )
    predict.add_argument("--threads", type=int, default=4, help="CPU threads (without a GPU)")
    predict.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    predict.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG and RTSTRUCT")
    predict.add_argument("--quiet", action="store_true", help="no progress bar, no timings")
    predict.set_defaults(func=_predict)

    split = sub.add_parser("split", help="stable 7:3 train/test split of a cohort sheet")
    split.add_argument("sheet", help="patients.tsv")
    split.add_argument("--out", default="split.tsv")
    split.add_argument("--train-fraction", type=float, default=0.7)
    split.add_argument("--salt", default="abmseg-split-v1")
    split.set_defaults(func=_split)

    provenance = sub.add_parser(
        "provenance", help="lineage of a result back to the raw DICOM files"
    )
    provenance.add_argument("file", help="a file under results/ (or its record)")
    provenance.add_argument("--json", action="store_true", help="the lineage as JSON")
    provenance.set_defaults(func=_provenance)

    audit = sub.add_parser(
        "audit", help="re-hash results and their lineage; exit 1 naming any changed file"
    )
    audit.add_argument("paths", nargs="+", help="result files and/or results folders")
    audit.set_defaults(func=_audit)

    export = sub.add_parser("export-prov", help="write the run as W3C PROV-JSON")
    export.add_argument("results", help="the results/ folder (or a folder in it)")
    export.add_argument("-o", "--out", default="run.prov.json", help="PROV-JSON file to write")
    export.set_defaults(func=_export_prov)

    phi = sub.add_parser(
        "phi-scan", help="search outputs for the names, IDs, dates and UIDs of DICOM headers"
    )
    phi.add_argument("paths", nargs="+", help="files and folders to search (results/, logs/, ...)")
    phi.add_argument(
        "--dicom", action="append", required=True, help="raw DICOM folder (repeatable)"
    )
    phi.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATH",
        help="file or folder not to search (repeatable), e.g. results/dicom: the DICOM exports "
        "carry the CT's patient identity on purpose",
    )
    phi.set_defaults(func=_phi_scan)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its own parser: abmseg.train.cli (also run by torchrun)
        from abmseg.train.cli import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except (PatientDataError, SheetError, ProvenanceError) as error:
        print(f"abmseg: error: {error}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
