"""A CPython workload for allocator comparisons: JSON round trips, dict and set churn, string
building and slicing. Run with PYTHONMALLOC=malloc so every object goes through malloc.

usage: python3 cpython_workload.py [rounds]   (default 40); prints a digest, times nothing
"""
import json
import sys

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
digest = 0
seed = 12345


def rand(n):
    global seed
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n


for r in range(rounds):
    records = [
        {
            "id": i,
            "name": f"user-{rand(100000)}",
            "tags": [f"t{rand(50)}" for _ in range(rand(6))],
            "score": rand(1000) / 7,
            "nested": {"a": [rand(10) for _ in range(5)], "b": str(i) * (1 + rand(4))},
        }
        for i in range(4000)
    ]
    text = json.dumps(records)
    back = json.loads(text)
    index = {}
    for rec in back:
        for tag in rec["tags"]:
            index.setdefault(tag, set()).add(rec["id"])
    words = " ".join(rec["name"] for rec in back).split()
    counts = {}
    for w in words:
        counts[w[:7]] = counts.get(w[:7], 0) + 1
    pieces = []
    for w in sorted(counts)[:2000]:
        pieces.append(w.upper() + ":" + str(counts[w]))
    joined = "|".join(pieces)
    for key in list(index)[::2]:
        del index[key]
    digest = (digest * 31 + len(text) + len(joined) + sum(len(v) for v in index.values())) % (1 << 61)

print("cpython_workload", rounds, digest)
