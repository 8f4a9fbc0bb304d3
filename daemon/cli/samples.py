"""The image files ``classes add`` and ``train --data`` send, checked before anything is sent.

Every file is checked up front, so a typo in the last of 200 names fails the command
before the daemon stored a single sample (a failure part way would cancel the call
anyway, but only after the daemon embedded what came before).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class InputError(ValueError):
    """A file or folder named on the command line that cannot be used; the message names it."""


def image_files(names: Sequence[str]) -> List[Path]:
    """``names`` as paths, each an existing, readable file.

    Raises:
        InputError: the first name that is missing, not a file or not readable.
    """
    paths = []
    for name in names:
        path = Path(name)
        if not path.exists():
            raise InputError(f"no such image file: {name}")
        if not path.is_file():
            raise InputError(f"not an image file (a folder?): {name}")
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read image file: {name} (permission denied)")
        paths.append(path)
    return paths


def labeled_folder(root: str) -> Tuple[List[Tuple[str, Path]], List[str]]:
    """``(label, image)`` pairs from ``root``'s folders (label = folder name), and the folders skipped.

    Images are the files ending .jpg, .jpeg, .png or .bmp (any case) directly in a label
    folder; hidden files and folders are ignored, and so are files directly in ``root``.
    Folders are taken in name order, images in name order, so a run is repeatable.

    Raises:
        InputError: ``root`` is not a folder, or no folder in it holds an image.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"--from {root}: no such folder" if not folder.exists() else f"--from {root}: not a folder")
    pairs: List[Tuple[str, Path]] = []
    skipped: List[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in sub.iterdir()
                        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            pairs.extend((sub.name, image) for image in images)
        else:
            skipped.append(sub.name)
    if not pairs:
        wanted = "one folder per label, named after it, holding " + " ".join(IMAGE_SUFFIXES) + " files"
        found = f"folders without images: {', '.join(skipped)}" if skipped else "no folders"
        raise InputError(f"--from {root}: no image folders in it ({found}); expected {wanted}")
    return pairs, skipped
