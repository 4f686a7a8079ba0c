"""GGUF export with llama.cpp's own converter, for llama.cpp, Ollama and LM Studio.

The converter (``convert_hf_to_gguf.py``, its ``conversion`` package and its bundled ``gguf-py``)
is pure Python and ships inside the llama-cpp-python sdist; it is fetched by pinned version and
sha256 through pip, and only those files are extracted: nothing is compiled. It runs in its own
process, on the merged model folder, so its bundled gguf-py never meets the installed one.

The variant's folder holds ``model.gguf``, the tokenizer and a ``Modelfile`` for Ollama; tunelab
evaluates it loaded back through transformers' GGUF loader (dequantized to float32, so its
in-process speed is fp32's: llama.cpp runs the quantized blocks natively).
"""

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io.pip import download_distribution

CONVERTER_PACKAGE = ("llama-cpp-python", "0.3.36", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
"""The sdist that ships llama.cpp (vendor/llama.cpp), with its converter: package, version, sha256."""
CONVERTER_ROOT = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
GGUF_FILE = "model.gguf"


def fetch_converter(into: Path) -> Path:
    """Extract the converter's files from the pinned sdist into ``into``; the script's path."""
    package, version, sha256 = CONVERTER_PACKAGE
    archive = download_distribution("pip_sdist", package, version, sha256, into,
                                    key="tunelab.deploy.gguf.CONVERTER_PACKAGE")
    wanted = tuple(CONVERTER_ROOT + part for part in CONVERTER_PARTS)
    with tarfile.open(archive) as bundle:
        members = [m for m in bundle.getmembers() if m.name.startswith(wanted)]
        bundle.extractall(into, members=members, filter="data")
    return into / CONVERTER_ROOT / CONVERTER_PARTS[0]


def convert(model_dir: Path, gguf_path: Path, outtype: str) -> None:
    """llama.cpp's converter on an HF model folder (weights, config and tokenizer)."""
    with tempfile.TemporaryDirectory() as work:
        script = fetch_converter(Path(work))
        result = subprocess.run([sys.executable, str(script), str(model_dir), "--outfile", str(gguf_path),
                                 "--outtype", outtype], capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunelabError(f"llama.cpp's converter could not write {outtype} GGUF of {model_dir}: {detail}")


def modelfile(eos_token: str) -> str:
    """Ollama's recipe: the file, and where a reply ends. Ollama takes the chat template from the
    GGUF's own tokenizer.chat_template, which the converter writes."""
    return f'# ollama create tunelab -f Modelfile && ollama run tunelab\nFROM ./{GGUF_FILE}\nPARAMETER stop "{eos_token}"\n'


def gguf_export(outtype: str):
    """A deployment method's ``make``: the merged folder converted to ``outtype`` (q8_0, f16, ...)."""

    def make(merged_dir: Path, target: Path, recipe: dict) -> None:
        target.mkdir(parents=True)
        convert(merged_dir, target / GGUF_FILE, outtype)
        eos = json.loads((merged_dir / "tokenizer_config.json").read_text()).get("eos_token", "</s>")
        (target / "Modelfile").write_text(modelfile(eos if isinstance(eos, str) else eos.get("content", "</s>")))

    return make
