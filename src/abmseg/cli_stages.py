"""The pipeline stages as ``abmseg`` subcommands: the twin of every rule, outside Snakemake.

Each command reads its settings with the stage's own ``from_config`` from ``--config FILE`` (the
workflow's config format; without it, the defaults, which equal config/config.yaml) and
``--set KEY=VALUE`` overrides, then calls the same core as the rule. Flags are only paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from abmseg.errors import ConfigError, PatientDataError, UserError
from abmseg.infer.cpu_sampler import CHOICES as SAMPLER_CHOICES
from abmseg.settings import read_config


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {text!r} is not KEY=VALUE", "write e.g. --set crop.margin_mm=[5,5,0]"
        )
    return key.strip().split("."), yaml.safe_load(value)


def load_stage_config(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` (or nothing: the defaults) with every ``--set`` applied."""
    config = read_config(args.config) if args.config else {}
    for text in args.set:
        keys, value = parse_assignment(text)
        target = config
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {text!r}: {key} is not a section", "set a key inside it")
        target[keys[-1]] = value
    return config


def _convert(args: argparse.Namespace) -> None:
    from abmseg.preprocess.convert import ConvertedPaths, ConvertSettings, convert_patient

    settings = ConvertSettings.from_config(load_stage_config(args))
    out = ConvertedPaths.in_folder(args.out)
    convert_patient(args.patient, args.ct, args.pet, args.label, out, settings)
    print(f"converted {args.patient} into {args.out}")


def _register(args: argparse.Namespace) -> None:
    from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct

    settings = RegistrationSettings.from_config(load_stage_config(args), threads=args.threads)
    out = Path(args.out)
    qc = register_pet_to_ct(
        args.ct,
        args.pet,
        out / "pet_suv.nii.gz",
        out / "pet_to_ct.mat",
        out / "qc.json",
        settings,
        patient=args.patient,
    )
    print(
        f"registered {args.patient}: MI {qc['mutual_information_before']:.4f} -> "
        f"{qc['mutual_information_after']:.4f}"
    )


def _crop(args: argparse.Namespace) -> None:
    from abmseg.preprocess.roi import CropSettings, crop_patient

    settings = CropSettings.from_config(load_stage_config(args))
    out = Path(args.out)
    names = ("ct.nii.gz", "pet_suv.nii.gz", "label.nii.gz", "roi.json")
    roi = crop_patient(
        args.ct, args.pet, args.label, *(out / n for n in names), settings, patient=args.patient
    )
    print(f"cropped {args.patient}: box {roi['box_ct_index']}")


def _normalise(args: argparse.Namespace) -> None:
    from abmseg.preprocess.normalise import NormaliseSettings, normalise_patient

    settings = NormaliseSettings.from_config(load_stage_config(args))
    out = Path(args.out)
    names = ("ct.nii.gz", "pet.nii.gz", "label.nii.gz")
    normalise_patient(
        args.ct, args.pet, args.label, *(out / n for n in names), settings, patient=args.patient
    )
    print(f"normalised {args.patient} into {out}")


def _split(args: argparse.Namespace) -> None:
    from abmseg.cohort.plan import plan_cohort
    from abmseg.cohort.sheet import load_sheet
    from abmseg.cohort.split import SplitSettings, write_split

    plan = plan_cohort(load_sheet(args.sheet), SplitSettings.from_config(load_stage_config(args)))
    write_split(plan.split, args.out)
    print(f"wrote {args.out}: {len(plan.train)} training, {len(plan.test)} test patients")


def _infer(args: argparse.Namespace) -> None:
    from abmseg.atomic import staged_folder
    from abmseg.infer.networks import load_networks
    from abmseg.infer.patient import PredictionPaths, Predictor, infer_patient

    config = load_stage_config(args)
    networks, device = load_networks(args.model, threads=args.threads, patient=args.patient)
    predictor = Predictor.from_config(networks, device, config, profile=None)
    # written beside --out first: a failure leaves no new mask beside older maps
    with staged_folder(args.out) as staging:
        paths = PredictionPaths.in_folder(staging, ct_only=False)
        summary = infer_patient(
            args.patient, args.ct, args.converted_ct, args.roi, predictor, paths
        )
    print(f"{args.patient}: label voxels {summary['voxels_per_label']} on {device}")


