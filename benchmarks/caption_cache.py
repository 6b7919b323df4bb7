"""What keeping the captions' embeddings (models.text.embed_texts) saves a process that needs them.

Training, the drift-quality reference and batch scoring embed the captions of their rows with the frozen MiniLM text
encoder. A new process that finds them in flywheel's cache folder reads them from one SQLite file instead of
importing sentence-transformers, loading the encoder and running it. This times that as whole processes, in pairs:
each pair starts a process on an empty cache folder (it encodes every distinct caption and keeps them: the baseline,
what every process paid before) and then one on the folder the first filled (flywheel now). Both import torch first,
as every process that embeds captions (to train or score a model) does. Per process: CPU seconds (user + system,
from the parent's view of its reaped child) and wall seconds; per pair, the ratio baseline / kept. The embeddings
the two processes return are compared bit for bit. The captions are a manifest's `caption` field (default: the
digits example's golden batch), repeated up to --rows. The machine's load average is recorded before and after.

Usage: python benchmarks/caption_cache.py [--manifest FILE] [--rows 2000] [--pairs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from features.env import apply_process_environment
apply_process_environment()
import numpy as np
import torch  # a process that embeds captions trains or scores a model: torch is imported either way
from models.text import embed_texts
embeddings = embed_texts(json.loads(open(sys.argv[1]).read()))
np.save(sys.argv[2], embeddings)
print(json.dumps({"sentence_transformers_imported": "sentence_transformers" in sys.modules}))
"""


def read_captions(manifest: Path, rows: int) -> list[str]:
    captions = []
    with manifest.open() as handle:
        for line in handle:
            if line.strip():
                caption = json.loads(line).get("caption")
                if isinstance(caption, str) and caption:
                    captions.append(caption)
    if not captions:
        raise SystemExit(f"{manifest} has no row with a caption")
    return [captions[i % len(captions)] for i in range(rows)]


def timed_process(captions_file: Path, out: Path, cache: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(captions_file), str(out)], cwd=PROJECT,
                          env={**os.environ, "FLYWHEEL_CACHE_DIR": str(cache), "PYTHONPATH": str(PROJECT)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the embedding process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    imported = json.loads(done.stdout.strip().splitlines()[-1])["sentence_transformers_imported"]
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "encoder_imported": imported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path,
                        default=PROJECT / "examples" / "digits" / "data" / "golden" / "manifest.jsonl")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "caption_cache.json")
    args = parser.parse_args()
    if args.pairs < 1 or args.rows < 1:
        parser.error("--pairs and --rows must be at least 1")
    if not args.manifest.is_file():
        parser.error(f"{args.manifest} not found (the golden batch: make golden)")
    import numpy as np

    captions = read_captions(args.manifest, args.rows)
    load_before = os.getloadavg()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as root:
        captions_file = Path(root) / "captions.json"
        captions_file.write_text(json.dumps(captions))
        for pair in range(args.pairs):
            cache = Path(root) / f"cache-{pair}"
            encoded = timed_process(captions_file, Path(root) / "encoded.npy", cache)
            kept = timed_process(captions_file, Path(root) / "kept.npy", cache)
            same = bool(np.array_equal(np.load(Path(root) / "encoded.npy"), np.load(Path(root) / "kept.npy")))
            pairs.append({"empty_cache": encoded, "kept": kept, "same_embeddings": same,
                          "cpu_ratio": round(encoded["cpu_s"] / kept["cpu_s"], 2),
                          "wall_ratio": round(encoded["wall_s"] / kept["wall_s"], 2)})
            print(f"pair {pair + 1}/{args.pairs}: empty cache {encoded['cpu_s']:.2f} CPU-s "
                  f"({encoded['wall_s']:.2f} s), kept {kept['cpu_s']:.2f} CPU-s ({kept['wall_s']:.2f} s, encoder "
                  f"imported: {kept['encoder_imported']}), x{pairs[-1]['cpu_ratio']:.2f} CPU, same embeddings: {same}",
                  flush=True)
    result = {
        "captions": len(captions), "distinct": len(set(captions)), "manifest": str(args.manifest),
        "pairs": pairs,
        "median_cpu_ratio": statistics.median(p["cpu_ratio"] for p in pairs),
        "median_wall_ratio": statistics.median(p["wall_ratio"] for p in pairs),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_before": load_before[0],
                    "load_avg_1m_after": os.getloadavg()[0]},
    }
    print(f"{result['captions']} captions ({result['distinct']} distinct): a process with them kept took "
          f"1/{result['median_cpu_ratio']:.2f} of the CPU (1/{result['median_wall_ratio']:.2f} of the wall time) "
          "of one that encoded them")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
