"""`ucoder generate --backend vllm` end to end, with vLLM's own worker process.

In this process the engine runs in-process (conftest); here the command runs as a user
runs it, so vLLM starts its engine core with spawn and the CLI's entry point must allow it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ucoder.models import EMBEDDED_MODEL

PROMPT = "What is the capital of France?"


def test_generate_command_with_vllm_backend_matches_engine(engine):
    env = dict(os.environ)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # vLLM's default: a spawned engine core
    cli = Path(sys.executable).with_name("ucoder")
    cmd = [str(cli), "generate", "--backend", "vllm", "--model", EMBEDDED_MODEL,
           "--dtype", "float32", "--prompt", PROMPT, "--temperature", "0",
           "--max-new-tokens", "8", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    expected = engine.sample([PROMPT], max_new_tokens=8, temperature=0)[0][0]
    assert rows[0]["text"] == expected.text
    assert rows[0]["finish_reason"] == expected.finish_reason