def _qa(args: argparse.Namespace) -> None:
    from abmseg.atomic import staged_folder
    from abmseg.io.jsonfile import read_json
    from abmseg.preprocess.convert import ConvertSettings
    from abmseg.preprocess.roi import read_roi_box
    from abmseg.qa.checks import QaSettings
    from abmseg.qa.patient import MAPS, AssessmentPaths, assess_files
    from abmseg.qa.profile import TrainingProfile

    config = load_stage_config(args)
    profile = TrainingProfile.from_dict(read_json(args.profile)) if args.profile else None
    maps = {name: Path(args.maps) / file for name, file in MAPS.items()}
    with staged_folder(args.out) as staging:
        qa = assess_files(
            args.patient,
            maps,
            args.converted_ct,
            read_roi_box(args.roi, args.patient),
            ConvertSettings.from_config(config).regions,
            QaSettings.from_config(config),
            profile,
            AssessmentPaths.in_folder(staging),
            with_spet=not args.no_spet,
        )
    print(f"{args.patient}: QA {qa['verdict']} {[r['check'] for r in qa['reasons']]}")


def _evaluate(args: argparse.Namespace) -> None:
    from abmseg.atomic import write_json
    from abmseg.evaluate.patient import EvaluateSettings, score_patient_files

    settings = EvaluateSettings.from_config(load_stage_config(args))
    scores = score_patient_files(
        args.patient, args.spet, args.abm, args.pet, args.label, args.ct, settings
    )
    write_json(args.out, {"variant": args.variant, **scores})
    dice = {region: values["dice"] for region, values in scores["segmentation"].items()}
    print(f"{args.patient}: PSNR {scores['synthesis']['psnr_db']:.2f} dB, Dice {dice}")


def _aggregate(args: argparse.Namespace) -> None:
    from abmseg.evaluate.aggregate import aggregate_files

    out = Path(args.out)
    names = ("per_patient.tsv", "summary.tsv", "summary.md", "summary.json")
    print(aggregate_files(args.metrics, *(out / n for n in names)))


def _bundle(args: argparse.Namespace) -> None:
    from abmseg.infer.model_bundle import BundleSettings, read_training_record, write_model_bundle
    from abmseg.io.jsonfile import read_json

    settings = BundleSettings.from_config(load_stage_config(args))
    profile = read_json(args.profile) if args.profile else None
    try:  # a model.pt of a pipeline run carries its training job's record
        provenance = read_training_record(args.model)
    except (ValueError, UserError):
        provenance = None
    manifest = write_model_bundle(
        args.out,
        args.model,
        preprocessing=settings.preprocessing,
        sampler=settings.sampler,
        regions=settings.regions,
        provenance=provenance,
        qa=settings.qa_record(profile),
    )
    print(
        f"wrote bundle {args.out}: {manifest['variant']}, networks {sorted(manifest['networks'])}"
    )


def _export_dicom(args: argparse.Namespace) -> None:
    from abmseg.io.jsonfile import read_json
    from abmseg.rt.export import ExportSettings, export_patient

    regions = ExportSettings.from_config(load_stage_config(args)).regions
    out = Path(args.out)
    probabilities = (args.prob, out / "abm_prob_seg.dcm") if args.prob else None
    verdict = read_json(args.qa, args.patient, keys=("verdict",))["verdict"] if args.qa else None
    voxels = export_patient(
        args.patient,
        args.abm_ct,
        args.ct,
        regions,
        out / "abm_seg.dcm",
        out / "abm_rtstruct.dcm",
        probabilities=probabilities,
        qa_verdict=verdict,
    )
    written = "DICOM SEG, probability SEG and RTSTRUCT" if args.prob else "DICOM SEG and RTSTRUCT"
    print(f"{args.patient}: {written} in {out} (voxels per region {voxels})")


def ensemble_override(sampler: dict, samples: int | None, tta: bool | None) -> dict:
    """``sampler`` with ``abmseg predict``'s --samples and --tta applied (None: keep)."""
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}", "pass --samples 1 or more")
    changes = {k: v for k, v in (("samples", samples), ("tta", tta)) if v is not None}
    return {**sampler, **changes}


