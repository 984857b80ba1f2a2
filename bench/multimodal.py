"""The image benchmark: what an image costs on Gemma 3 270M and what the prefix cache saves.

Usage::

    .venv/bin/python bench/multimodal.py [--reps 3] [--image-size 224] [--merge 2]

Gemma 3 270M (its PyPI package) with a random Gemma 3-type projector written by
tests/support/projectors.py at ``--image-size`` (224: 16 × 16 patches pooled to 64
embeddings; a real Gemma 3 projector gives 256 at 896 pixels), loaded in-process without the
extra buffer types (the AMX trap). Per rep, interleaved: time to the first token of a text
prompt, of the same prompt with a new image (encode + decode of its embeddings), and of the
same image again (the slot's cache holds it). Printed as medians and as ratios from the same
run; the projector's output is noise, so only the timings mean anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--merge", type=int, default=2, help="patches pooled per side")
    args = parser.parse_args()

    from hoshikage_core.protocol import MEDIA_MARKER, GenerationRequest, stream
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    from tests.support.models import gemma_path
    from tests.support.projectors import build_gemma3_projector, image_media

    with tempfile.TemporaryDirectory() as tmp:
        projector = build_gemma3_projector(
            Path(tmp) / "mmproj-bench.gguf", image_size=args.image_size, merge=args.merge
        )
        model = LlamaCppModel.load(
            "gemma",
            str(gemma_path()),
            LlamaOptions(
                n_ctx=2048,
                parallel=2,
                extra_buffers=False,
                n_batch=1024,
                n_ubatch=1024,
                mmproj=str(projector),
            ),
        )
        try:

            def ttft(media, text: str) -> tuple[float, int, int]:
                marker = MEDIA_MARKER if media else ""
                request = GenerationRequest(
                    prompt=f"{text} {marker} The picture shows",
                    media=tuple(media),
                    max_tokens=1,
                    temperature=0,
                )
                started = time.perf_counter()
                last = [c for _, c in stream(model, request)][-1]
                return time.perf_counter() - started, last.prompt_tokens, last.cached_tokens

            rows: dict[str, list[float]] = {"text": [], "new image": [], "same image": []}
            tokens = {}
            for rep in range(args.reps):
                image = image_media((rep * 40 % 256, 90, 200), size=64)
                for label, media, text in (
                    ("text", [], f"Rep {rep}: describe it."),
                    ("new image", [image], f"Rep {rep}: describe it."),
                    ("same image", [image], f"Rep {rep}: describe it."),
                ):
                    seconds, prompt, cached = ttft(media, text)
                    rows[label].append(seconds)
                    tokens[label] = (prompt, cached)
        finally:
            model.close()

    base = statistics.median(rows["text"])
    print(f"Gemma 3 270M, Gemma 3-type projector at {args.image_size} px, {args.reps} reps")
    for label, values in rows.items():
        median = statistics.median(values)
        prompt, cached = tokens[label]
        print(
            f"  {label:<11} TTFT {median * 1000:7.1f} ms  ({median / base:5.2f}× text)"
            f"  prompt {prompt} tokens, {cached} from cache"
        )
    saved = statistics.median(rows["new image"]) / statistics.median(rows["same image"])
    print(f"  the same image again is {saved:.1f}× faster to the first token")


if __name__ == "__main__":
    main()
