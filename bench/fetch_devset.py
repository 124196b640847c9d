#!/usr/bin/env python
"""Fetch and convert a small REAL development catalog from Debian packages: emoji as products.

Nothing here is committed: the packages are downloaded with `apt-get download` and unpacked with `dpkg-deb -x`
into a cache folder (default `~/.cache/commercemm-devset`), and the rows written there. Sources (licences as their
Debian copyright files state them):

* `ruby-tanuki-emoji` (images: Noto Emoji PNGs, Apache-2.0): the product photo;
* `ruby-gemojione` (EmojiOne 3 PNGs, CC-BY-SA-4.0): the "other view" of each product, drawn by other artists;
* `unicode-data` (emoji-test.txt, Unicode licence): the category (emoji group, 9) and subcategory (subgroup, ~90);
* `unicode-cldr-core` (CLDR annotations, Unicode licence): the product title (the English short name) and the
  search query (the English keywords that are not title words), plus the names in de / fr / es / ja as queries
  in other languages.

A product is one fully-qualified emoji with both images (skin-tone variants are dropped: they are one product in
five colours with one name). Products are split by a seeded hash of their code points into train / validation /
test (60 / 20 / 20), the same on every machine. Written per split into `<cache>/emoji/`:

* `products_<split>.jsonl`: `sku`, `image`, `text`, `category`, `subcategory`, `search`, `other_view`,
  `query_de` / `query_fr` / `query_es` / `query_ja` (image paths relative to the file): what
  `examples/run_categorization.py --label_column category` and `examples/run_retrieval.py --query_column search`
  (or `--query_image_column other_view`) read;
* `pairs_<split>.jsonl` (`image`, `text`, `product_id`) and `omni_<split>.jsonl` (Omni rows: a query row and a view
  row per product) for `commercemm pretrain --train-file ... --omni-file ...`.

    python bench/fetch_devset.py                       # prints the folder and the row counts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


PACKAGES = ("ruby-tanuki-emoji", "ruby-gemojione", "unicode-data", "unicode-cldr-core")
LANGUAGES = ("de", "fr", "es", "ja")
SPLIT_PERCENT = {"train": 60, "validation": 20, "test": 20}
SKIN_TONES = {f"1F3F{c}" for c in "BCDEF"}
IMAGE_SIZE = 72  # the Noto PNGs' size; the models resize to their own
DEFAULT_CACHE = Path(os.environ.get("COMMERCEMM_DEVSET_CACHE", Path.home() / ".cache" / "commercemm-devset"))


def fetch_packages(cache: Path) -> Path:
    """Download and unpack the Debian packages (once); return the unpacked root."""
    debs, root = cache / "debs", cache / "unpacked"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not (root / p).is_dir()]
    if missing:
        have = {f.name.split("_")[0] for f in debs.glob("*.deb")}
        wanted = [p for p in missing if p not in have]
        if wanted:
            result = subprocess.run(["apt-get", "download", *wanted], cwd=debs, capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"apt-get download {' '.join(wanted)} failed (run `apt-get update` first?):\n"
                                 f"{result.stderr}")
        for package in missing:
            deb = next(debs.glob(f"{package}_*.deb"))
            partial = root / f"{package}.partial"  # renamed when complete: a stopped unpack is redone
            partial.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
            partial.rename(root / package)
    return root


def read_emoji_test(path: Path) -> list[dict]:
    """Fully-qualified emoji with group and subgroup, in CLDR order."""
    rows, group, subgroup = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            codes, rest = line.split(";", 1)
            if rest.split("#")[0].strip() != "fully-qualified":
                continue
            codes = codes.split()
            if group == "Component" or SKIN_TONES & set(codes):
                continue
            rows.append({"codes": codes, "char": "".join(chr(int(c, 16)) for c in codes), "category": group,
                         "subcategory": subgroup})
    return rows


def read_annotations(cldr: Path, language: str) -> tuple[dict, dict]:
    """`(names, keywords)` of a CLDR language by character (annotations and annotationsDerived)."""
    names, keywords = {}, {}
    for folder in ("annotations", "annotationsDerived"):
        path = cldr / folder / f"{language}.xml"
        if not path.is_file():
            continue
        for node in ET.parse(path).getroot().iter("annotation"):
            key = node.get("cp", "").replace("\ufe0f", "")
            text = (node.text or "").strip()
            if not text or text == "↑↑↑":  # CLDR's "inherit" marker
                continue
            (names if node.get("type") == "tts" else keywords)[key] = text
    return names, keywords


def _noto_name(codes: list[str]) -> str:
    codes = [c for c in codes if c != "FE0F"]
    if len(codes) == 2 and all(0x1F1E6 <= int(c, 16) <= 0x1F1FF for c in codes):  # a flag: its region code
        return "".join(chr(ord("A") + int(c, 16) - 0x1F1E6) for c in codes) + ".png"
    return "emoji_u" + "_".join(c.lower() for c in codes) + ".png"


def _emojione_names(codes: list[str]) -> list[str]:
    return ["-".join(codes) + ".png", "-".join(c for c in codes if c != "FE0F") + ".png"]


def split_of(sku: str, seed: int = 0) -> str:
    """The split of a product: a seeded hash of its id, 60 / 20 / 20."""
    bucket = int.from_bytes(hashlib.blake2b(f"{seed}:{sku}".encode(), digest_size=8).digest(), "big") % 100
    return "train" if bucket < 60 else "validation" if bucket < 80 else "test"


def _save_image(source: Path, target: Path) -> None:
    from PIL import Image

    if target.is_file():
        return
    with Image.open(source) as image:
        # transparent PNGs on white: converting RGBA straight to RGB would put them on black
        image = image.convert("RGBA").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", image.size, "white")
        canvas.paste(image, mask=image.getchannel("A"))
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        canvas.save(temporary, format="PNG")
        os.replace(temporary, target)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def build(cache: Path = DEFAULT_CACHE, seed: int = 0) -> Path:
    """Fetch, convert and write the catalog; return its folder."""
    root = fetch_packages(cache)
    noto = next((root / "ruby-tanuki-emoji").rglob("tanuki_emoji/emoji_u1f600.png")).parent
    emojione = next((root / "ruby-gemojione").rglob("assets/png/1F600.png")).parent
    cldr = root / "unicode-cldr-core" / "usr/share/unicode/cldr/common"
    emoji = read_emoji_test(root / "unicode-data" / "usr/share/unicode/emoji/emoji-test.txt")
    names, keywords = read_annotations(cldr, "en")
    other = {language: read_annotations(cldr, language)[0] for language in LANGUAGES}
    out = cache / "emoji"
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = {split: [] for split in SPLIT_PERCENT}
    for item in emoji:
        key = item["char"].replace("\ufe0f", "")
        photo = noto / _noto_name(item["codes"])
        view = next((emojione / n for n in _emojione_names(item["codes"]) if (emojione / n).is_file()), None)
        if key not in names or not photo.is_file() or view is None:
            continue
        sku = "-".join(c for c in item["codes"] if c != "FE0F")
        _save_image(photo, out / "images" / f"{sku}.png")
        _save_image(view, out / "images" / f"{sku}_view.png")
        title = names[key]
        # the query: the keywords a shopper might type that the title does not already say
        extra = [k.strip() for k in keywords.get(key, "").split("|") if k.strip() and not _words(k) <= _words(title)]
        row = {"sku": sku, "image": f"images/{sku}.png", "text": title, "category": item["category"],
               "subcategory": item["subcategory"], "search": " ".join(extra) or title,
               "other_view": f"images/{sku}_view.png"}
        row.update({f"query_{language}": other[language].get(key, "") for language in LANGUAGES})
        rows[split_of(sku, seed)].append(row)
    for split, split_rows in rows.items():
        _write(out / f"products_{split}.jsonl", split_rows)
        _write(out / f"pairs_{split}.jsonl", [{"image": r["image"], "text": r["text"], "product_id": r["sku"]}
                                              for r in split_rows])
        omni = []
        for r in split_rows:
            product = {"product_id": r["sku"], "image": r["image"], "text": r["text"]}
            omni.append({"source_type": "query", "source_text": r["search"], "source_image": None, **product})
            omni.append({"source_type": "view", "source_text": None, "source_image": r["other_view"], **product})
        _write(out / f"omni_{split}.jsonl", omni)
    return out


def _write(path: Path, rows: list[dict]) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")  # two builds at once write their own files
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)  # atomic: a stopped run leaves no half file


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build(args.cache, args.seed)
    counts = {split: sum(1 for _ in open(out / f"products_{split}.jsonl")) for split in SPLIT_PERCENT}
    print(f"{out}: products {counts}")


if __name__ == "__main__":
    sys.exit(main())
