"""The timing protocol of `deno task bench`, PyTorch side: the same rule as lib/metrics/stable_timing.ts.

Warm up until the step time is stable (at least `min_warmup` steps; stable when the last `window` steps
agree within `tolerance`, (max - min) / min; at most `max_warmup` steps), then time `iters` steps.
No torch import here, so tests can check the rule against the TypeScript one with a fake step and clock.

    python3 tools/bench_protocol.py '{"durations": [...], "minWarmup": 3, ...}'
replays `durations` (seconds, one per step) on a fake clock and prints the result as JSON.
"""
import json
import statistics
import sys
import time


def is_stable(durations, window=3, tolerance=0.05):
    if len(durations) < window:
        return False
    last = durations[-window:]
    lo, hi = min(last), max(last)
    return (hi - lo) / lo <= tolerance if lo > 0 else hi == lo


def time_until_stable(step, min_warmup=3, max_warmup=None, window=3, tolerance=0.05, iters=10, clock=time.perf_counter):
    """Returns {"warmupSteps", "stable", "warmupS", "samplesS", "medianS", "minS", "maxS"} (seconds)."""
    if max_warmup is None:
        max_warmup = max(12, min_warmup)
    if min_warmup < 0 or max_warmup < min_warmup or window < 1 or iters < 1 or not tolerance >= 0:
        raise ValueError(f"time_until_stable: bad settings min_warmup={min_warmup} max_warmup={max_warmup} "
                         f"window={window} iters={iters} tolerance={tolerance}")

    def time_one():
        t0 = clock()
        step()
        return clock() - t0

    warm = []
    stable = False
    while len(warm) < max_warmup:
        if len(warm) >= min_warmup and is_stable(warm, window, tolerance):
            stable = True
            break
        warm.append(time_one())
    if not stable:
        stable = len(warm) >= min_warmup and is_stable(warm, window, tolerance)
    samples = [time_one() for _ in range(iters)]
    return {"warmupSteps": len(warm), "stable": stable, "warmupS": warm, "samplesS": samples,
            "medianS": statistics.median(samples), "minS": min(samples), "maxS": max(samples)}


def _replay(spec):
    durations = list(spec["durations"])
    state = {"t": 0.0, "i": 0}

    def step():
        state["t"] += durations[state["i"]]
        state["i"] += 1

    return time_until_stable(step, spec.get("minWarmup", 3), spec.get("maxWarmup"), spec.get("window", 3),
                             spec.get("tolerance", 0.05), spec.get("iters", 10), clock=lambda: state["t"])


if __name__ == "__main__":
    print(json.dumps(_replay(json.loads(sys.argv[1]))))
