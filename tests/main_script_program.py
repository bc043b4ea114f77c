# A user's program: every kind of main-script object, through every API.
# tests/test_main_script.py runs this text as a script file, with -c, on stdin and typed
# into an interactive interpreter; START_METHOD is replaced before it runs. The text
# keeps to what a REPL accepts: no blank line inside a block, one after each.
import dataclasses
import enum
import json
import multiprocessing
import typing
import conveyor
START_METHOD = "@START_METHOD@"
G = None
def init(v):
    global G
    G = v

def readg(_):
    return G

@dataclasses.dataclass
class Rec:
    x: int

def is_rec_1(r):
    return isinstance(r, Rec) and r == Rec(1)

@dataclasses.dataclass
class Result:
    v: int

def make_result(x):
    return Result(x)

class Point(typing.NamedTuple):
    x: int

class Color(enum.Enum):
    RED = 1
    BLUE = 2

def pick_color(x):
    return Color.RED if x == 1 else Color.BLUE

class Plain:
    def __init__(self, x):
        self.x = x

class ScriptError(Exception):
    pass

def fail(x):
    raise ScriptError(x)

def make_reader(_):
    return lambda: G

def run_cases(map_fn, submit_fn):
    out = {}
    out["global"] = map_fn(readg, range(3))
    out["identity"] = map_fn(is_rec_1, [Rec(1), Rec(2)])
    out["identity_lambda"] = map_fn(lambda r: r == Rec(1), [Rec(1), Rec(2)])
    results = map_fn(make_result, [1, 2])
    out["dataclass"] = [type(r) is Result and r.v for r in results]
    points = map_fn(Point, range(2))
    out["namedtuple"] = [type(p) is Point and p.x for p in points]
    colors = map_fn(pick_color, [1, 2])
    out["enum"] = [c is Color.RED for c in colors]
    plains = map_fn(Plain, [5])
    out["plain"] = [type(p) is Plain and p.x for p in plains]
    readers = map_fn(make_reader, [0])
    out["returned_lambda"] = [[reader() for reader in readers], G]
    try:
        submit_fn(fail, 7)
        out["exception"] = "no exception"
    except ScriptError as exc:
        out["exception"] = ["ScriptError", exc.args[0]]
    except Exception as exc:
        out["exception"] = [type(exc).__name__, str(exc)[:200]]
    return out

def through_pool(cls, **kw):
    with cls(2, initializer=init, initargs=(42,), **kw) as pool:
        return run_cases(pool.map, lambda f, x: pool.apply_async(f, (x,)).get(timeout=30))

def through_executor(cls, **kw):
    with cls(2, initializer=init, initargs=(42,), **kw) as ex:
        return run_cases(lambda f, xs: list(ex.map(f, xs)), lambda f, x: ex.submit(f, x).result(timeout=30))

def through_workerpool(backend):
    ctx = {"context": START_METHOD} if backend == "process" else {}
    with conveyor.WorkerPool(2, backend=backend, initializer=init, initargs=(42,), **ctx) as pool:
        return run_cases(pool.map, lambda f, x: pool.submit(f, x).result(timeout=30))

def through_conveyor_map():
    def map_fn(f, xs):
        return conveyor.map(f, xs, workers=2)
    out = run_cases(map_fn, lambda f, x: conveyor.submit(f, x).result(timeout=30))
    out["global"] = "(no initializer)"
    return out

def main():
    multiprocessing.set_start_method(START_METHOD)
    # Process pools first: a thread pool's initializer sets the parent's own G.
    report = {
        "Pool": through_pool(conveyor.Pool, context=START_METHOD),
        "ProcessPoolExecutor": through_executor(conveyor.ProcessPoolExecutor, mp_context=multiprocessing.get_context(START_METHOD)),
        "WorkerPool": through_workerpool("process"),
        "conveyor.map": through_conveyor_map(),
        "ThreadPool": through_pool(conveyor.ThreadPool),
        "ThreadPoolExecutor": through_executor(conveyor.ThreadPoolExecutor),
        "WorkerPool-thread": through_workerpool("thread"),
    }
    from conveyor.workers import shutdown_shared_pools
    shutdown_shared_pools()
    print("REPORT " + json.dumps(report), flush=True)

if __name__ == "__main__":
    main()

