"""Publishing a Hub-ready CommerceMM folder: the upload plan and the upload (the card is `commercemm_hf.model_card`).

* `plan_upload` checks that the folder is Hub-ready (config with `auto_map`, complete safetensors weights whose
  header covers the file, processor files, the remote-code files the configs name) and refuses pickle files (by
  extension, in any case, and by content) and links that leave the folder; it lists what would be uploaded.
* `publish` writes the card as the folder's `README.md` (unless the folder has a README.md that publish did not
  write: that one is kept and uploaded as it is), then either prints the plan (`dry_run=True`, no network) or
  creates the repository and uploads exactly the planned files with `huggingface_hub`.

The access token is only ever handed to `huggingface_hub` calls: it is never printed, logged, written to a file,
stored on an object, or shown in an error message.
"""

import fnmatch
import glob
import json
import logging
import math
import re
import socket
import struct
import zipfile
from pathlib import Path
from typing import NamedTuple

from .model_card import (  # noqa: F401  (MODEL_CARD_TEMPLATE and find_metrics: publish's names before the split)
    MODEL_CARD_TEMPLATE,
    PublishError,
    _card_file_text,
    _check_repo_id,
    _human,
    _load_config,
    _written_by_publish,
    find_metrics,
    render_model_card,
)


logger = logging.getLogger(__name__)

#: pickle-based formats (arbitrary code on load): a CommerceMM folder carries safetensors only. Matched in any case
#: and anywhere in a file name (`MODEL.BIN`, `x.pkl.bak`); files are also sniffed by content (`_pickle_kind`).
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib")
_PICKLE_EXTENSIONS = {pattern[2:] for pattern in PICKLE_PATTERNS}
#: never uploaded: hidden files and folders (.git, huggingface_hub's .cache), Python byte code, and Trainer's
#: checkpoint folders (resume state: optimizer, scheduler and RNG pickles; the model itself is the folder's top level)
SKIPPED_PATTERNS = (".*", "*/.*", "__pycache__/*", "*/__pycache__/*", "*.pyc", "checkpoint-*/*")
DEFAULT_COMMIT_MESSAGE = "Upload CommerceMM model (commercemm-hf)"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                         "tokenizer.model")
class UploadFile(NamedTuple):
    """One planned upload: `path` inside the repository (POSIX) and its size in bytes."""

    path: str
    size: int


# ------------------------------------------------------------------------------------------------------ the plan
def _walk(folder: Path) -> list[str]:
    """The folder's files (not hidden ones); a link whose target lies outside the folder is refused: the upload
    would send the target's content, which the folder's owner may never have meant to publish."""
    files, outside, root = [], [], folder.resolve()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if any(fnmatch.fnmatchcase(relative, pattern) for pattern in SKIPPED_PATTERNS):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            outside.append(f"{relative} -> {path.resolve()}")
        elif path.is_file():
            files.append(relative)
    if outside:
        raise PublishError(f"{folder} holds links that leave the folder: {outside}. Their targets would be uploaded; "
                           "copy the files you mean to publish into the folder instead.")
    return files


def _pickle_kind(path: Path, relative: str) -> str | None:
    """Why a file is pickle-based (arbitrary code on load), or None: a pickle extension anywhere in its name, in any
    case; pickle protocol 2+ bytes; a zip (torch.save) holding a pickle; a NumPy array of Python objects."""
    extensions = set(relative.lower().rsplit("/", 1)[-1].split(".")[1:])
    if extensions & _PICKLE_EXTENSIONS:
        return "pickle extension"
    with open(path, "rb") as handle:
        head = handle.read(512)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle content"
    if head.startswith(b"\x93NUMPY") and re.search(rb"'descr':\s*'\|O'", head):
        return "NumPy object array (pickled)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if any(name.lower().endswith((".pkl", ".pickle")) for name in names):
                    return "zip holding a pickle (torch.save)"
                for name in names:
                    if name.lower().endswith(".npy"):
                        with archive.open(name) as member:
                            header = member.read(512)
                        if re.search(rb"'descr':\s*'\|O'", header):
                            return "NumPy object array (pickled) in a zip"
        except (zipfile.BadZipFile, OSError):
            return None
    return None


def _check_safetensors(path: Path, name: str) -> str | None:
    """What is wrong with a safetensors file, or None: the 8-byte header length, a JSON header, and tensors whose
    byte ranges match their shapes and dtypes and together cover the rest of the file exactly (a truncated or
    padded copy is refused)."""
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
             "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}  # bytes per element
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            if size < 8:
                return f"{name} is {size} bytes: too short for a safetensors header"
            (length,) = struct.unpack("<Q", handle.read(8))
            if length == 0 or 8 + length > size:
                return f"{name}: its header claims {length} bytes, but the file has {size} (truncated?)"
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as error:
        return f"{name}: unreadable safetensors header ({error})"
    if not isinstance(header, dict):
        return f"{name}: the safetensors header is not a JSON object"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            count = math.prod(entry["shape"])
        except (KeyError, TypeError, ValueError):
            return f"{name}: the header entry of {key!r} is malformed"
        expected = count * sizes[entry["dtype"]] if entry.get("dtype") in sizes else stop - start  # sub-byte: as is
        if not 0 <= start <= stop or stop - start != expected:
            return f"{name}: tensor {key!r} takes {stop - start} bytes, its shape and dtype need {expected}"
        end = max(end, stop)
    if 8 + length + end != size:
        return (f"{name}: the tensors end at byte {8 + length + end}, the file has {size} bytes "
                f"({'truncated' if size < 8 + length + end else 'trailing bytes'})")
    return None


