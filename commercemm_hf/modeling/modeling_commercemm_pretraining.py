"""CommerceMM pretraining: the 5 image-text losses and the 9 Omni-Retrieval losses.

`CommerceMMForPreTraining.forward` takes an image-text batch (MLM, MIM-kl, MIM-fr, ITC, ITM), an Omni batch (the 9
`omni_{source}_to_{target}` InfoNCE losses), or both, and returns every loss by name with the weighted total. Each
pass runs every encoder once on a stacked batch and reuses its outputs across the tasks of that pass:

* image-text pass: the text encoder runs on [clean text; masked text], the image encoder on [clean image; masked
  image], and the multimodal encoder on [ITM positives; ITM text negatives; ITM image negatives; masked pairs] at once.
* Omni pass: the text encoder runs on every text (source queries/captions and product texts), the image encoder on
  every image (source views/posts and product images), the multimodal encoder on every image+text item.

Our reading of the paper where it is silent is in DESIGN.md section 2 and in `CommerceMMConfig`'s fields.
Contrastive candidates are gathered across processes, with exact gradients, when `torch.distributed` is initialised.

This file travels as Hugging Face remote code: torch, transformers and single-dot siblings only.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_commercemm import EMBEDDING_KINDS, IMAGE_TEXT_TASKS, PRETRAINING_TASKS, CommerceMMConfig
from .losses_commercemm import (
    contrastive_loss,
    gather_rows,
    process_rank_and_world,
    sample_in_proportion,
    source_to_product_loss,
)
from .modeling_commercemm import CommerceMMModel, CommerceMMPreTrainedModel, renamed_multimodal_depth


# --------------------------------------------------------------------------------------------------------------------
# Heads and output
# --------------------------------------------------------------------------------------------------------------------


class CommerceMMMLMHead(nn.Module):
    """BERT-style transform + decoder tied to the word embeddings; run only at masked positions."""

    def __init__(self, config: CommerceMMConfig):
        super().__init__()
        text_config = config.text_config
        self.dense = nn.Linear(config.multimodal_config.hidden_size, text_config.hidden_size)
        self.activation = ACT2FN[text_config.hidden_act]
        self.layer_norm = nn.LayerNorm(text_config.hidden_size, eps=text_config.layer_norm_eps)
        self.decoder = nn.Linear(text_config.hidden_size, text_config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


class CommerceMMPrototypeHead(nn.Module):
    """Maps a feature to logits over `mim_num_prototypes` shared, L2-normalised prototypes (cosine logits)."""

    def __init__(self, input_size: int, config: CommerceMMConfig):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(input_size, config.projection_dim),
            nn.GELU(),
            nn.Linear(config.projection_dim, config.projection_dim),
        )

    def forward(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(features), dim=-1) @ F.normalize(prototypes, dim=-1).t()


@dataclass
class CommerceMMForPreTrainingOutput(ModelOutput):
    """Output of `CommerceMMForPreTraining`: the weighted total `loss`, each of the 14 losses by task name
    (`None` when its pass did not run), and diagnostics.

    Args:
        mim_kl_target_entropy: mean entropy (nats) of the MIM-kl teacher distributions (sharpened: low).
        mim_kl_target_usage_entropy: entropy of the batch's mean teacher distribution; near 0 would mean a
            collapsed teacher (every image the same target), ln(mim_num_prototypes) means even prototype use.
        itm_accuracy: accuracy of the ITM head on the positives and hard negatives of the batch.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mim_kl_loss: torch.FloatTensor | None = None
    mim_fr_loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    omni_text_to_text_loss: torch.FloatTensor | None = None
    omni_text_to_image_loss: torch.FloatTensor | None = None
    omni_text_to_multimodal_loss: torch.FloatTensor | None = None
    omni_image_to_text_loss: torch.FloatTensor | None = None
    omni_image_to_image_loss: torch.FloatTensor | None = None
    omni_image_to_multimodal_loss: torch.FloatTensor | None = None
    omni_multimodal_to_text_loss: torch.FloatTensor | None = None
    omni_multimodal_to_image_loss: torch.FloatTensor | None = None
    omni_multimodal_to_multimodal_loss: torch.FloatTensor | None = None
    mim_kl_target_entropy: torch.FloatTensor | None = None
    mim_kl_target_usage_entropy: torch.FloatTensor | None = None
    itm_accuracy: torch.FloatTensor | None = None

    @property
    def losses(self) -> dict[str, torch.Tensor]:
        """The losses that were computed, by task name (`"mlm"`, ..., `"omni_post..."`)."""
        return {task: self[f"{task}_loss"] for task in PRETRAINING_TASKS if self.get(f"{task}_loss") is not None}


