"""Shared test utilities: corpora and settings, tiny configs and datasets, random images, and running code in a fresh
process where `commercemm_hf` cannot be imported. (Fixtures live in conftest.py.)"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image
from safetensors import safe_open

from commercemm_hf import CommerceMMConfig, CommerceMMModel
from commercemm_hf.pipelines.pipeline_commercemm_shards import shard_numbers


# the corpus of the suite's shared tokenizer (conftest.py's `tokenizer`)
CORPUS = [
    "red ceramic mug with blue stripes", "green leather backpack", "dotted cotton t-shirt acme",
    "taza roja de cerámica", "grüner Rucksack aus Leder", "lampe bleue en verre", "steel desk lamp zenith",
    "wooden vase with zigzag pattern", "running shoe mesh orbit", "wireless headphones black nova",
] * 8

# texts in many scripts, for training tokenizers on (conftest.py's `multilingual_tokenizer`)
MULTILINGUAL = [
    "red ceramic coffee mug", "Taza de cerámica roja", "Roter Keramikbecher für Kaffee", "tasse à café en céramique",
    "红色陶瓷咖啡杯", "赤いセラミックのマグカップ", "빨간 세라믹 머그컵", "Красная керамическая кружка",
    "كوب قهوة أحمر", "mug 😀 with 🎁 emoji", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "ÉCHARPE ÉLÉGANTE en laine",
] * 6

# product texts of the saved folders that test_hub_loading.py and test_pipelines.py load in fresh processes
HUB_LOADING_TEXTS = ["red ceramic mug", "green leather backpack", "lampe bleue"]
PIPELINE_TEXTS = ["red ceramic mug", "green leather backpack", "lampe bleue", "striped wall clock", "oak desk"]

# the shapes and colours `tiny_datasets` draws, in its order
TINY_SHAPES = ["mug", "lamp", "vase"]
TINY_COLOURS = ["red", "green", "blue", "yellow"]

# the dimension of the product index tests' clustered vectors
CLUSTERED_DIM = 32

# the demo catalog test_evaluate.py evaluates on: 8 held-out products per split
EVALUATE_DEMO_PRODUCTS = 80

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# small image-processor settings: images resized and cropped to CROP x CROP
CROP = 24
SMALL = dict(size={"shortest_edge": CROP}, crop_size={"height": CROP, "width": CROP})
TINY_STACK = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2)


def random_image(seed: int, size=(48, 40), mode="RGB"):
    """A noise picture of `size` (width, height) in PIL mode `mode`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def tiny_config(vocab_size: int = 300, **overrides) -> CommerceMMConfig:
    """A CommerceMM config small enough that a forward takes milliseconds."""
    values = dict(
        text_config=dict(
            TINY_STACK, vocab_size=vocab_size, max_position_embeddings=40, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        vision_config=dict(TINY_STACK, image_size=32, patch_size=8),
        multimodal_config=dict(TINY_STACK),
        projection_dim=16,
        text_depth_choices=[1, 2],
        image_depth_choices=[1, 2],
        multimodal_depth_choices=[1, 2],
        mim_num_prototypes=16,
    )
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return CommerceMMConfig(**values)


# Put first in a fresh interpreter: any attempt to import the package fails, so what loads there is the remote code.
_BLOCK_PACKAGE = '''
import sys
class _BlockCommerceMM:
    def find_spec(self, name, path=None, target=None):
        if name == "commercemm_hf" or name.startswith("commercemm_hf."):
            raise ImportError("commercemm_hf is blocked in this process")
        return None
sys.meta_path.insert(0, _BlockCommerceMM())
try:
    import commercemm_hf  # noqa: F401
    raise SystemExit("commercemm_hf was importable")
except ImportError:
    pass
'''


def run_without_package(script: str, workdir: Path, env: dict | None = None, timeout: int = 300) -> dict:
    """Run `script` in a fresh Python process (cwd=`workdir`, commercemm_hf not importable) and return the JSON
    object it prints on its last line."""
    full_env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    full_env["HF_MODULES_CACHE"] = str(workdir / "hf_modules")
    full_env["HF_HUB_OFFLINE"] = "1"
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + textwrap.dedent(script)],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"fresh process failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def save_tiny_hub_folder(processor, folder):
    """A tiny `CommerceMMModel` (seed 0, eval mode, the processor's vocabulary) saved with `processor` as a Hub folder;
    returns the folder."""
    import torch

    from commercemm_hf.hub import save_hub_folder

    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    return save_hub_folder(model, processor, folder)


