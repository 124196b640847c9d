"""Checks that turn bad model inputs and bad checkpoints into errors naming the problem, instead of an error deep
inside torch or a model that silently runs with random, cast or non-finite weights.

This file travels as Hugging Face remote code with `modeling_commercemm.py`: it imports only torch and safetensors.
"""

import torch
from safetensors import safe_open


# --------------------------------------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------------------------------------


def check_integer_ids(name: str, ids, like: torch.Tensor | None = None) -> None:
    """`ids` must be a 2-D integer tensor with at least one row and one column (and `like`'s shape when given)."""
    if ids is None:
        raise ValueError(f"{name} is None: give token ids of shape (batch, length), e.g. from CommerceMMProcessor.")
    if not isinstance(ids, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor of token ids, got {type(ids).__name__}.")
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (batch, length), got shape {tuple(ids.shape)}.")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids (torch.long), got dtype {ids.dtype}.")
    if like is not None and ids.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(ids.shape)} does not match input_ids {tuple(like.shape)}.")
    if ids.shape[0] == 0:
        raise ValueError(f"{name} is a batch of 0 texts (shape {tuple(ids.shape)}); give at least one.")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} holds texts of 0 tokens (shape {tuple(ids.shape)}); every text needs at least its "
                         "first ([CLS]) token, whose final state is the text embedding.")


def check_text_inputs(input_ids, token_type_ids, type_vocab_size: int) -> None:
    """Refuse text inputs that torch would reject without naming them: None, a float tensor, an empty batch or
    text, token type ids of another shape or outside `0..type_vocab_size - 1`.

    Example:
        >>> import torch
        >>> try:
        ...     check_text_inputs(torch.ones(1, 3), None, type_vocab_size=2)
        ... except ValueError as error:
        ...     print(error)
        input_ids must hold integer ids (torch.long), got dtype torch.float32.
    """
    check_integer_ids("input_ids", input_ids)
    if token_type_ids is None:
        return
    check_integer_ids("token_type_ids", token_type_ids, like=input_ids)
    low, high = int(token_type_ids.min()), int(token_type_ids.max())
    if low < 0 or high >= max(type_vocab_size, 1):
        allowed = f"0..{type_vocab_size - 1}" if type_vocab_size > 0 else "0 (this model has no token types)"
        raise ValueError(f"token_type_ids must lie in {allowed}, got values in {low}..{high}.")


