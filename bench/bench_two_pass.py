"""Target 2: the two-pass 14-task step against the same 14 losses as 14 separate forward/backward passes.

Two-pass (what `CommerceMMPretrainingTrainer.training_step` runs): the image-text pass (5 losses) + backward, the
Omni pass (9 losses) + backward, one AdamW step. Each pass runs every encoder once on a stacked batch and reuses
its outputs across the tasks of the pass.

14-pass baselines (the same inputs, the same 14 losses, one backward per loss, then one AdamW step):
* `minimal` (the target's baseline): each pass runs only the encoders its own loss needs, written here with the
  model's public pieces (`encode_text`, `encode_image`, `multimodal_model`, the projections and heads,
  `contrastive_loss`): e.g. `omni_text_to_image` runs the text encoder on the text sources and the image encoder
  on the product images only; MLM runs the masked text, the masked image and the multimodal encoder on them only; the
  MIM teacher runs without gradient. ITC and ITM use the model's own task selection (weight 0 for every other loss
  in `config.loss_weights`), which already runs only what they need.
* `task_selection`: the model's own task selection for all 14 (one forward per task with only that task's
  weight non-zero). The Omni pass then still runs all three encoders for each Omni loss, so this baseline is
  slower than `minimal` and reported for information.

Before timing, the per-task losses of both 14-pass variants are checked against the two-pass losses (eval mode,
same ITM negatives).

Usage: python bench/bench_two_pass.py [--threads 1 2] [--repeats 10] [--quick]
"""

import sys

import common
from common import torch
from torch.nn import functional as F

from commercemm_hf.modeling.configuration_commercemm import IMAGE_TEXT_TASKS, OMNI_TASKS, PRETRAINING_TASKS
from commercemm_hf.modeling.modeling_commercemm_pretraining import contrastive_loss


NAME = "two_pass"
TITLE = "Target 2 - two-pass 14-task step vs 14 separate forward/backward passes (matched architecture, batch 8)"


# ----------------------------------------------------------------------------------------------------------------
# The 14-pass baselines
# ----------------------------------------------------------------------------------------------------------------


def _only(model, task):
    """Make the model compute only `task` (its public task selection: loss weight 0 for the others)."""
    model.config.loss_weights = {name: (1.0 if name == task else 0.0) for name in PRETRAINING_TASKS}


def task_selection_losses(model, it_batch, om_batch, backward=True):
    """14 forwards of `CommerceMMForPreTraining`, each with one task selected; one backward each."""
    saved = dict(model.config.loss_weights)
    losses = {}
    try:
        for task in PRETRAINING_TASKS:
            _only(model, task)
            if task in IMAGE_TEXT_TASKS:
                output = model(**it_batch, generator=torch.Generator().manual_seed(0))
            else:
                output = model(**om_batch)
            loss = output.losses[task]
            if backward:
                loss.backward()
            losses[task] = loss.detach()
    finally:
        model.config.loss_weights = saved
    return losses


def _masked_pair(model, batch, with_teacher):
    """Multimodal [CLS]/tokens of the masked pairs (masked text + masked image), and the clean image's hidden states for
    the MIM teacher (no gradient: the target needs none) when asked."""
    cm = model.commercemm
    text = cm.encode_text(batch["mlm_input_ids"], batch["attention_mask"])
    image = cm.encode_image(batch["pixel_values"], batch["bool_masked_pos"])
    fused = cm.multimodal_model(image.last_hidden_state, text.last_hidden_state, batch["attention_mask"])
    clean_image = None
    if with_teacher:
        with torch.no_grad():
            clean_image = cm.encode_image(batch["pixel_values"]).last_hidden_state
    return fused.last_hidden_state, image.last_hidden_state.shape[1], clean_image


def _mlm_loss(model, batch):
    tokens, image_tokens, _ = _masked_pair(model, batch, with_teacher=False)
    text_tokens = tokens[:, 1 + image_tokens:]
    positions = batch["mlm_labels"].ne(-100)
    return F.cross_entropy(model.mlm_head(text_tokens[positions]).float(), batch["mlm_labels"][positions])


def _mim_loss(model, batch, task):
    """MIM-kl or MIM-fr alone: this pass's own encoder calls, then the model's MIM heads and targets (teacher,
    centring and its update) on them."""
    tokens, _, clean_image = _masked_pair(model, batch, with_teacher=True)
    losses, _ = model._mim_losses(tokens[:, 0], batch["pixel_values"], clean_image, {task})
    return losses[task]


