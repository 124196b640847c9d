"""Stand-in for transformers' `tests/exporters/test_export.py` (not in the PyPI sdist; the original drives
transformers' exporters, ONNX, ExecuTorch, ... through generation too).

This one keeps the part that applies to CommerceMM: every model class exports with transformers' own
`DynamoExporter` (torch.export, every input axis dynamic) and the exported program gives eager's outputs on the
tester's inputs, with the attention mask padded."""

import copy

import torch
from transformers.exporters.configs import DynamoConfig
from transformers.exporters.exporter_dynamo import DynamoExporter


def _tensors(outputs) -> dict:
    """The tensors of a (nested) model output, by dotted key."""
    found = {}
    items = outputs.items() if hasattr(outputs, "items") else enumerate(outputs)
    for key, value in items:
        if isinstance(value, torch.Tensor):
            found[str(key)] = value
        elif value is not None and (hasattr(value, "items") or isinstance(value, (tuple, list))):
            found.update({f"{key}.{inner}": tensor for inner, tensor in _tensors(value).items()})
    return found


class ExportTesterMixin:
    test_torch_exportable = True

    def _export_inputs(self, model_class):
        _, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        inputs = self._prepare_for_class(inputs, model_class)
        if "attention_mask" in inputs:  # right padding, so the mask must reach every attention backend
            inputs["attention_mask"] = inputs["attention_mask"].clone()
            inputs["attention_mask"][:, -2:] = 0
            inputs["attention_mask"][:, 0] = 1
        return inputs

    def test_torch_export(self):
        if not self.test_torch_exportable:
            self.skipTest(reason="test_torch_exportable is False")
        for model_class in self.all_model_classes:
            config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            model = model_class(config).eval()
            inputs = self._export_inputs(model_class)
            with torch.no_grad():
                expected = _tensors(model(**copy.deepcopy(inputs)))
            exported = DynamoExporter().export(model, copy.deepcopy(inputs), config=DynamoConfig(dynamic=True))
            with torch.no_grad():
                actual = _tensors(exported(**copy.deepcopy(inputs)))
            self.assertTrue(expected, f"{model_class.__name__} returned no tensors")
            for key, value in expected.items():
                self.assertIn(key, actual, f"{model_class.__name__}: exported outputs lack {key}")
                torch.testing.assert_close(actual[key], value, atol=1e-5, rtol=1e-4, msg=f"{model_class.__name__}.{key}")
