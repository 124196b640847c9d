"""Target 5: CommerceMMProcessor against transformers' CLIPImageProcessor + tokenizer on 640x480 JPEG files.

64 JPEG files of 640 x 480 (synthetic product photos: gradients, shapes and sensor-like noise, quality 90) and 64
product titles, per call. Both sides resize the shortest edge to 128 (bicubic) and center-crop 128 x 128, rescale
and normalise with CLIP's mean/std, and tokenize the titles with the same tokenizer (padding, truncation to 32):
* ours: `CommerceMMProcessor(images=paths, text=titles)` (it opens and decodes the files itself);
* peer: `CLIPImageProcessor` (which falls back to `CLIPImageProcessorPil` without torchvision, as here) on the
  files opened with `PIL.Image.open`, plus the tokenizer called on the titles (what `CLIPProcessor` does).
Images/s from the median time of a batch; both sides alternate in the same run.

Equality: pixel values brought back to [0, 1] (x * std + mean, before normalisation) must agree within 1/255 with
the same resize and decoding. The faster decoding path (`fast_jpeg_decode=True`: libjpeg's DCT-domain downscale
through PIL's `draft`) is its own row, with its measured difference. Also shown: JPEG decoding alone (open + load,
no resize) and decoding + the bicubic resize (what both sides must do on the exact path: its share of the peer's
time bounds the exact path's speed-up).

Usage: python bench/bench_processor.py [--threads 1 2] [--repeats 10] [--quick]
"""

import sys
import tempfile
from pathlib import Path

import common
import numpy as np
from common import IMAGE_SIZE, TEXT_TOKENS, torch
from PIL import Image, ImageDraw, ImageFilter


NAME = "processor"
TITLE = "Target 5 - CommerceMMProcessor vs CLIPImageProcessor + tokenizer, 640x480 JPEG files + titles, batch 64"
BATCH, WIDTH, HEIGHT = 64, 640, 480


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        x = np.linspace(0, 1, WIDTH)[None, :, None]
        y = np.linspace(0, 1, HEIGHT)[:, None, None]
        colour_a, colour_b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = colour_a * (1 - 0.5 * (x + y)) + colour_b * 0.5 * (x + y)
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, WIDTH - 100), rng.integers(0, HEIGHT - 100)
            box = (int(x0), int(y0), int(x0 + rng.integers(40, 300)), int(y0 + rng.integers(40, 250)))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        image = image.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (HEIGHT, WIDTH, 3)).astype(np.int16)
        path = folder / f"product_{index:03d}.jpg"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def titles(count: int) -> list[str]:
    colours = ["red", "navy", "olive", "white", "black", "teal"]
    things = ["mug", "lamp", "sneaker", "backpack", "chair"]
    return [f"{colours[i % 6]} {things[i % 5]} model {i} with a long description of its material and size"
            for i in range(count)]


def build(text: list[str]):
    from transformers import CLIPImageProcessor

    from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer

    tokenizer = train_commercemm_tokenizer(text * 4, vocab_size=500, model_max_length=TEXT_TOKENS)
    geometry = dict(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    ours = CommerceMMProcessor(CommerceMMImageProcessor(**geometry), tokenizer)
    clip = CLIPImageProcessor(**geometry)
    return ours, clip, tokenizer


def to_unit(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """Normalised pixel values back to [0, 1] (before mean/std)."""
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return pixel_values * std + mean


def main():
    args = common.finish_args(common.parser(__doc__.splitlines()[0]).parse_args())
    text = titles(BATCH)
    ours, clip, tokenizer = build(text)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(Path(folder), BATCH)
        resized = (round(WIDTH * IMAGE_SIZE / HEIGHT), IMAGE_SIZE)

        def peer():
            images = [Image.open(path) for path in paths]
            try:
                pixels = clip(images, return_tensors="pt")["pixel_values"]
            finally:
                for image in images:
                    image.close()
            tokens = tokenizer(text, padding=True, truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
            return pixels, tokens

        def decode_only(resize=False):
            for path in paths:
                with Image.open(path) as image:
                    image.load()
                    if resize:  # the same bicubic resize both processors make (shortest edge -> 128)
                        image.resize(resized, Image.Resampling.BICUBIC)

        sides = {
            "commercemm": lambda: ours(images=paths, text=text)["pixel_values"],
            "commercemm_fast_jpeg": lambda: ours(images=paths, text=text, fast_jpeg_decode=True)["pixel_values"],
            "clip_image_processor_and_tokenizer": lambda: peer()[0],
            "jpeg_decode_only": decode_only,
            "jpeg_decode_and_resize": lambda: decode_only(resize=True),
        }
        reference = to_unit(sides["clip_image_processor_and_tokenizer"](), clip)
        difference = {name: float((to_unit(sides[name](), ours.image_processor) - reference).abs().max())
                      for name in ("commercemm", "commercemm_fast_jpeg")}
        tokens_equal = bool(torch.equal(ours(text=text)["input_ids"], peer()[1]["input_ids"]))
        rows, raw = [], {"max_abs_difference_unit": difference, "input_ids_equal": tokens_equal,
                         "peer_class": type(clip).__name__}
        for threads in args.threads:
            common.set_threads(threads)
            timings = common.compare(sides, repeats=args.repeats, warmup=args.warmup, min_seconds=0)
            raw[f"timing_threads_{threads}"] = timings
            rate = common.rates(timings, BATCH)
            peer_rate = rate["clip_image_processor_and_tokenizer"]
            rows.append(common.ratio_row("5", f"images+titles/s vs {type(clip).__name__}+tokenizer (exact decode)",
                                         threads, rate["commercemm"], peer_rate, 3.0, "img/s"))
            rows.append(common.ratio_row("5 info", "  fast_jpeg_decode=True (PIL draft) vs the same peer", threads,
                                         rate["commercemm_fast_jpeg"], peer_rate, None, "img/s"))
            rows.append(common.ratio_row(
                "5 info", "  JPEG decode alone (bound on the exact-decode speed-up)", threads,
                rate["jpeg_decode_only"], peer_rate, None, "img/s",
                note=f"decoding is {peer_rate / rate['jpeg_decode_only']:.0%} of the peer's time"))
            rows.append(common.ratio_row(
                "5 info", "  JPEG decode + PIL bicubic resize alone (same work as the peer)", threads,
                rate["jpeg_decode_and_resize"], peer_rate, None, "img/s",
                note=f"{peer_rate / rate['jpeg_decode_and_resize']:.0%} of the peer's time: the ratio's ceiling on "
                     "the exact path"))
        limit = 1 / 255
        rows.append(common.row("5", "max |pixel difference| in [0,1], same resize and decoding", "-",
                               difference["commercemm"], limit, difference["commercemm"] / limit, "<=1/255",
                               difference["commercemm"] <= limit,
                               note=f"input_ids equal to the peer tokenizer call: {tokens_equal}"))
        rows.append(common.row("5 info", "max |pixel difference| in [0,1], fast_jpeg_decode=True", "-",
                               difference["commercemm_fast_jpeg"], limit, difference["commercemm_fast_jpeg"] / limit))
    common.write_results(NAME, TITLE, rows, args, {"raw": raw})


if __name__ == "__main__":
    sys.exit(main())