def check_pixel_batch(pixel_values: torch.Tensor, num_channels: int = 3) -> None:
    """`pixel_values` must be a float tensor `(batch >= 1, num_channels, height, width)` of finite values: a PIL
    image or raw uint8 pixels (not normalised by the image processor) would otherwise fail deep in torch or embed
    silently wrong, and one NaN pixel makes the whole embedding NaN.

    Example:
        >>> import torch
        >>> try:
        ...     check_pixel_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
        ... except ValueError as error:
        ...     print(error)
        pixel_values must be floating point (normalised by the CommerceMMProcessor), got dtype torch.uint8.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"pixel_values must be a torch tensor (batch, {num_channels}, height, width), got "
                         f"{type(pixel_values).__name__}: turn images into pixel_values with the CommerceMMProcessor.")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(f"pixel_values must be (batch, {num_channels}, height, width), "
                         f"got shape {tuple(pixel_values.shape)}.")
    if not pixel_values.is_floating_point():
        raise ValueError("pixel_values must be floating point (normalised by the CommerceMMProcessor), got dtype "
                         f"{pixel_values.dtype}.")
    if pixel_values.shape[0] == 0:
        raise ValueError(f"pixel_values is a batch of 0 images (shape {tuple(pixel_values.shape)}); give at least one.")
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return  # the value check below is data-dependent control flow, which export and compile cannot trace
    if not torch.isfinite(pixel_values).all():
        bad = sorted({int(row) for row in (~torch.isfinite(pixel_values)).flatten(1).any(1).nonzero().flatten()})
        raise ValueError(f"pixel_values of images {bad[:10]} hold NaN or infinite values.")


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def _is_integer_dtype(dtype) -> bool:
    if isinstance(dtype, str):  # a safetensors header's dtype: "F32", "BF16", "I64", "U8", "BOOL", ...
        return dtype.startswith(("I", "U")) or dtype == "BOOL"
    return not (dtype.is_floating_point or dtype.is_complex)


def check_checkpoint_dtypes(model: torch.nn.Module, state_dict: dict | None, checkpoint_files: list | None) -> None:
    """Refuse a checkpoint tensor whose kind (integer/bool vs floating) differs from the model's: transformers would
    cast it silently (an int64 `[1, 2]` becomes float weights `[1., 2.]`)."""
    prefix = f"{model.base_model_prefix}."
    expected = {name: tensor.dtype for name, tensor in model.state_dict().items()}

    def model_dtype(key: str):
        for name in (key, key.removeprefix(prefix), prefix + key):
            if name in expected:
                return expected[name]
        return None

    found = []
    if state_dict is not None:
        found = [(key, tensor.dtype, "the given state_dict") for key, tensor in state_dict.items()
                 if isinstance(tensor, torch.Tensor)]
    for file in checkpoint_files or []:
        if str(file).endswith(".safetensors"):
            with safe_open(file, framework="pt") as handle:
                found += [(key, handle.get_slice(key).get_dtype(), file) for key in handle.keys()]
    for key, dtype, where in found:
        wanted = model_dtype(key)
        if wanted is not None and _is_integer_dtype(dtype) != _is_integer_dtype(wanted):
            raise ValueError(f"The checkpoint tensor {key!r} in {where} has dtype {dtype}, but the model's is "
                             f"{wanted}: refusing to cast it (the checkpoint does not hold this model's weights).")


def check_loaded_weights(model: torch.nn.Module, loading_info: dict, allow_partial_load: bool, source) -> None:
    """After `from_pretrained`: refuse missing or unexpected weights of the CommerceMM backbone, a head loaded in
    part, and any non-finite weight. A head the checkpoint lacks entirely (a base checkpoint loaded into a task
    model) is freshly initialised as usual, and heads of other architectures in the checkpoint are ignored, as in
    transformers; `allow_partial_load=True` accepts any missing or unexpected key."""
    prefix = f"{model.base_model_prefix}."
    has_backbone_prefix = hasattr(model, model.base_model_prefix)
    backbone = getattr(model, model.base_model_prefix, model)
    backbone_names = {name for name, _ in backbone.named_children()} | {name for name, _ in
                                                                          backbone.named_parameters(recurse=False)}

    def in_backbone(key: str) -> bool:
        if has_backbone_prefix and not key.startswith(prefix):
            return False
        return key.removeprefix(prefix).split(".", 1)[0] in backbone_names

    problems = []
    if not allow_partial_load:
        missing = set(loading_info.get("missing_keys") or ())
        backbone_missing = sorted(key for key in missing if in_backbone(key))
        if backbone_missing:
            problems.append(f"{len(backbone_missing)} backbone weights are missing: {backbone_missing[:5]}")
        # a weight tied to another (the MLM decoder to the word embeddings) is no sign that its head was saved
        state = model.state_dict()
        owners = {}
        for key, tensor in state.items():
            owners.setdefault(tensor.data_ptr(), []).append(key)
        tied = {key for keys in owners.values() if len(keys) > 1 for key in keys}
        loaded = [key for key in state if key not in missing and key not in tied]
        for head in sorted({key.split(".", 1)[0] for key in missing if not in_backbone(key)}):
            if any(key.split(".", 1)[0] == head for key in loaded):
                part = sorted(key for key in missing if key.split(".", 1)[0] == head)
                problems.append(f"the head {head!r} is only partly in the checkpoint; missing: {part[:5]}")
        unexpected = sorted(key for key in loading_info.get("unexpected_keys") or () if in_backbone(prefix + key)
                            or in_backbone(key))
        if unexpected:
            problems.append(f"{len(unexpected)} backbone weights of the checkpoint have no place in this model "
                            f"(another architecture or depth?): {unexpected[:5]}")
    non_finite = [name for name, tensor in model.state_dict().items()
                  if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all()]
    if non_finite:
        problems.append(f"{len(non_finite)} weights hold NaN or infinite values: {non_finite[:5]}")
    if problems:
        hint = "" if allow_partial_load else " Pass allow_partial_load=True to load a partial checkpoint anyway."
        raise ValueError(f"Refusing the checkpoint {str(source)!r}: " + "; ".join(problems) + "." +
                         (hint if not non_finite or len(problems) > 1 else ""))


__all__ = ["check_checkpoint_dtypes", "check_integer_ids", "check_loaded_weights", "check_pixel_batch",
           "check_text_inputs"]