# --------------------------------------------------------------------------------------------------------------------
# The pretraining model
# --------------------------------------------------------------------------------------------------------------------


class CommerceMMForPreTraining(CommerceMMPreTrainedModel):
    r"""CommerceMM with the heads of its 14 pretraining tasks.

    Image-text batch (from `CommerceMMPretrainingCollator`): `input_ids`, `attention_mask`, `pixel_values`,
    `mlm_input_ids`, `mlm_labels` (-100 where not masked), `bool_masked_pos` (batch, num_patches).
    Omni batch (from `CommerceMMOmniCollator`): `product_input_ids`, `product_attention_mask`,
    `product_pixel_values`, `product_index` (int id per product, to tell duplicates apart), and the sources:
    `source_input_ids` / `source_attention_mask` for the sources that have text, at batch rows `source_text_rows`,
    `source_pixel_values` for those that have an image, at rows `source_image_rows`.

    Example:
        >>> import torch
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMForPreTraining
        >>> model = CommerceMMForPreTraining(CommerceMMConfig.from_preset("tiny"))
        >>> ids = torch.randint(5, 100, (2, 8)); labels = torch.full_like(ids, -100); labels[:, 3] = ids[:, 3]
        >>> out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(2, 3, 64, 64),
        ...             mlm_input_ids=ids, mlm_labels=labels, bool_masked_pos=torch.rand(2, 64) < 0.5)
        >>> sorted(out.losses)
        ['itc', 'itm', 'mim_fr', 'mim_kl', 'mlm']
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "commercemm.text_model.embeddings.word_embeddings.weight"}

    def __init__(self, config: CommerceMMConfig):
        super().__init__(config)
        self.commercemm = CommerceMMModel(config)
        multimodal_size = config.multimodal_config.hidden_size
        self.mlm_head = CommerceMMMLMHead(config)
        self.itm_head = nn.Linear(multimodal_size, 2)
        # filled by `_init_weights` (and, in `from_pretrained`, only when the checkpoint lacks it)
        self.mim_prototypes = nn.Parameter(torch.empty(config.mim_num_prototypes, config.projection_dim))
        self.mim_kl_head = CommerceMMPrototypeHead(multimodal_size, config)
        # The self-teacher's head is a fixed random projection (never trained: its targets carry no gradient);
        # the prototypes it scores against are shared with, and trained through, the student head.
        self.mim_teacher_head = CommerceMMPrototypeHead(config.vision_config.hidden_size, config)
        self.mim_teacher_head.requires_grad_(False)
        self.mim_fr_head = nn.Linear(multimodal_size, config.vision_config.hidden_size)
        # DINO-style centre of the teacher logits: subtracting it keeps one prototype from winning every image.
        self.register_buffer("mim_center", torch.zeros(config.mim_num_prototypes))
        self._external_teacher = None
        self._itm_generator = None  # ITM negatives of calls that bring no generator (see `forward`)
        # Tied, the decoder weight is the word embeddings: not stored, and Trainer's resume re-ties it instead of
        # warning that it is missing. Untied, it is a weight of its own and must be saved.
        self._keys_to_ignore_on_save = ["mlm_head.decoder.weight"] if config.tie_word_embeddings else None
        self.post_init()

    def extra_auto_map(self) -> dict[str, type]:
        return {"AutoModel": CommerceMMModel}

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear):
        self.mlm_head.decoder = value

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CommerceMMForPreTraining):
            init.normal_(module.mim_prototypes, std=1.0)
            init.zeros_(module.mim_center)

    # ------------------------------------------------------------------------------------------------ teachers

    def external_teacher(self):
        """The frozen image classifier named by `config.mim_kl_teacher` (loaded once), or None."""
        if self.config.mim_kl_teacher and self._external_teacher is None:
            from transformers import AutoModelForImageClassification

            teacher = AutoModelForImageClassification.from_pretrained(self.config.mim_kl_teacher).eval()
            teacher.requires_grad_(False)
            if teacher.config.num_labels != self.config.mim_num_prototypes:
                raise ValueError(
                    f"The MIM-kl teacher {self.config.mim_kl_teacher!r} predicts {teacher.config.num_labels} "
                    "classes but "
                    f"config.mim_num_prototypes is {self.config.mim_num_prototypes}; set them equal."
                )
            self._external_teacher = (teacher,)  # a tuple keeps it out of this model's modules and state dict
        return self._external_teacher[0] if self._external_teacher else None

    @torch.no_grad()
    def _mim_targets(self, pixel_values, clean_image_cls):
        """Teacher logits (centred, before sharpening) and the MIM-fr target feature for the unmasked images."""
        teacher = self.external_teacher()
        if teacher is None:
            logits = self.mim_teacher_head(clean_image_cls, self.mim_prototypes)
            return logits, clean_image_cls
        teacher = teacher.to(pixel_values.device)
        size = getattr(teacher.config, "image_size", pixel_values.shape[-1])
        # pixel_values arrive normalised by CommerceMM's processor and are fed to the teacher as they are.
        teacher_pixels = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
        outputs = teacher(pixel_values=teacher_pixels.to(teacher.dtype), output_hidden_states=True)
        feature = outputs.hidden_states[-1][:, 0].to(clean_image_cls.dtype)
        return outputs.logits.to(clean_image_cls.dtype), feature

    @torch.no_grad()
    def _update_center(self, teacher_logits: torch.Tensor):
        batch_center = teacher_logits.mean(dim=0)
        rank, world_size = process_rank_and_world()
        if world_size > 1:
            dist.all_reduce(batch_center)
            batch_center /= world_size
        momentum = self.config.mim_center_momentum
        self.mim_center.mul_(momentum).add_(batch_center, alpha=1 - momentum)

    # ------------------------------------------------------------------------------------------------ passes

    def active_tasks(self) -> set[str]:
        """The pretraining tasks this model computes: those with a non-zero weight in `config.loss_weights` (and, for
        Omni tasks, listed in `config.omni_pairs`). A task with weight 0 costs nothing (ablations, benchmarks)."""
        weights = self.config.loss_weights
        return {
            task for task in PRETRAINING_TASKS
            if weights.get(task, 1.0) != 0 and (task in IMAGE_TEXT_TASKS or task in self.config.omni_pairs)
        }

    def _image_text_losses(self, input_ids, attention_mask, pixel_values, mlm_input_ids, mlm_labels, bool_masked_pos,
                           pair_index, depths, generator):
        model, config = self.commercemm, self.config
        active = self.active_tasks()
        with_masked = bool(active & {"mlm", "mim_kl", "mim_fr"})  # the masked pair serves MLM and both MIMs
        with_itm = "itm" in active
        batch_size = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # one text-encoder call over [clean; masked] text and one image-encoder call over [clean; masked] images
        no_mask = torch.zeros_like(bool_masked_pos)
        text_outputs = model.encode_text(
            torch.cat([input_ids, mlm_input_ids]) if with_masked else input_ids,
            torch.cat([attention_mask, attention_mask]) if with_masked else attention_mask,
            text_depth=depths["text_depth"],
        )
        image_outputs = model.encode_image(
            torch.cat([pixel_values, pixel_values]) if with_masked else pixel_values,
            torch.cat([no_mask, bool_masked_pos]) if with_masked else None,
            image_depth=depths["image_depth"],
        )
        text_states, image_states = text_outputs.last_hidden_state, image_outputs.last_hidden_state
        clean_text, masked_text = text_states[:batch_size], text_states[batch_size:]
        clean_image, masked_image = image_states[:batch_size], image_states[batch_size:]

        losses, diagnostics = {}, {}
        scale = model.logit_scale.clamp(max=config.max_logit_scale).exp()
        # the tower's own pooling ([CLS] or the masked mean, `text_config.pooling`), as in get_text_features
        text_embeds = F.normalize(model.text_projection(text_outputs.pooler_output[:batch_size]), dim=-1)
        image_embeds = F.normalize(model.image_projection(clean_image[:, 0]), dim=-1)
        if "itc" in active:
            losses["itc"] = (
                contrastive_loss(image_embeds, text_embeds, scale, pair_index, pair_index)
                + contrastive_loss(text_embeds, image_embeds, scale, pair_index, pair_index)
            ) / 2

        pair_images, pair_texts, pair_masks = [], [], []
        itm_count = 0
        if with_itm:
            # ITM negatives: for each image a text, for each text an image, sampled in proportion to ITC
            # similarity (ALBEF) among the other pairs of the batch.
            with torch.no_grad():
                similarity = image_embeds @ text_embeds.t() * scale
                forbidden = torch.eye(batch_size, dtype=torch.bool, device=similarity.device)
                if pair_index is not None:
                    forbidden |= pair_index.unsqueeze(0) == pair_index.unsqueeze(1)
                can_sample = ~forbidden.all(dim=1)
                weights = similarity.softmax(dim=1) if config.itm_hard_negatives else torch.ones_like(similarity)
                weights = weights.masked_fill(forbidden, 0.0)
                weights[~can_sample] = 1.0  # rows with no candidate keep a dummy distribution and are dropped below
                negative_text = sample_in_proportion(weights, generator)
                weights_t = similarity.t().softmax(dim=1) if config.itm_hard_negatives else torch.ones_like(similarity)
                weights_t = weights_t.masked_fill(forbidden.t(), 0.0)
                weights_t[~can_sample] = 1.0
                negative_image = sample_in_proportion(weights_t, generator)
            keep = can_sample
            pair_images += [clean_image, clean_image[keep], clean_image[negative_image[keep]]]
            pair_texts += [clean_text, clean_text[negative_text[keep]], clean_text[keep]]
            pair_masks += [attention_mask, attention_mask[negative_text[keep]], attention_mask[keep]]
            num_negatives = int(keep.sum())
            itm_count = batch_size + 2 * num_negatives
        if with_masked:
            pair_images.append(masked_image)
            pair_texts.append(masked_text)
            pair_masks.append(attention_mask)
        if not pair_images:
            return losses, diagnostics
        fused = model.multimodal_model(torch.cat(pair_images), torch.cat(pair_texts), torch.cat(pair_masks),
                                       depth=model._depth("multimodal", depths["multimodal_depth"]))
        fused_tokens = fused.last_hidden_state
        if with_itm:
            itm_logits = self.itm_head(fused_tokens[:itm_count, 0])
            itm_labels = torch.cat([
                torch.ones(batch_size, dtype=torch.long, device=itm_logits.device),
                torch.zeros(2 * num_negatives, dtype=torch.long, device=itm_logits.device),
            ])
            losses["itm"] = F.cross_entropy(itm_logits, itm_labels)
            diagnostics["itm_accuracy"] = (itm_logits.argmax(-1) == itm_labels).float().mean()
        if not with_masked:
            return losses, diagnostics

        masked_fused = fused_tokens[itm_count:]
        if "mlm" in active:
            # MLM on the text tokens of the masked pairs, only at masked positions
            text_tokens = masked_fused[:, 1 + clean_image.shape[1]:]
            masked_positions = mlm_labels.ne(-100)
            if masked_positions.any():
                mlm_logits = self.mlm_head(text_tokens[masked_positions])
                losses["mlm"] = F.cross_entropy(mlm_logits.float(), mlm_labels[masked_positions])
            else:
                losses["mlm"] = text_tokens.sum() * 0.0
        if active & {"mim_kl", "mim_fr"}:
            losses_mim, diagnostics_mim = self._mim_losses(masked_fused[:, 0], pixel_values, clean_image, active)
            losses.update(losses_mim)
            diagnostics.update(diagnostics_mim)
        return losses, diagnostics

    def _mim_losses(self, fused_cls, pixel_values, clean_image, active):
        """MIM-kl / MIM-fr: from [CLS_mm] of the masked pairs, recover the whole unmasked image's teacher
        distribution over prototypes / its feature."""
        config = self.config
        losses, diagnostics = {}, {}
        teacher_logits, teacher_feature = self._mim_targets(pixel_values, clean_image[:, 0].detach())
        if "mim_kl" in active:
            if self.external_teacher() is None:
                teacher_probs = F.softmax((teacher_logits - self.mim_center) / config.mim_teacher_temperature, dim=-1)
                if self.training:
                    self._update_center(teacher_logits)
            else:
                teacher_probs = F.softmax(teacher_logits, dim=-1)
            student_log_probs = F.log_softmax(
                self.mim_kl_head(fused_cls, self.mim_prototypes) / config.mim_student_temperature, dim=-1
            )
            losses["mim_kl"] = F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")
            diagnostics["mim_kl_target_entropy"] = _entropy(teacher_probs).mean()
            # a collapsed teacher sends every image to the same prototype: the batch's mean target then has ~0
            # entropy
            diagnostics["mim_kl_target_usage_entropy"] = _entropy(teacher_probs.mean(dim=0))
        if "mim_fr" in active:
            if config.mim_fr_target == "image_cls":
                teacher_feature = clean_image[:, 0].detach()
            predicted = F.normalize(self.mim_fr_head(fused_cls), dim=-1)
            if predicted.shape[-1] != teacher_feature.shape[-1]:
                raise ValueError(
                    f"MIM-fr: the teacher feature has {teacher_feature.shape[-1]} dims but the head predicts "
                    f"{predicted.shape[-1]} (mim_fr_target='teacher' needs a teacher as wide as the image encoder)."
                )
            losses["mim_fr"] = (2 - 2 * (predicted * F.normalize(teacher_feature, dim=-1)).sum(-1)).mean()
        return losses, diagnostics

    def _omni_losses(self, product_input_ids, product_attention_mask, product_pixel_values, product_index,
                     source_input_ids, source_attention_mask, source_text_rows, source_pixel_values,
                     source_image_rows, depths):
        model, config = self.commercemm, self.config
        active = self.active_tasks()
        num_products = product_input_ids.shape[0]
        device = product_input_ids.device
        no_rows = torch.zeros(0, dtype=torch.long, device=device)
        source_text_rows = source_text_rows if source_text_rows is not None else no_rows
        source_image_rows = source_image_rows if source_image_rows is not None else no_rows
        num_source_texts, num_source_images = len(source_text_rows), len(source_image_rows)

        # one text-encoder call over [product texts; source texts]; one image-encoder call over [product; source]
        texts = [product_input_ids] + ([source_input_ids] if num_source_texts else [])
        masks = [product_attention_mask] + ([source_attention_mask] if num_source_texts else [])
        if num_source_texts:
            length = max(t.shape[1] for t in texts)
            texts = [F.pad(t, (0, length - t.shape[1]), value=config.text_config.pad_token_id or 0) for t in texts]
            masks = [F.pad(m, (0, length - m.shape[1]), value=0) for m in masks]
        text_mask = torch.cat(masks)
        text_outputs = model.encode_text(torch.cat(texts), text_mask, text_depth=depths["text_depth"])
        images = [product_pixel_values] + ([source_pixel_values] if num_source_images else [])
        image_outputs = model.encode_image(torch.cat(images), image_depth=depths["image_depth"])
        text_tokens, image_tokens = text_outputs.last_hidden_state, image_outputs.last_hidden_state

        # sources with both an image and a text (tagged posts) are fused together with the products
        num_sources = int(torch.cat([source_text_rows, source_image_rows]).max()) + 1
        text_slot = torch.full((num_sources,), -1, dtype=torch.long, device=device)
        image_slot = torch.full((num_sources,), -1, dtype=torch.long, device=device)
        text_slot[source_text_rows] = torch.arange(num_source_texts, device=device) + num_products
        image_slot[source_image_rows] = torch.arange(num_source_images, device=device) + num_products
        both = (text_slot >= 0) & (image_slot >= 0)
        fused_text_index = torch.cat([torch.arange(num_products, device=device), text_slot[both]])
        fused_image_index = torch.cat([torch.arange(num_products, device=device), image_slot[both]])
        fused = model.multimodal_model(
            image_tokens[fused_image_index], text_tokens[fused_text_index], text_mask[fused_text_index],
            depth=model._depth("multimodal", depths["multimodal_depth"]),
        )
        multimodal = F.normalize(model.multimodal_projection(fused.last_hidden_state[:, 0]), dim=-1)
        text = F.normalize(model.text_projection(text_outputs.pooler_output), dim=-1)
        image = F.normalize(model.image_projection(image_tokens[:, 0]), dim=-1)

        product_embeds = {"text": text[:num_products], "image": image[:num_products],
                          "multimodal": multimodal[:num_products]}
        source_rows = {"text": source_text_rows, "image": source_image_rows, "multimodal": both.nonzero().squeeze(1)}
        source_embeds = {
            "text": text[num_products:], "image": image[num_products:], "multimodal": multimodal[num_products:]
        }
        scale = model.logit_scale.clamp(max=config.max_logit_scale).exp()
        losses = {}
        for source_kind in EMBEDDING_KINDS:
            rows = source_rows[source_kind]
            if len(rows) == 0 and process_rank_and_world()[1] == 1:
                continue
            for target_kind in EMBEDDING_KINDS:
                task = f"omni_{source_kind}_to_{target_kind}"
                if task not in active:
                    continue
                # Distributed, a process without such sources still takes part (with no queries: a zero loss),
                # since another process may have some and the candidate exchange is collective.
                # each source's positive is its own product (batch row); other copies of it are not negatives
                losses[task] = source_to_product_loss(
                    source_embeds[source_kind], product_embeds[target_kind], rows, product_index, scale
                )
        return losses

    def itm_generator(self, generator: torch.Generator | int | None = None) -> torch.Generator:
        """The generator ITM negatives are drawn from: `generator` itself, a CPU generator seeded with it when it is an
        int, else this model's own CPU generator (seeded once from `torch.initial_seed()`, so `transformers.set_seed`
        makes a run repeatable, and other draws from the global RNG, dropout included, never shift the negatives).
        The pretraining trainer passes one seeded by (seed, step, micro-step, rank), as for the masks.

        Example:
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMForPreTraining
            >>> model = CommerceMMForPreTraining(CommerceMMConfig.from_preset("tiny"))
            >>> model.itm_generator(3).initial_seed(), model.itm_generator() is model.itm_generator()
            (3, True)
        """
        if isinstance(generator, torch.Generator):
            return generator
        if generator is not None:
            return torch.Generator().manual_seed(int(generator))
        if self._itm_generator is None:
            self._itm_generator = torch.Generator().manual_seed(torch.initial_seed())
        return self._itm_generator

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        pair_index: torch.Tensor | None = None,
        product_input_ids: torch.Tensor | None = None,
        product_attention_mask: torch.Tensor | None = None,
        product_pixel_values: torch.Tensor | None = None,
        product_index: torch.Tensor | None = None,
        source_input_ids: torch.Tensor | None = None,
        source_attention_mask: torch.Tensor | None = None,
        source_text_rows: torch.Tensor | None = None,
        source_pixel_values: torch.Tensor | None = None,
        source_image_rows: torch.Tensor | None = None,
        text_depth: int | None = None,
        image_depth: int | None = None,
        multimodal_depth: int | None = None,
        generator: torch.Generator | int | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CommerceMMForPreTrainingOutput | tuple:
        """Compute the losses of the given pass(es). `generator` (a `torch.Generator` or an int seed) drives ITM
        negative sampling (see `itm_generator`; the trainer passes one per step for exact resume). `return_dict=False`
        (or `config.return_dict=False`) returns the output's non-None values as a tuple, the total loss first."""
        has_image_text = input_ids is not None or pixel_values is not None
        has_omni = product_input_ids is not None or product_pixel_values is not None
        if not has_image_text and not has_omni:
            raise ValueError("CommerceMMForPreTraining needs an image-text batch, an Omni batch, or both.")
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        depths = dict(text_depth=text_depth, image_depth=image_depth, multimodal_depth=multimodal_depth)
        losses, diagnostics = {}, {}
        if has_image_text:
            missing = [name for name, value in (("input_ids", input_ids), ("pixel_values", pixel_values),
                       ("mlm_input_ids", mlm_input_ids), ("mlm_labels", mlm_labels),
                       ("bool_masked_pos", bool_masked_pos)) if value is None]
            if missing:
                raise ValueError(f"The image-text pass needs {missing} (use CommerceMMPretrainingCollator).")
            if input_ids.shape[0] != pixel_values.shape[0]:
                raise ValueError(f"Image-text pairs expected: {pixel_values.shape[0]} images, "
                                 f"{input_ids.shape[0]} texts.")
            image_text, diagnostics = self._image_text_losses(
                input_ids, attention_mask, pixel_values, mlm_input_ids, mlm_labels, bool_masked_pos, pair_index,
                depths, self.itm_generator(generator),
            )
            losses.update(image_text)
        if has_omni:
            product_inputs = (("product_input_ids", product_input_ids), ("product_pixel_values", product_pixel_values),
                              ("product_index", product_index))
            missing = [name for name, value in product_inputs if value is None]
            if missing:
                raise ValueError(f"The Omni pass needs {missing} (use CommerceMMOmniCollator).")
            if source_input_ids is None and source_pixel_values is None:
                raise ValueError("The Omni pass needs sources: source_input_ids and/or source_pixel_values.")
            losses.update(self._omni_losses(
                product_input_ids, product_attention_mask, product_pixel_values, product_index, source_input_ids,
                source_attention_mask, source_text_rows, source_pixel_values, source_image_rows, depths,
            ))
        weights = self.config.loss_weights
        total = sum(weights.get(task, 1.0) * value for task, value in losses.items())
        return CommerceMMForPreTrainingOutput(
            loss=total, **{f"{task}_loss": value for task, value in losses.items()}, **diagnostics
        )


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


# the losses live in `losses_commercemm`; these names stay importable from here for existing callers
__all__ = ["CommerceMMForPreTraining", "CommerceMMForPreTrainingOutput", "contrastive_loss", "gather_rows",
           "sample_in_proportion"]