def _predict(args: argparse.Namespace) -> None:
    import dataclasses
    import logging
    import time

    import torch

    from abmseg.cohort.sheet import check_patient_id
    from abmseg.infer.cpu_sampler import choose_sampler
    from abmseg.infer.ct_only import SliceProgress, predict_into_folder
    from abmseg.infer.model_bundle import load_model_bundle
    from abmseg.step import quiet_identifying_loggers

    begin = time.perf_counter()
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        quiet_identifying_loggers()
    patient = args.patient or Path(args.out).resolve().name
    why = check_patient_id(patient)
    if why:
        raise PatientDataError(
            patient, args.out, f"the patient name {why}", "pass --patient with a pseudonym"
        )
    device = torch.device(args.device) if args.device else None
    bundle = load_model_bundle(args.bundle, device=device, threads=args.threads, patient=patient)
    log = logging.getLogger(__name__)
    log.info(
        "%s: bundle %s verified and loaded in %.1f s", patient, bundle.variant,
        time.perf_counter() - begin,
    )  # fmt: skip
    override, reason = choose_sampler(
        bundle.manifest["sampler"], bundle.device.type, args.sampler, bundle.timesteps
    )
    if args.samples is not None or args.tta is not None:
        override = ensemble_override(override or bundle.sampler, args.samples, args.tta)
    bundle = dataclasses.replace(bundle, sampler_override=override)
    log.info("%s: %s", patient, reason)
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


Handler = Callable[[argparse.Namespace], Any]


def _stage(
    sub: argparse._SubParsersAction, name: str, help_text: str, handler: Handler
) -> argparse.ArgumentParser:
    """A stage command with the settings options every stage shares."""
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument(
        "--config", help="workflow config file (config/config.yaml's format; default: defaults)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set crop.margin_mm=[5,5,0] (repeatable)",
    )
    parser.set_defaults(func=handler)
    return parser


def _patient_images(parser: argparse.ArgumentParser, what: str, pet: str) -> None:
    parser.add_argument("--patient", required=True, help="pseudonym, for messages and records")
    parser.add_argument("--ct", required=True, help=f"{what} ct.nii.gz")
    parser.add_argument("--pet", required=True, help=pet)
    parser.add_argument("--label", required=True, help=f"{what} label.nii.gz")
    parser.add_argument("--out", required=True, help="output folder")


def add_preprocessing_commands(sub: argparse._SubParsersAction) -> None:
    convert = _stage(sub, "convert", "one patient's DICOM CT/PET and label to NIfTI", _convert)
    convert.add_argument("--patient", required=True)
    convert.add_argument("--ct", required=True, help="CT series folder")
    convert.add_argument("--pet", required=True, help="PET series folder")
    convert.add_argument("--label", required=True, help="label NIfTI on the CT, or an RTSTRUCT")
    convert.add_argument("--out", required=True, help="output folder")

    register = _stage(sub, "register", "register a converted PET onto its CT (ANTs)", _register)
    register.add_argument("--patient", required=True)
    register.add_argument("--ct", required=True, help="converted ct.nii.gz")
    register.add_argument("--pet", required=True, help="converted pet_suv.nii.gz")
    register.add_argument("--out", required=True, help="output folder")
    register.add_argument("--threads", type=int, default=1)

    crop = _stage(sub, "crop", "Otsu body mask, bed removal, pelvic box on CT/PET/label", _crop)
    _patient_images(crop, "converted", "registered pet_suv.nii.gz (on the CT grid)")
    normalise = _stage(sub, "normalise", "CT window and SUV ceiling to [-1, 1]", _normalise)
    _patient_images(normalise, "cropped", "cropped pet_suv.nii.gz")

    split = _stage(sub, "split", "stable 7:3 train/test split of a cohort sheet", _split)
    split.add_argument("sheet", help="patients.tsv")
    split.add_argument("--out", default="split.tsv")


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("train", help="train one stage of one variant (see: abmseg train --help)")

    infer = _stage(sub, "infer", "sPET and ABM of one test patient with a trained model", _infer)
    infer.add_argument("--patient", required=True)
    infer.add_argument("--model", required=True, help="the training's model.pt")
    infer.add_argument("--ct", required=True, help="normalised ct.nii.gz")
    infer.add_argument("--converted-ct", required=True, help="converted ct.nii.gz (full grid)")
    infer.add_argument("--roi", required=True, help="the crop's roi.json")
    infer.add_argument(
        "--out", required=True, help="folder for spet/abm/abm_ct/abm_prob/abm_uncertainty.nii.gz"
    )
    infer.add_argument("--threads", type=int, default=4, help="CPU threads (without a GPU)")

    qa = _stage(sub, "qa", "statistics, QA flags and QA picture of one inferred patient", _qa)
    qa.add_argument("--patient", required=True)
    qa.add_argument("--maps", required=True, help="abmseg infer's --out folder (its maps)")
    qa.add_argument("--converted-ct", required=True, help="converted ct.nii.gz (full grid)")
    qa.add_argument("--roi", required=True, help="the crop's roi.json")
    qa.add_argument(
        "--profile",
        help="the run's results/qa/training_profile.json (without it the input CT is not "
        "compared with the training CTs, and the verdict says so)",
    )
    qa.add_argument("--no-spet", action="store_true", help="a variant without sPET (ct_only)")
    qa.add_argument("--out", required=True, help="folder for abm_stats.tsv/json, qa.json, qa.png")

    bundle = _stage(sub, "bundle", "a trained model.pt as a model bundle folder", _bundle)
    bundle.add_argument("--model", required=True, help="the training's model.pt")
    bundle.add_argument(
        "--profile",
        help="the run's results/qa/training_profile.json, for the QA flags of its predictions",
    )
    bundle.add_argument("--out", required=True, help="bundle folder to write")

    predict = sub.add_parser(
        "predict", help="ABM of one patient from its planning CT alone, with a model bundle"
    )
    predict.add_argument("--bundle", required=True, help="model bundle folder (or its bundle.json)")
    predict.add_argument("--ct", required=True, help="the patient's CT DICOM series folder")
    predict.add_argument(
        "--out",
        required=True,
        help="output folder: spet/abm/abm_ct/abm_prob/abm_uncertainty.nii.gz, abm_stats.tsv/"
        "json, qa.json, qa.png, prediction.json, abm_seg.dcm, abm_prob_seg.dcm, "
        "abm_rtstruct.dcm (the DICOM files carry the CT's patient identity)",
    )
    predict.add_argument(
        "--patient",
        help="pseudonym for messages and prediction.json (default: the --out folder's name)",
    )
    predict.add_argument("--threads", type=int, default=4, help="CPU threads (without a GPU)")
    predict.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    predict.add_argument(
        "--sampler",
        choices=SAMPLER_CHOICES,
        default="auto",
        help="auto (default): the bundle's sampler on a GPU, one DDIM step from t=T/4 on a CPU "
        "(docs/validation.md); bundle: always the bundle's; cpu: always the fast one",
    )
    predict.add_argument(
        "--samples", type=int, help="sampler seeds to average (default: the bundle's)"
    )
    predict.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="also predict on the left-right mirrored CT (default: the bundle's)",
    )
    predict.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG and RTSTRUCT")
    predict.add_argument("--quiet", action="store_true", help="no progress bar, no timings")
    predict.set_defaults(func=_predict)


