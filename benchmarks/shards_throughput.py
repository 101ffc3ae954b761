"""``biocap-core shards`` throughput and memory.

1. Images/s per core, default policy: TreeOfLife-style EOL sets (``image_set_NN.tar.gz`` of
   ``<uuid>.jpg``, 400-1200 px photo-like JPEGs) to shards, the whole build (plan, staging, shard
   writing, outputs) with ``--workers 1``, against the bare image work alone: the same images,
   already in memory, through decode + resize + encode in a plain loop (the builder's own
   ``ImagePolicy.apply``, draft mode included; ``--no-draft`` figures too). Goal: >= 0.85 for the
   marginal rate (builds of N and 2N images: the extra images over the extra CPU time).
2. The same for ``--keep-original`` (no decode: the JPEG bytes are copied).
3. Peak RSS of a worker process, and of the main process, for 200k- and 2M-row catalogs: one job
   of a ``--num-shards`` split, sized so each worker writes the same ~20k rows whatever the
   catalog (the builder's per-worker state is the memory-mapped plan, not the catalog).
4. The projection: hours for 10M images on 32 cores at the measured rate (BioCLIP's scripts: about
   6 hours with 32 processes).

Rates are images per CPU-second (user + system of the build and its workers, or of the loop), so
other load on a shared machine does not change them; wall-clock rates are printed beside them.

Run: ``uv run python benchmarks/shards_throughput.py`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

TEN_MILLION = 10_000_000
CORES = 32


def photo(rng: random.Random) -> bytes:
    """A photo-like JPEG (smooth shapes plus sensor noise), 400-1200 px on its long side."""
    import numpy as np
    from PIL import Image, ImageDraw

    long = rng.randrange(400, 1201)
    size = (long, long * rng.choice((3, 4)) // 4) if rng.random() < 0.7 else (long * 3 // 4, long)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        r = rng.randrange(20, max(21, size[0] // 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    pixels = np.asarray(image, dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 4, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype("uint8")).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def uuids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def row(uid: str, i: int) -> dict:
    s = i % 5000
    return {
        "split": "train",
        "treeoflife_id": uid,
        "eol_content_id": str(i),
        "eol_page_id": str(s),
        "kingdom": "Animalia",
        "phylum": f"Phylum{s % 7}",
        "class": f"Class{s % 31}",
        "order": f"Order{s % 101}",
        "family": f"Family{s % 997}",
        "genus": f"Genus{s}",
        "species": f"epithet{s}",
        "common": f"common {s}",
    }


def write_catalog(path: Path, ids: list[str]) -> None:
    import polars as pl
    from biocap_core.toy.download import CATALOG_COLUMNS

    rows = [row(u, i) for i, u in enumerate(ids)]
    pl.DataFrame(rows).with_columns(
        *(pl.lit("").alias(c) for c in CATALOG_COLUMNS if c not in rows[0])
    ).select(CATALOG_COLUMNS).write_csv(path)


def make_download(
    root: Path, images: int, distinct: int, sets: int
) -> tuple[list[str], list[bytes]]:
    """``sets`` EOL image sets holding ``images`` JPEGs (``distinct`` different ones, repeated)."""
    rng = random.Random(0)
    bases = [photo(rng) for _ in range(distinct)]
    ids = uuids(images, 1)
    blobs = [bases[i % distinct] for i in range(images)]
    (root / "eol").mkdir(parents=True)
    for s in range(sets):
        with tarfile.open(root / "eol" / f"image_set_{s + 1:02d}.tar.gz", "w:gz") as tar:
            for i in range(s, images, sets):
                info = tarfile.TarInfo(f"{ids[i]}.jpg")
                info.size = len(blobs[i])
                tar.addfile(info, io.BytesIO(blobs[i]))
    return ids, blobs


def bare(blobs: list[bytes], draft: bool, keep: bool) -> float:
    """Images per CPU-second of the policy alone, in this process."""
    from biocap_core.shard_builder import ImagePolicy

    policy = ImagePolicy(draft=draft, resize="keep" if keep else "squash")
    start = time.process_time()
    for blob in blobs:
        policy.apply(blob)
    return len(blobs) / (time.process_time() - start)


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def run_build(root: Path, catalog: Path, out: Path, *flags: str) -> dict:
    """One build in a fresh process: CPU seconds (it and its workers), wall seconds, and the peak
    RSS (VmHWM, polled from /proc: ``ru_maxrss`` of a spawned child carries its parent's memory
    across exec) of the main process and of its largest worker."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "biocap_core",
        "shards",
        "--catalog",
        str(catalog),
        "--eol",
        str(root / "eol"),
        "--out",
        str(out),
        "--no-progress",
        *flags,
    ]
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main_kb, workers = 0, {}
    while build.poll() is None:
        main_kb = max(main_kb, _hwm_kb(build.pid))
        for child in _children(build.pid):
            workers[child] = max(workers.get(child, 0), _hwm_kb(child))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    output = build.stdout.read()
    if build.returncode:
        raise SystemExit(output)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "main_rss_mb": main_kb / 1024,
        "worker_rss_mb": max(workers.values(), default=0) / 1024,
    }


