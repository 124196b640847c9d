"""Time the generation of the synthetic demo catalog (default: 2,000 products with their views and posts).

Usage: python bench/bench_demo_catalog.py [--num-products 2000] [--image-size 96] [--num-proc 1 2]
Prints the wall time of `build_demo_catalog` for each worker count, the number of images drawn and the size of
the result, and the converter timings (to_image_text_rows / to_omni_rows).
"""

import argparse
import os
import time

from commercemm_hf.data.demo_catalog import build_demo_catalog, to_image_text_rows, to_omni_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-products", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"cpus available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}")
    catalog = None
    for num_proc in args.num_proc:
        start = time.perf_counter()
        catalog = build_demo_catalog(args.num_products, seed=args.seed, image_size=args.image_size,
                                     num_proc=num_proc)
        seconds = time.perf_counter() - start
        rows = sum(len(split) for split in catalog.values())
        images = sum(1 + len(views) + len(posts) for split in catalog.values()
                     for views, posts in zip(split["views"], split["posts"]))
        megabytes = sum(split.data.nbytes for split in catalog.values()) / 1e6
        print(f"build_demo_catalog({args.num_products}, image_size={args.image_size}, num_proc={num_proc}): "
              f"{seconds:.1f} s  ({rows} products, {images} images, {images / seconds:.0f} images/s, "
              f"{megabytes:.0f} MB)")
    start = time.perf_counter()
    image_text = to_image_text_rows(catalog, include_views=True)
    middle = time.perf_counter()
    omni = to_omni_rows(catalog)
    end = time.perf_counter()
    print(f"to_image_text_rows(include_views=True): {middle - start:.1f} s ({sum(map(len, image_text.values()))} rows)")
    print(f"to_omni_rows: {end - middle:.1f} s ({sum(map(len, omni.values()))} rows)")


if __name__ == "__main__":
    main()