def _code_modules(config_values) -> set[str]:
    """Module names of the remote code that `auto_map` / `custom_pipelines` entries refer to (this repository's)."""
    modules = set()

    def add(reference):
        if isinstance(reference, (list, tuple)):
            for item in reference:
                add(item)
        elif isinstance(reference, str) and "--" not in reference:  # "other/repo--module.Class" lives elsewhere
            modules.add(reference.rsplit(".", 1)[0])

    def visit(values):
        if isinstance(values, dict):
            for key, value in values.items():
                if key == "auto_map" and isinstance(value, dict):
                    add(list(value.values()))
                elif key == "custom_pipelines" and isinstance(value, dict):
                    add([entry.get("impl") for entry in value.values() if isinstance(entry, dict)])
                else:
                    visit(value)

    visit(config_values)
    return modules


def _code_files(folder: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """The `.py` files the modules need (following single-dot relative imports, as transformers does) and the
    missing ones."""
    from transformers.dynamic_module_utils import get_relative_imports

    needed, missing, todo = set(), set(), [f"{module}.py" for module in modules]
    while todo:
        name = todo.pop()
        if name in needed or name in missing:
            continue
        if not (folder / name).is_file():
            missing.add(name)
            continue
        needed.add(name)
        todo += [f"{module}.py" for module in get_relative_imports(str(folder / name))]
    return needed, missing


def plan_upload(folder) -> list[UploadFile]:
    """Check that `folder` is Hub-ready and list the files an upload sends (path in the repository, size in bytes).

    Hub-ready means: `config.json` with `auto_map`; safetensors weights (`model.safetensors`, or the shards of
    `model.safetensors.index.json`); processor and tokenizer files; every remote-code `.py` file that the configs'
    `auto_map` / `custom_pipelines` name (and their relative imports). Pickle-format files (`*.bin`, `*.pt`, ...)
    are refused. Hidden files and `__pycache__` are never planned. Raises `PublishError` naming every problem.

    Example:
        >>> for file in plan_upload("outputs/demo/commercemm-tiny-demo"):  # doctest: +SKIP
        ...     print(file.path, file.size)
        config.json 3710
        ...
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder.")
    files = _walk(folder)
    present = set(files)
    pickles = [f"{name} ({kind})" for name in files if (kind := _pickle_kind(folder / name, name))]
    if pickles:
        raise PublishError(
            f"{folder} holds pickle-format files {pickles}: loading them can run arbitrary code, so CommerceMM "
            "folders carry safetensors only. Delete them (or convert weights with save_pretrained(..., "
            "safe_serialization=True)) and publish again.")
    config = _load_config(folder)
    problems = []
    if not config.get("auto_map"):
        problems.append("config.json has no auto_map, so AutoModel cannot load it with trust_remote_code: save it "
                        "with commercemm_hf.hub.save_hub_folder (which registers the Auto classes)")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        problems += [f"weights shard {shard} (named in model.safetensors.index.json) is missing"
                     for shard in shards if shard not in present]
    elif "model.safetensors" not in present:
        problems.append("model.safetensors is missing (safetensors weights are required)")
    problems += [problem for name in files if name.lower().endswith(".safetensors")
                 if (problem := _check_safetensors(folder / name, name))]
    if not any(name in present for name in PROCESSOR_FILES):
        problems.append("processor_config.json (or preprocessor_config.json) is missing: save the processor too")
    if "tokenizer_config.json" not in present or not any(name in present for name in TOKENIZER_VOCAB_FILES):
        problems.append("tokenizer files are missing (tokenizer_config.json and tokenizer.json or a vocabulary)")
    configs = [config] + [json.loads((folder / name).read_text(encoding="utf-8"))
                          for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
                          if name in present]
    _, missing_code = _code_files(folder, set().union(*(_code_modules(values) for values in configs)))
    problems += [f"remote-code file {name} (named by auto_map / custom_pipelines or imported by them) is missing"
                 for name in sorted(missing_code)]
    if problems:
        raise PublishError(f"{folder} is not Hub-ready:\n  - " + "\n  - ".join(problems))
    return [UploadFile(name, (folder / name).stat().st_size) for name in files]


def format_plan(plan: list[UploadFile]) -> str:
    """The plan as a table of files and sizes, with the total.

    Example:
        >>> print(format_plan([UploadFile("config.json", 3710), UploadFile("model.safetensors", 304900)]))
          config.json              3.7 KB
          model.safetensors      304.9 KB
          2 files, 308.6 KB
    """
    width = max([len(file.path) for file in plan] + [20])
    lines = [f"  {file.path:{width}s} {_size(file.size):>10s}" for file in plan]
    lines.append(f"  {len(plan)} files, {_size(sum(file.size for file in plan))}")
    return "\n".join(lines)


def _size(size: int) -> str:
    return _human(size, (" B", " KB", " MB", " GB")) if size >= 1000 else f"{size} B"


# ------------------------------------------------------------------------------------------------------ publishing
def _resolve_token(token: str | None) -> str:
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise PublishError("No Hugging Face token found: pass one (commercemm publish --token-env VAR), set HF_TOKEN, "
                           "or log in with `hf auth login`. Use --dry-run to see the plan without uploading.")
    return token


def _redacted(error: Exception, token: str) -> Exception:
    """`error`, or a copy of its message with the token removed when the message contains it."""
    message = str(error)
    if token in message:
        return RuntimeError(f"{type(error).__name__}: {message.replace(token, '***')}")
    return error


def _network_errors() -> tuple[type, ...]:
    """Exceptions that mean the Hub could not be reached (offline, DNS, refused, timed out), from the standard
    library and huggingface_hub's HTTP clients."""
    errors = [ConnectionError, TimeoutError, socket.gaierror]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def publish(folder, repo_id: str, token: str | None = None, private: bool = False, dry_run: bool = False,
            commit_message: str | None = None, metrics=None,
            training_data: str | None = None) -> dict:
    """Write the model card into `folder` as `README.md` and upload the folder to the Hub repository `repo_id`.

    A README.md that publish did not write (or that was edited after) is never overwritten, also not in a dry run:
    it is kept and uploaded as it is. An unreachable Hub is a `PublishError` saying so.

    With `dry_run=True` nothing touches the network: the plan (files and sizes) is printed and returned. Otherwise
    the token is `token`, else `huggingface_hub.get_token()` (the `HF_TOKEN` variable, then the stored login); the
    repository is created if needed (`HfApi.create_repo(exist_ok=True)`) and `HfApi.upload_folder` sends exactly the
    planned files. The token is never printed, logged or written anywhere.

    Returns `{"repo_id", "files": [UploadFile, ...], "dry_run", "url"}` (`url`: the commit URL after an upload).

    Example:
        >>> publish("outputs/demo/commercemm-tiny-demo", "my-org/commercemm-tiny", dry_run=True)  # doctest: +SKIP
        Dry run: would upload to https://huggingface.co/my-org/commercemm-tiny
          README.md ...
    """
    folder = Path(folder)
    _check_repo_id(repo_id)
    plan_upload(folder)  # refuse a folder that is not Hub-ready before writing anything into it
    if not dry_run:
        token = _resolve_token(token)
    card = render_model_card(folder, repo_id, metrics, training_data=training_data)
    readme = folder / "README.md"
    if readme.exists() and not _written_by_publish(readme):
        print(f"Keeping {readme}: publish did not write it (or it was edited since), so it is uploaded as it is. "
              "Delete it to get the generated model card.")
    else:
        readme.write_text(_card_file_text(card), encoding="utf-8")
    plan = plan_upload(folder)
    url = f"https://huggingface.co/{repo_id}"
    result = {"repo_id": repo_id, "files": plan, "dry_run": dry_run, "url": None}
    checkpoints = sorted(path.name for path in folder.glob("checkpoint-*") if path.is_dir())
    if checkpoints:
        print(f"Not uploaded: {', '.join(checkpoints)} (Trainer's resume state; the model is the folder itself).")
    if dry_run:
        print(f"Dry run: would upload to {url}{' (private)' if private else ''}\n{format_plan(plan)}")
        return result

    from huggingface_hub import HfApi

    print(f"Uploading to {url}{' (private)' if private else ''}:\n{format_plan(plan)}", flush=True)
    api = HfApi()  # the token goes to each call, never onto an object that could be printed
    try:
        api.create_repo(repo_id, token=token, private=True if private else None, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", token=token,
            commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
            allow_patterns=[glob.escape(file.path) for file in plan],
            ignore_patterns=list(PICKLE_PATTERNS + SKIPPED_PATTERNS),
        )
    except _network_errors() as error:
        message = str(_redacted(error, token))
        raise PublishError(f"Could not reach the Hugging Face Hub to upload to {repo_id} ({type(error).__name__}: "
                           f"{message}). Check the network connection (and that HF_HUB_OFFLINE is not set); "
                           "use --dry-run to see the plan offline.") from None
    except Exception as error:
        safe = _redacted(error, token)
        if safe is error:
            raise
        raise safe from None
    result["url"] = getattr(commit, "commit_url", None) or url
    print(f"Uploaded {len(plan)} files: {result['url']}")
    return result


__all__ = ["MODEL_CARD_TEMPLATE", "PublishError", "UploadFile", "find_metrics", "format_plan", "plan_upload",
           "publish", "render_model_card"]
