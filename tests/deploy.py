"""Deploy this repository as a Snakemake module the way a user does, into a scratch folder.

`snakedeploy deploy-workflow` copies the repository's config/ and profiles/ and writes a
workflow/Snakefile holding a `module` stanza. It is given a release tree (the files git tracks,
plus untracked files that are not ignored: no .venv, results or demo data), as a clone would
have. snakedeploy names a local repository's Snakefile by a path relative to that repository,
which Snakemake would resolve against the deployment instead; the stanza gets the absolute path,
as README's "plain module" way writes it. Everything else is snakedeploy's own output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEDEPLOY = Path(sys.executable).parent / "snakedeploy"


def release_tree(dest: Path) -> Path:
    """A copy of the repository's files as a fresh clone holds them (links kept as links)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not (source.is_file() or source.is_symlink()):
            continue  # deleted in the working tree, not yet in git
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def deploy(release: Path, dest: Path) -> Path:
    """Run snakedeploy into ``dest``; return the deployment's workflow/Snakefile."""
    subprocess.run(
        [str(SNAKEDEPLOY), "deploy-workflow", str(release), str(dest), "--name", "abmseg"]
        + ["--branch", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    stanza = re.compile(r'(snakefile:\s*\n\s*)"workflow/Snakefile"')
    if not stanza.search(text):
        raise AssertionError(f"snakedeploy wrote an unexpected module stanza:\n{text}")
    snakefile.write_text(stanza.sub(rf'\1"{release / "workflow" / "Snakefile"}"', text))
    return snakefile