def _omni_loss(model, batch, source_kind, target_kind):
    """One Omni loss, running only the encoders it needs: the source kind's encoders on the sources that have it,
    the target kind's encoders on the products; one call per encoder (texts, images, fused pairs stacked)."""
    cm = model.commercemm
    text_rows, image_rows = batch["source_text_rows"].tolist(), batch["source_image_rows"].tolist()
    num_products = batch["product_input_ids"].shape[0]
    post_rows = sorted(set(text_rows) & set(image_rows))
    source_rows = {"text": text_rows, "image": image_rows, "multimodal": post_rows}[source_kind]
    post_text_index = torch.tensor([text_rows.index(r) for r in post_rows], dtype=torch.long)
    post_image_index = torch.tensor([image_rows.index(r) for r in post_rows], dtype=torch.long)

    # what each encoder must see: ("product" | "source", which rows of that input)
    texts, masks, images = [], [], []
    if target_kind in ("text", "multimodal"):
        texts.append(batch["product_input_ids"])
        masks.append(batch["product_attention_mask"])
    if target_kind in ("image", "multimodal"):
        images.append(batch["product_pixel_values"])
    if source_kind == "text":
        texts.append(batch["source_input_ids"])
        masks.append(batch["source_attention_mask"])
    elif source_kind == "image":
        images.append(batch["source_pixel_values"])
    else:
        texts.append(batch["source_input_ids"][post_text_index])
        masks.append(batch["source_attention_mask"][post_text_index])
        images.append(batch["source_pixel_values"][post_image_index])
    text_tokens = cm.encode_text(torch.cat(texts), torch.cat(masks)).last_hidden_state if texts else None
    text_mask = torch.cat(masks) if masks else None
    image_tokens = cm.encode_image(torch.cat(images)).last_hidden_state if images else None

    def split(tokens, product_first):
        return (tokens[:num_products], tokens[num_products:]) if product_first else (None, tokens)

    product_text, source_text = split(text_tokens, target_kind in ("text", "multimodal")) if texts else (None, None)
    product_mask, source_mask = split(text_mask, target_kind in ("text", "multimodal")) if masks else (None, None)
    product_image, source_image = (split(image_tokens, target_kind in ("image", "multimodal")) if images
                                   else (None, None))

    fused = None
    if "multimodal" in (source_kind, target_kind):  # one multimodal-encoder call for every pair that needs it
        pair_images, pair_texts, pair_masks = [], [], []
        if target_kind == "multimodal":
            pair_images.append(product_image)
            pair_texts.append(product_text)
            pair_masks.append(product_mask)
        if source_kind == "multimodal":
            pair_images.append(source_image)
            pair_texts.append(source_text)
            pair_masks.append(source_mask)
        fused = cm.multimodal_model(torch.cat(pair_images), torch.cat(pair_texts), torch.cat(pair_masks))
        fused = F.normalize(cm.multimodal_projection(fused.last_hidden_state[:, 0]), dim=-1)

    def embed(kind, tokens_text, tokens_image, fused_part):
        if kind == "text":
            return F.normalize(cm.text_projection(tokens_text[:, 0]), dim=-1)
        if kind == "image":
            return F.normalize(cm.image_projection(tokens_image[:, 0]), dim=-1)
        return fused_part

    fused_products = fused[:num_products] if (fused is not None and target_kind == "multimodal") else None
    fused_sources = None
    if fused is not None and source_kind == "multimodal":
        fused_sources = fused[num_products:] if target_kind == "multimodal" else fused
    products = embed(target_kind, product_text, product_image, fused_products)
    sources = embed(source_kind, source_text, source_image, fused_sources)
    # as the model's Omni loss: a source at batch row r retrieves product r; other copies are not negatives
    rows = torch.tensor(source_rows, dtype=torch.long)
    others = torch.ones(num_products, dtype=torch.bool)
    others[rows] = False
    candidates = torch.cat([products[rows], products[others]])
    product_index = batch["product_index"]
    candidate_ids = torch.cat([product_index[rows], product_index[others]])
    scale = cm.logit_scale.clamp(max=model.config.max_logit_scale).exp()
    return contrastive_loss(sources, candidates, scale, product_index[rows], candidate_ids)


