"""conveyor in one minute: drop-in Pool, a crash that costs one task, lazy input, timeouts.

Run: python examples/quickstart.py
"""

import itertools
import os
import signal
import time

import conveyor


def square(x):
    return x * x


def fragile(x):
    if x == 13:  # a worker dies for real: SIGKILL, as the OOM killer would do it
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def endless():
    n = 0
    while True:
        yield n
        n += 1


def main():
    # 1. The stdlib API, unchanged: lambdas just work.
    with conveyor.Pool(2) as pool:
        print("map:", pool.map(lambda x: x + 1, range(8)))
        t0 = time.perf_counter()
        total = sum(pool.map(square, range(200_000)))
        rate = 200_000 / (time.perf_counter() - t0)
        print(f"200,000 tiny tasks: sum={total}, {rate / 1e6:.1f} M tasks/s")

    # 2. A worker is killed mid-run: only its task fails, the pool goes on.
    with conveyor.ProcessPoolExecutor(2) as ex:
        futures = [ex.submit(fragile, x) for x in range(20)]
        ok = [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        print(f"crash: {len(ok)} tasks succeeded, {len(failed)} failed with "
              f"{type(failed[0]).__name__} (exit code {failed[0].exitcode})")

    # 3. The modern API: retries re-run the crashed task, timeouts stop stuck ones.
    with conveyor.WorkerPool(2, timeout=1.0, retries=1) as pool:
        try:
            pool.map(time.sleep, [0.01, 5.0])
        except conveyor.TaskTimeoutError as exc:
            print("timeout:", exc)
        # 4. Lazy input: an endless generator, read only as far as needed.
        first = list(itertools.islice(pool.imap(square, endless()), 5))
        print("endless input, first five:", first)
        print("progress bar:")
        pool.map(square, range(100_000), progress=True)
        print(pool.stats())


if __name__ == "__main__":
    main()
