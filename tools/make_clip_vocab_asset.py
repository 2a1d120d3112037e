#!/usr/bin/env python3
"""Extract OpenAI CLIP's BPE merges from the open_clip_torch wheel into a prism asset.

Usage:
    pip download --no-deps -d /tmp/pd open_clip_torch==3.3.0
    python3 tools/make_clip_vocab_asset.py /tmp/pd/open_clip_torch-3.3.0-py3-none-any.whl

Writes crates/prism-models/assets/clip_bpe_merges.txt: the header line "#version: 0.2" followed
by the 48894 merges CLIP's SimpleTokenizer uses (lines[1 : 49152 - 256 - 2 + 1] of
open_clip/bpe_simple_vocab_16e6.txt.gz). The vocabulary itself is rebuilt in Rust
(crates/prism-models/src/text/tokenizer.rs) from the byte table + these merges, so no vocab.json is stored.

Standard library only.
"""

import argparse
import gzip
import hashlib
import os
import sys
import zipfile

MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48894, as in CLIP's SimpleTokenizer

def main() -> int:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", nargs="?", default="/tmp/pd/open_clip_torch-3.3.0-py3-none-any.whl",
                    help="path to the open_clip_torch wheel (default: %(default)s)")
    ap.add_argument("--out", default=os.path.join(repo, "crates", "prism-models", "assets", "clip_bpe_merges.txt"),
                    help="output file (default: %(default)s)")
    args = ap.parse_args()

    try:
        with zipfile.ZipFile(args.wheel) as whl:
            raw = whl.read(MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        print(f"error: cannot read {MEMBER} from {args.wheel}: {e}", file=sys.stderr)
        return 1

    text = gzip.decompress(raw).decode("utf-8")
    lines = text.split("\n")
    # Line 0 is the header ('"bpe_simple_vocab_16e6.txt#version: 0.2'); SimpleTokenizer skips it.
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES:
        print(f"error: expected {NUM_MERGES} merges, found {len(merges)}", file=sys.stderr)
        return 1
    for i, m in enumerate(merges, start=2):
        if len(m.split(" ")) != 2:
            print(f"error: line {i} is not a merge 'a b': {m!r}", file=sys.stderr)
            return 1

    out = "#version: 0.2\n" + "\n".join(merges) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(out)
    digest = hashlib.sha256(out.encode("utf-8")).hexdigest()
    print(f"wrote {args.out}: {len(merges)} merges, sha256 {digest}")
    print(f"source {MEMBER} sha256 {hashlib.sha256(raw).hexdigest()}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