def tiny_datasets(num_products: int = 12, seed: int = 0):
    """Small image-text and Omni `datasets.Dataset`s of coloured shapes (for trainer tests)."""
    import numpy as np
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
    shapes = ["mug", "lamp", "vase"]
    image_text, omni = [], []
    for index in range(num_products):
        colour = list(colours)[index % len(colours)]
        shape = shapes[(index // len(colours)) % len(shapes)]

        def draw(offset: int) -> Image.Image:
            image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(150, 255, 3)))
            painter = ImageDraw.Draw(image)
            box = (6 + offset, 6, 30 + offset, 34)
            (painter.ellipse if shape == "mug" else painter.rectangle)(box, fill=colours[colour])
            return image

        product = {"image": draw(0), "text": f"{colour} ceramic {shape}", "product_id": f"p{index}"}
        image_text.append(dict(product))
        omni.append({**product, "source_type": "query", "source_text": f"{colour} {shape}", "source_image": None})
        omni.append({**product, "source_type": "view", "source_text": None, "source_image": draw(4)})
        omni.append({**product, "source_type": "post", "source_text": f"my new {shape} #{colour}",
                     "source_image": draw(2)})
    image_text_features = Features({"image": ImageFeature(), "text": Value("string"), "product_id": Value("string")})
    omni_features = Features({
        "image": ImageFeature(), "text": Value("string"), "product_id": Value("string"), "source_type": Value("string"),
        "source_text": Value("string"), "source_image": ImageFeature(),
    })
    return Dataset.from_list(image_text, features=image_text_features), Dataset.from_list(omni, features=omni_features)


