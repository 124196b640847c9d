"""torch.export, torch.compile(fullgraph=True) and torch.jit.trace of the three feature functions: dynamic batch and
sequence length, padded inputs equal to eager, and the vocabulary check kept inside the graph."""

import pytest
import torch
from torch import nn
from torch.export import Dim


class TextFeatures(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class ImageFeatures(TextFeatures):
    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


class MultimodalFeatures(TextFeatures):
    def forward(self, input_ids, attention_mask, pixel_values):
        return self.model.get_multimodal_features(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values
        ).pooler_output


def batch(batch_size: int, length: int, seed: int, padded: bool = True):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 300, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if padded:
        for row in range(1, batch_size):
            attention_mask[row, max(1, length - 2 * row):] = 0
        input_ids[attention_mask == 0] = 0
    pixel_values = torch.randn(batch_size, 3, 32, 32, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


FEATURES = {
    "text": (TextFeatures, ("input_ids", "attention_mask")),
    "image": (ImageFeatures, ("pixel_values",)),
    "multimodal": (MultimodalFeatures, ("input_ids", "attention_mask", "pixel_values")),
}


def dynamic_shapes(names, max_length):
    batch_dim, length_dim = Dim("batch", min=2, max=64), Dim("length", min=2, max=max_length)
    shapes = {"input_ids": {0: batch_dim, 1: length_dim}, "attention_mask": {0: batch_dim, 1: length_dim},
              "pixel_values": {0: batch_dim}}
    return {name: shapes[name] for name in names}


@pytest.mark.parametrize("kind", list(FEATURES))
def test_torch_export_with_dynamic_batch_and_length_equals_eager_on_padded_inputs(model, kind):
    wrapper_class, names = FEATURES[kind]
    wrapper = wrapper_class(model).eval()
    example = batch(2, 7, seed=0)
    exported = torch.export.export(
        wrapper,
        args=(),
        kwargs={name: example[name] for name in names},
        dynamic_shapes=dynamic_shapes(names, model.config.text_config.max_text_length),
    )
    for batch_size, length, padded in ((2, 7, True), (5, 11, True), (3, 4, False), (4, 16, True)):
        inputs = {name: value for name, value in batch(batch_size, length, seed=length, padded=padded).items()
                  if name in names}
        with torch.no_grad():
            expected = wrapper(**inputs)
        torch.testing.assert_close(exported.module()(**inputs), expected, atol=1e-5, rtol=0)
    if "input_ids" in names:
        inputs = {name: value for name, value in batch(3, 6, seed=1).items() if name in names}
        inputs["input_ids"] = inputs["input_ids"].clone()
        inputs["input_ids"][0, 1] = model.config.text_config.vocab_size  # one past the table
        with pytest.raises(RuntimeError, match="outside the text vocabulary"):
            exported.module()(**inputs)
        with pytest.raises(ValueError, match="outside the text vocabulary of 300 tokens"):
            wrapper(**inputs)  # eager keeps the clear error


def test_torch_compile_fullgraph_equals_eager_and_keeps_the_vocabulary_check(model):
    torch._dynamo.reset()
    for wrapper_class, names in FEATURES.values():
        wrapper = wrapper_class(model).eval()
        # backend="eager": Dynamo captures the whole graph (fullgraph: no break) and runs it as is; torch.export above
        # already covers the ATen-level trace, and inductor would only add minutes of C++ compilation on CPU
        compiled = torch.compile(wrapper, fullgraph=True, dynamic=True, backend="eager")
        for batch_size, length, padded in ((2, 7, True), (4, 10, True), (3, 5, False)):
            inputs = {name: value for name, value in batch(batch_size, length, seed=length, padded=padded).items()
                      if name in names}
            with torch.no_grad():
                torch.testing.assert_close(compiled(**inputs), wrapper(**inputs), atol=1e-5, rtol=0)
        if "input_ids" in names:
            inputs = {name: value for name, value in batch(2, 7, seed=2).items() if name in names}
            inputs["input_ids"] = inputs["input_ids"].clone()
            inputs["input_ids"][1, 0] = -1
            with pytest.raises(RuntimeError, match="outside the text vocabulary"):
                compiled(**inputs)


def test_jit_trace_on_an_unpadded_batch_still_masks_padding(model):
    """A trace taken without padding must not bake in "no mask" (as an `attention_mask.all()` shortcut would)."""
    wrapper = TextFeatures(model).eval()
    unpadded = batch(3, 8, seed=3, padded=False)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (unpadded["input_ids"], unpadded["attention_mask"]), check_trace=False)
        padded = batch(3, 8, seed=4)
        torch.testing.assert_close(traced(padded["input_ids"], padded["attention_mask"]),
                                   wrapper(padded["input_ids"], padded["attention_mask"]), atol=1e-5, rtol=0)
