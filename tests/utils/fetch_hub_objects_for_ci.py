"""Stand-in for transformers' repository `utils/fetch_hub_objects_for_ci.py` (not in the PyPI sdist), which the
vendored `tests/common/test_image_processing_common.py` imports from `tests/utils/`.

The original downloads Hub fixtures (COCO / ADE20K images) into a local cache. The test machines cannot reach the
Hub, and the common tests CommerceMM runs never load one: they are used by the backend-equivalence test (skipped
for a processor with a single, PIL, backend) and the semantic-segmentation post-processing tests (not inherited).
Asking for one is therefore a clear error rather than a silent substitute."""


def url_to_local_path(url: str) -> str:
    raise RuntimeError(f"{url} is a Hub fixture; the CommerceMM test machines are offline and ship none.")