def write_jsonl(dataset, folder, image_columns):
    """Rows as JSON Lines with the images as PNG files beside them (paths relative to the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.jsonl"
    with path.open("w") as handle:
        for index, row in enumerate(dataset):
            row = dict(row)
            for column in image_columns:
                if row[column] is not None:
                    name = f"images/{column}_{index}.png"
                    (folder / "images").mkdir(exist_ok=True)
                    row[column].save(folder / name)
                    row[column] = name
            handle.write(json.dumps(row) + "\n")
    return path


def check_publishable_and_loadable(folders, workdir: Path, env: dict | None = None) -> dict:
    """Every folder passes `commercemm publish`'s plan (no network), and in a fresh process without the package each
    Auto class its `config.json` `auto_map` names loads it. Returns {folder: {Auto class: loaded class}}."""
    from commercemm_hf.publish import plan_upload

    for folder in folders:
        plan_upload(folder)
    loaded = run_without_package(f"""
        import json
        from pathlib import Path
        import transformers
        loaded = {{}}
        for folder in {[str(folder) for folder in folders]!r}:
            auto_map = json.loads((Path(folder) / "config.json").read_text())["auto_map"]
            loaded[folder] = {{name: type(getattr(transformers, name).from_pretrained(folder, trust_remote_code=True)
                                      ).__name__ for name in auto_map}}
        print(json.dumps(loaded))
    """, workdir, env=env)
    for folder in folders:
        assert set(loaded[str(folder)]) == set(json.loads((Path(folder) / "config.json").read_text())["auto_map"])
    return loaded


# ----------------------------------------------------------------- the example scripts' runs (test_examples.py)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PRODUCTS = 30  # the demo catalog splits it 24 / 3 / 3 products
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220)}
SHAPES = ("mug", "lamp")
DIRECTIONS = ("image_to_product", "product_to_product", "image_to_text", "text_to_image")


def fast(output_dir, max_steps: int = 2, *extra) -> list[str]:
    """A short run of an example script on `EXAMPLE_PRODUCTS` demo products: its arguments."""
    return ["--output_dir", str(output_dir), "--demo_num_products", str(EXAMPLE_PRODUCTS), "--max_steps",
            str(max_steps), "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32",
            "--logging_steps", "1", "--vocab_size", "500", "--disable_tqdm", "true", *map(str, extra)]


def run(command: list, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    return result


def run_script(script: str, argv: list, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, EXAMPLES / script, *argv], env)


def run_many(runs: list[tuple[str, list]], env: dict) -> str:
    """Several runs of the scripts' `main(argv)` in one subprocess (saves the start-up time of each); a `"copy"`
    entry copies folder `argv[0]` to `argv[1]`. Returns the output."""
    code = textwrap.dedent(f"""
        import runpy, shutil
        for script, argv in {[(str(EXAMPLES / script), [str(a) for a in argv]) for script, argv in runs]!r}:
            if script.endswith("copy"):
                shutil.copytree(*argv)
            else:
                runpy.run_path(script, run_name="example")["main"](argv)
    """)
    result = run([sys.executable, "-c", code], env)
    return result.stdout + result.stderr


def write_user_files(folder: Path) -> None:
    """train.jsonl / validation.jsonl with image paths relative to the files, and one row whose image is missing."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for index in range(18):
        colour, shape = list(COLOURS)[index % 3], SHAPES[(index // 3) % 2]
        for view, offset in (("front", 0), ("side", 6)):
            image = Image.new("RGB", (48, 40), (240, 240, 235))
            box = (8 + offset, 6, 36 + offset, 34)
            image.paste(COLOURS[colour], box)
            if shape == "lamp":
                image.paste((250, 230, 60), (box[0], box[1], box[2], box[1] + 8))
            image.save(folder / "images" / f"p{index}_{view}.png")
        rows.append({"sku": f"p{index}", "title": f"{colour} ceramic {shape} no. {index}", "category": shape,
                     "tags": [colour, shape], "photo": f"images/p{index}_front.png",
                     "search": f"{colour} {shape}", "other_view": f"images/p{index}_side.png"})
    bad = dict(rows[0], sku="broken", photo="images/missing.png", other_view="images/missing.png")
    train = rows[:14] + [bad]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for row in train) + "\n")
    (folder / "validation.jsonl").write_text("\n".join(json.dumps(row) for row in rows[14:]) + "\n")


# ----------------------------------------------------------------- distributed runs (test_distributed.py)

DDP_SCRIPT = Path(__file__).parent / "scripts" / "ddp_pretraining.py"
ENGINE_SCRIPT = Path(__file__).parent / "scripts" / "engine_pretraining.py"


# ----------------------------------------------------------------- `commercemm embed` (test_embedding_job.py)

EMBED_PRODUCTS, EMBED_SHARD_SIZE = 24, 2
EMBED_CATEGORIES = ("mugs", "lamps", "bags")


def embed_command(work, output, *launcher):
    return [*(launcher or (sys.executable, "-m")), "commercemm_hf", "embed", str(work / "model"),
            "--products", str(work / "products"), "--output-dir", str(output), "--kinds", "multimodal,text,image",
            "--product-id-column", "product_id", "--metadata-columns", "category",
            "--shard-size", str(EMBED_SHARD_SIZE), "--batch-size", "2"]


def shard_contents(folder):
    contents = {}
    for number in shard_numbers(folder):
        with safe_open(str(folder / f"shard-{number:06d}.safetensors"), framework="np") as handle:
            contents[number] = ({name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata())
    return contents