def throughput(tmp: Path, images: int) -> dict:
    """Whole-build rates for ``images`` and ``2 * images`` images; the marginal rate (the second
    build's extra images over its extra CPU time) is the steady-state rate of a long build,
    without the fixed cost of starting processes and importing libraries (about 3 CPU-s)."""
    figures = {"images": [images, 2 * images]}
    runs = {}
    for n in (images, 2 * images):
        root = tmp / f"download{n}"
        ids, blobs = make_download(root, n, distinct=min(n, 300), sets=3)
        write_catalog(root / "catalog.csv", ids)
        for name, flags in (("default", []), ("keep_original", ["--keep-original"])):
            runs[name, n] = run_build(
                root, root / "catalog.csv", root / name, "--workers", "1", *flags
            )
    loop = bare(blobs, draft=True, keep=False)
    for name in ("default", "keep_original"):
        small, large = runs[name, images], runs[name, 2 * images]
        marginal = images / (large["cpu_s"] - small["cpu_s"])
        figures[name] = {
            "whole_run_img_per_cpu_s": 2 * images / large["cpu_s"],
            "whole_run_img_per_wall_s": 2 * images / large["wall_s"],
            "marginal_img_per_cpu_s": marginal,
            "hours_10m_on_32_cores": TEN_MILLION / (marginal * CORES) / 3600,
        }
    figures["default"]["bare_img_per_cpu_s"] = loop
    figures["default"]["ratio"] = figures["default"]["marginal_img_per_cpu_s"] / loop
    figures["default"]["bare_no_draft_img_per_cpu_s"] = bare(blobs, draft=False, keep=False)
    return figures


def memory(tmp: Path, rows: int, jobs: int) -> dict:
    """One job of ``jobs`` over a ``rows``-row catalog whose first 1,000 images are in one set."""
    root = tmp / f"mem{rows}"
    ids, _ = make_download(root, 1000, distinct=50, sets=1)
    catalog = root / "catalog.csv"
    write_catalog(catalog, ids + uuids(rows - len(ids), rows))
    build = run_build(
        root,
        catalog,
        root / "out",
        "--workers",
        "1",
        "--num-shards",
        str(jobs),
        "--shard-index",
        "0",
    )
    return {"rows": rows, "jobs": jobs, "rows_per_job": rows // jobs, **build}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="the smaller build's images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        figures = {
            "throughput": throughput(tmp / "speed", args.images),
            "memory": [memory(tmp, 200_000, 10), memory(tmp, 2_000_000, 100)],
        }
    figures["load_average"] = os.getloadavg()
    print(json.dumps(figures, indent=1))
    f = figures["throughput"]["default"]
    print(
        f"default policy: {f['marginal_img_per_cpu_s']:.1f} img/s per core (whole run of "
        f"{figures['throughput']['images'][1]}: {f['whole_run_img_per_cpu_s']:.1f}); bare loop "
        f"{f['bare_img_per_cpu_s']:.1f} (no draft: {f['bare_no_draft_img_per_cpu_s']:.1f}); "
        f"ratio {f['ratio']:.2f}; 10M on {CORES} cores: {f['hours_10m_on_32_cores']:.2f} h"
    )
    k = figures["throughput"]["keep_original"]
    print(
        f"--keep-original: {k['marginal_img_per_cpu_s']:.1f} img/s per core; 10M on {CORES} cores: "
        f"{k['hours_10m_on_32_cores']:.2f} h"
    )
    for m in figures["memory"]:
        print(
            f"{m['rows']:,} rows: worker peak RSS {m['worker_rss_mb']:.0f} MB, "
            f"main {m['main_rss_mb']:.0f} MB"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