def add_result_commands(sub: argparse._SubParsersAction) -> None:
    evaluate = _stage(sub, "evaluate", "score one patient's sPET and ABM against truth", _evaluate)
    evaluate.add_argument("--patient", required=True)
    evaluate.add_argument("--variant", default="full", help="recorded in the scores")
    for name, what in (
        ("spet", "predicted spet.nii.gz (SUV, cropped grid)"),
        ("abm", "predicted abm.nii.gz (cropped grid)"),
        ("pet", "cropped pet_suv.nii.gz (truth)"),
        ("label", "cropped label.nii.gz (truth)"),
        ("ct", "cropped ct.nii.gz (HU, for the body mask)"),
    ):
        evaluate.add_argument(f"--{name}", required=True, help=what)
    evaluate.add_argument("--out", required=True, help="scores JSON to write")

    aggregate = sub.add_parser(
        "aggregate", help="per-patient table and summary (TSV, Markdown, JSON) of scores files"
    )
    aggregate.add_argument("metrics", nargs="+", help="scores JSON files of `abmseg evaluate`")
    aggregate.add_argument("--out", required=True, help="folder for the four tables")
    aggregate.set_defaults(func=_aggregate)

    export = _stage(
        sub, "export-dicom", "a predicted ABM as DICOM SEG and RTSTRUCT of its CT", _export_dicom
    )
    export.add_argument("--patient", required=True)
    export.add_argument("--abm-ct", required=True, help="abm_ct.nii.gz (the full CT grid)")
    export.add_argument("--ct", required=True, help="the patient's CT DICOM series folder")
    export.add_argument(
        "--prob", help="abm_prob.nii.gz: also write its probability SEG, abm_prob_seg.dcm"
    )
    export.add_argument("--qa", help="qa.json: its verdict goes into every series description")
    export.add_argument(
        "--out", required=True, help="folder for abm_seg.dcm, abm_rtstruct.dcm, abm_prob_seg.dcm"
    )
