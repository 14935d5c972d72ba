"""``meddx deidentify IN OUT``: de-identified copies of DICOM, FHIR JSON and HL7 v2 files.

Prints a JSON summary that holds no original identifier (nor the date shifts,
which would undo the shifted dates): files written, files skipped or failed with
the reason, and how many files each patient pseudonym has.
"""

from __future__ import annotations

from pathlib import Path

import typer


def deidentify(
    input: Path = typer.Argument(..., help="A file, or a folder tree, of DICOM / FHIR JSON / HL7 v2 files."),
    output: Path = typer.Argument(..., help="Output folder (the tree is mirrored), or the output file."),
    key_file: Path = typer.Option(
        None, "--key-file",
        help="Pseudonym key file (created, mode 0600, when missing). Default: $MEDDX_PSEUDONYM_KEY, "
             "else <MEDDX_HOME>/keys/pseudonym.key. Never inside OUTPUT."),
    allow_burned_in: bool = typer.Option(
        False, "--allow-burned-in", help="De-identify images flagged BurnedInAnnotation=YES (text in the pixels)."),
) -> None:
    """De-identify files with the DICOM Basic Profile (dates shifted per patient, UIDs remapped).

    The same key always gives the same pseudonyms, UIDs and date shifts, so
    later batches link up with earlier ones. Exit code 1 if any file failed.
    A DICOM whose Deflated data set would inflate beyond the decompression
    limits (MEDDX_MAX_DECODED_MB, MEDDX_FREE_DECODED_MB, MEDDX_MAX_EXPANSION_RATIO)
    is listed as failed without being inflated.
    """
    import json

    from meddx.exceptions import DataFileNotFoundError
    from meddx.privacy.deid import deidentify_path
    from meddx.privacy.pseudonyms import PseudonymKey

    if not input.exists():  # before a key file is created for nothing
        raise DataFileNotFoundError("no such file or folder", path=input)
    key = PseudonymKey.load(key_file, forbid_inside=[output])
    summary = deidentify_path(input, output, key, allow_burned_in=allow_burned_in)
    printed = {
        "output": str(output),
        "files_written": len(summary["written"]),
        "written": summary["written"],
        "skipped": summary["skipped"],
        "failed": summary["failed"],
        "patients": summary["patients"],
        "counts": summary["counts"],
        "key": {"fingerprint": summary["key"], "source": key.source, "created": key.created},
    }
    typer.echo(json.dumps(printed, indent=2))
    if summary["failed"]:
        raise typer.Exit(code=1)
