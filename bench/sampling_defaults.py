"""Which default sampling keeps a small model coherent: repetition of answers under candidate settings.

Small instruct models (SmolLM2 135M) and base models (Gemma 3 270M) fall into loops: the same phrase
over and over until max_tokens. This sends the same chat prompts to a running stack under each
candidate (temperature, repeat_penalty) and reports, per model and candidate, the share of answers
that loop (a 4-word phrase three times or more), distinct word trigrams over all trigrams (1.0: no
trigram repeats) and how many answers ended by themselves before max_tokens. Seeds are fixed, so a
rerun gives the same answers on the same build.

    python bench/sampling_defaults.py --url http://127.0.0.1:12434 --models ai/smollm2,ai/gemma3
"""

from __future__ import annotations

import argparse
import collections
import itertools

import httpx

PROMPTS = (
    "The capital of France is",
    "Write two sentences about the sea.",
    "What is 12 times 7?",
    "Give me three tips for learning to cook.",
    "Explain what a computer network is, briefly.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat to someone who has never seen one.",
    "List the planets of the solar system.",
)
CANDIDATES = ((0.8, 1.0), (0.8, 1.1), (0.8, 1.2), (0.2, 1.1))
SEEDS = (1,)


def loops(words: list[str]) -> bool:
    phrases = collections.Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    return any(count >= 3 for count in phrases.values())


def trigram_diversity(answers: list[list[str]]) -> float:
    grams = [tuple(w[i:i + 3]) for w in answers for i in range(len(w) - 2)]
    return len(set(grams)) / len(grams) if grams else 1.0


def run(url: str, model: str, temperature: float, repeat_penalty: float, max_tokens: int) -> dict:
    answers, ended = [], 0
    with httpx.Client(base_url=url, timeout=300) as http:
        for prompt, seed in itertools.product(PROMPTS, SEEDS):
            reply = http.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": temperature, "repeat_penalty": repeat_penalty, "seed": seed,
            })
            reply.raise_for_status()
            choice = reply.json()["choices"][0]
            answers.append(choice["message"]["content"].split())
            ended += choice["finish_reason"] == "stop"
    return {
        "loops": sum(loops(a) for a in answers) / len(answers),
        "diversity": trigram_diversity(answers),
        "ended": ended / len(answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:12434")
    parser.add_argument("--models", default="ai/smollm2,ai/gemma3")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    print("| model | temperature | repeat_penalty | answers that loop | distinct trigrams | ended by themselves |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for temperature, penalty in CANDIDATES:
            r = run(args.url, model, temperature, penalty, args.max_tokens)
            print(f"| {model} | {temperature} | {penalty} | {r['loops']:.0%} | {r['diversity']:.2f} | {r['ended']:.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
