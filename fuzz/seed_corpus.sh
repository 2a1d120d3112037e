#!/bin/sh
# Seed each fuzz target's corpus from the committed fixtures (run from fuzz/).
set -e
F=../tests/fixtures
mkdir -p corpus/safetensors corpus/shard_index corpus/config corpus/tokenizer corpus/spiece
find $F -name '*.safetensors' -size -200k -exec cp {} corpus/safetensors/ \; 2>/dev/null || true
n=0; for f in $(find $F -name '*.safetensors' -size -200k); do n=$((n+1)); cp "$f" corpus/safetensors/seed$n.safetensors; done
n=0; for f in $(find $F -name '*.index.json'); do n=$((n+1)); cp "$f" corpus/shard_index/seed$n.json; done
n=0; for f in $(find $F -name 'config.json' -o -name 'scheduler_config.json' -o -name 'generation_config.json'); do n=$((n+1)); cp "$f" corpus/config/seed$n.json; done
n=0; for f in $(find $F -name 'tokenizer.json' -size -2M -o -name 'vocab.json' -size -2M); do n=$((n+1)); cp "$f" corpus/tokenizer/seed$n.json; done
n=0; for f in $(find $F -name 'spiece.model'); do n=$((n+1)); cp "$f" corpus/spiece/seed$n.model; done
