"""transformers' own `ImageProcessingTestMixin` (`tests/common/`, vendored from the 5.24.0 sdist) run against
`CommerceMMImageProcessor`, with a tester written the way `tests/models/clip/test_image_processing_clip.py` writes
its own (CLIP's defaults: shortest edge, center crop, OpenAI CLIP mean/std)."""

import unittest

from common.test_image_processing_common import ImageProcessingTester, ImageProcessingTestMixin

from commercemm_hf import CommerceMMImageProcessor


class CommerceMMImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("size", {"shortest_edge": 20})
        kwargs.setdefault("crop_size", {"height": 18, "width": 18})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_center_crop", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("do_convert_rgb", True)
        super().__init__(parent, min_resolution=30, max_resolution=120, **kwargs)

    def _get_image_processing_classes(self):
        # transformers infers the classes from its own model registry by folder name; CommerceMM is not in it, and
        # has one backend (PIL: the package never needs torchvision)
        return {"pil": CommerceMMImageProcessor}

    def expected_output_image_shape(self, images):
        return self.num_channels, self.crop_size["height"], self.crop_size["width"]


class CommerceMMImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = CommerceMMImageProcessingTester

    @unittest.skip(reason="CommerceMM must not need torchvision (house rule: no torchvision dependency), so its "
                          "image processor is PIL-only; CLIP and FLAVA pass this test only as pre-2025 models")
    def test_new_models_require_torchvision_backend(self):
        pass
