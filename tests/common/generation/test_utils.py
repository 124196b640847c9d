"""Stand-in for transformers' `tests/generation/test_utils.py` (not in the PyPI sdist): `test_modeling_common.py`
imports `GenerationTesterMixin` only to check that models which can `generate` are tested with it; no CommerceMM
model generates text, so the testers never inherit it."""


class GenerationTesterMixin:
    pass