def minimal_losses(model, it_batch, om_batch, backward=True):
    """14 forward/backward passes, each running only the encoders its own loss needs."""
    losses = {}
    saved = dict(model.config.loss_weights)
    try:
        for task in ("itc", "itm"):  # the model's task selection already runs only what these need
            _only(model, task)
            loss = model(**it_batch, generator=torch.Generator().manual_seed(0)).losses[task]
            if backward:
                loss.backward()
            losses[task] = loss.detach()
    finally:
        model.config.loss_weights = saved
    for task in ("mlm", "mim_kl", "mim_fr"):
        loss = _mlm_loss(model, it_batch) if task == "mlm" else _mim_loss(model, it_batch, task)
        if backward:
            loss.backward()
        losses[task] = loss.detach()
    for task in OMNI_TASKS:
        source_kind, target_kind = task[len("omni_"):].split("_to_")
        loss = _omni_loss(model, om_batch, source_kind, target_kind)
        if backward:
            loss.backward()
        losses[task] = loss.detach()
    return losses


def step_with(losses_function, model, optimizer, it_batch, om_batch):
    losses_function(model, it_batch, om_batch)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_losses(model, it_batch, om_batch) -> dict:
    """Max |difference| between each 14-pass variant's losses and the two-pass losses (eval mode, no update)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        reference = dict(model(**it_batch, generator=torch.Generator().manual_seed(0)).losses)
        reference.update(model(**om_batch).losses)
        minimal = minimal_losses(model, it_batch, om_batch, backward=False)
        selected = task_selection_losses(model, it_batch, om_batch, backward=False)
    model.train(was_training)
    missing = sorted(set(PRETRAINING_TASKS) - set(reference))
    if missing:
        raise RuntimeError(f"the two-pass step did not compute {missing}")
    return {
        "minimal_max_abs_diff": max(float((minimal[t] - reference[t]).abs()) for t in PRETRAINING_TASKS),
        "task_selection_max_abs_diff": max(float((selected[t] - reference[t]).abs()) for t in PRETRAINING_TASKS),
        "two_pass_losses": {t: float(v) for t, v in reference.items()},
    }


def main():
    args = common.finish_args(common.parser(__doc__.splitlines()[0]).parse_args())
    model = common.build_commercemm_pretraining()
    optimizer = common.optimizer_for(model)
    it_batch, om_batch = common.image_text_batch(), common.omni_batch()
    check = check_losses(model, it_batch, om_batch)
    print(f"loss check: 14-pass minimal vs two-pass max |diff| {check['minimal_max_abs_diff']:.2e}; "
          f"task-selection vs two-pass {check['task_selection_max_abs_diff']:.2e}", flush=True)
    if check["minimal_max_abs_diff"] > 1e-4 or check["task_selection_max_abs_diff"] > 1e-4:
        raise SystemExit("the 14-pass baselines do not compute the same losses as the two-pass step")
    functions = {
        "two_pass": lambda: common.commercemm_two_pass_step(model, optimizer, it_batch, om_batch),
        "fourteen_pass_minimal": lambda: step_with(minimal_losses, model, optimizer, it_batch, om_batch),
        "fourteen_pass_task_selection": lambda: step_with(task_selection_losses, model, optimizer, it_batch, om_batch),
    }
    flops = {name: common.count_flops(lambda name=name: functions[name]()) for name in functions}
    rows, raw = [], {"loss_check": check, "flops": flops}
    for threads in args.threads:
        common.set_threads(threads)
        timings = common.compare(functions, repeats=args.repeats, warmup=args.warmup, min_seconds=0)
        raw[f"timing_threads_{threads}"] = timings
        two = timings["two_pass"]["median_s"]
        minimal = timings["fourteen_pass_minimal"]["median_s"]
        selected = timings["fourteen_pass_task_selection"]["median_s"]
        rows.append(common.row("2", "speed-up of two-pass over 14 minimal passes (step time)", threads, two, minimal,
                               minimal / two, ">=3x", minimal / two >= 3.0, "s/step"))
        rows.append(common.row("2 info", "speed-up over 14 passes by the model's task selection", threads, two,
                               selected, selected / two, None, None, "s/step"))
    rows.append(common.row("2 info", "FLOPs per step: two-pass vs 14 minimal passes", "-", flops["two_pass"] / 1e9,
                           flops["fourteen_pass_minimal"] / 1e9,
                           flops["fourteen_pass_minimal"] / flops["two_pass"], None, None, "GFLOP"))
    common.write_results(NAME, TITLE, rows, args, {"raw": raw})


if __name__ == "__main__":
    sys.exit(main())
