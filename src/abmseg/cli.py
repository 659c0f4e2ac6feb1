"""`abmseg` command line: every pipeline stage runs on its own, outside Snakemake."""

from __future__ import annotations

import argparse
import sys

from abmseg import __version__
from abmseg.cli_stages import (
    add_model_commands,
    add_preprocessing_commands,
    add_result_commands,
)
from abmseg.errors import UserError
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


def _provenance(args: argparse.Namespace) -> None:
    import json

    from abmseg.provenance.lineage import trace_file
    from abmseg.provenance.render import render_tree

    lineage = trace_file(args.file)
    print(json.dumps(lineage.to_dict(), indent=2) if args.json else render_tree(lineage))


def _audit(args: argparse.Namespace) -> int:
    from abmseg.provenance.audit import audit

    raw_root = None
    if args.raw_root:
        old, sep, new = args.raw_root.partition("=")
        if not sep or not old or not new:
            print("abmseg: error: --raw-root takes OLD=NEW (two folders)", file=sys.stderr)
            return 2
        raw_root = (old, new)
    report = audit(args.paths, raw_root=raw_root)
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


def _export_crate(args: argparse.Namespace) -> int:
    from abmseg.provenance.crate import export_crate
    from abmseg.provenance.crate_graph import person_agent

    if len(args.paths) > 2:
        print("abmseg: error: export-crate takes [RESULTS] OUT", file=sys.stderr)
        return 2
    results, out = args.paths if len(args.paths) == 2 else ("results", args.paths[0])
    if args.agent_id and not args.agent:
        print("abmseg: error: --agent-id needs --agent (the person's name)", file=sys.stderr)
        return 2
    agent = person_agent(args.agent, args.agent_id) if args.agent else None
    summary = export_crate(results, out, workflow=args.workflow, agent=agent, name=args.name)
    print(
        f"wrote {summary.out}: {summary.jobs} jobs of {summary.rules} rules, {summary.results} "
        f"result files ({summary.payload_bytes / 2**20:.1f} MiB, each checked against its "
        f"recorded SHA-256), {summary.raw_inputs} raw inputs described (not copied)"
    )
    return 0


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


def add_synth_commands(sub: argparse._SubParsersAction) -> None:
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


def add_audit_commands(sub: argparse._SubParsersAction) -> None:
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
    audit.add_argument(
        "--raw-root",
        metavar="OLD=NEW",
        help="raw inputs recorded under folder OLD are checked under NEW instead (raw data kept "
        "outside the work folder and moved or copied with it); raw data inside the work folder "
        "is recorded relative to it and needs no option",
    )
    audit.set_defaults(func=_audit)

    export = sub.add_parser("export-prov", help="write the run as W3C PROV-JSON")
    export.add_argument("results", help="the results/ folder (or a folder in it)")
    export.add_argument("-o", "--out", default="run.prov.json", help="PROV-JSON file to write")
    export.set_defaults(func=_export_prov)

    crate = sub.add_parser(
        "export-crate",
        help="write the run as a Workflow Run RO-Crate (Provenance Run Crate profile)",
        description="Write a finished run as a Workflow Run RO-Crate: the workflow source, every "
        "result file (checked against its record) and ro-crate-metadata.json with one "
        "CreateAction per job. Raw inputs are described with their SHA-256, not copied.",
    )
    crate.add_argument(
        "paths",
        nargs="+",
        metavar="[RESULTS] OUT",
        help="the results/ folder (default: results) and the crate to write: a new folder, or a "
        "file ending in .zip",
    )
    crate.add_argument(
        "--workflow",
        help="the abmseg checkout that ran the pipeline (default: the one this abmseg runs from)",
    )
    crate.add_argument("--agent", help="name of the person who ran the workflow")
    crate.add_argument("--agent-id", help="their identifier, e.g. an ORCID URL")
    crate.add_argument("--name", help="the crate's name (default: 'abmseg run in <folder>')")
    crate.set_defaults(func=_export_crate)

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abmseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"abmseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_synth_commands(sub)
    add_preprocessing_commands(sub)
    add_model_commands(sub)
    add_result_commands(sub)
    add_audit_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its own parser: abmseg.train.cli (also run by torchrun)
        from abmseg.train.cli import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except (UserError, ProvenanceError) as error:
        print(f"abmseg: error: {error}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
